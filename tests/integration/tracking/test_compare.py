"""CompareRuns against a brute-force Python reference: random filters (three-valued logic for missing
values), sort keys (missing last, ties by run id) and page sizes, over runs with gaps in their metrics
and parameters; plus bad filters and page tokens."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from clients.sdk.tracking import TrackingClient
from control_plane.tracking.compare import MAX_COLUMNS, MAX_JOINED_FIELDS
from control_plane.tracking.filters import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    And,
    Compare,
    Expr,
    Field,
    Not,
    Or,
    SortKey,
    render,
)

METRICS = ("loss", "acc", "val/f1")
PARAMS = ("lr", "opt")
PARAM_VALUES = ("0.01", "0.1", "1e-3", "adam", "sgd", "")
NUMBERS = (-1.0, 0.0, 0.25, 0.5, 1.0, 2.5)


@dataclass
class RunData:
    run_id: str
    metrics: dict[str, list[float]]  # key -> values by step 0..n-1
    params: dict[str, str]

    def value(self, field: Field) -> float | str | None:
        if field.kind == "metric":
            values = self.metrics.get(field.key)
            if not values:
                return None
            return {"latest": values[-1], "min": min(values), "max": max(values)}[field.aggregate]
        return self.params.get(field.key)


def _populate(client: TrackingClient, seed: int = 7) -> tuple[str, list[RunData]]:
    rng = random.Random(seed)
    experiment = client.create_experiment("compare")
    runs, batches = [], []
    for index in range(40):
        params = {key: rng.choice(PARAM_VALUES) for key in PARAMS if rng.random() < 0.8}
        run = client.create_run(experiment.experiment_id, f"run{index}", params=params)
        metrics = {
            key: [rng.choice(NUMBERS) for _ in range(rng.randint(1, 4))]
            for key in METRICS
            if rng.random() < 0.75
        }
        series = [pb.MetricSeries(key=k, values=v, steps=range(len(v))) for k, v in metrics.items()]
        batches.append(pb.RunBatch(run_id=run.run_id, metrics=series))
        runs.append(RunData(run.run_id, metrics, params))
    client.log_batch(pb.LogBatchRequest(runs=batches))
    return experiment.experiment_id, runs


# The reference ---------------------------------------------------------------------------------------


def _compare(value: float | str | None, op: str, literal: float | str) -> bool | None:
    if value is None:
        return None
    return {
        "=": value == literal,
        "!=": value != literal,
        "<": value < literal,  # type: ignore[operator]
        "<=": value <= literal,  # type: ignore[operator]
        ">": value > literal,  # type: ignore[operator]
        ">=": value >= literal,  # type: ignore[operator]
    }[op]


def evaluate(expression: Expr, run: RunData) -> bool | None:
    """Kleene three-valued logic, as SQL evaluates the filter."""
    if isinstance(expression, Compare):
        return _compare(run.value(expression.field), expression.op, expression.value)
    if isinstance(expression, Not):
        inner = evaluate(expression.item, run)
        return None if inner is None else not inner
    results = [evaluate(item, run) for item in expression.items]
    if isinstance(expression, And):
        return False if False in results else (None if None in results else True)
    return True if True in results else (None if None in results else False)


def reference(runs: list[RunData], expression: Expr | None, sort: list[SortKey]) -> list[str]:
    matching = [run for run in runs if expression is None or evaluate(expression, run) is True]
    ordered = sorted(matching, key=lambda run: run.run_id)
    for key in reversed(sort):  # stable sorts, least significant key first
        present = [run for run in ordered if run.value(key.field) is not None]
        missing = [run for run in ordered if run.value(key.field) is None]
        present.sort(key=lambda run: run.value(key.field), reverse=key.descending)  # type: ignore[arg-type, return-value]
        ordered = present + missing
    return [run.run_id for run in ordered]


# Strategies ------------------------------------------------------------------------------------------

metric_fields = st.builds(
    Field, st.just("metric"), st.sampled_from(METRICS), st.sampled_from(("latest", "min", "max"))
)
param_fields = st.builds(Field, st.just("param"), st.sampled_from(PARAMS))
operators = st.sampled_from(("=", "!=", "<", "<=", ">", ">="))
comparisons = st.one_of(
    st.builds(Compare, metric_fields, operators, st.sampled_from(NUMBERS)),
    st.builds(Compare, param_fields, operators, st.sampled_from(PARAM_VALUES)),
)
expressions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=5,
)
sort_keys = st.lists(st.builds(SortKey, st.one_of(metric_fields, param_fields), st.booleans()), max_size=2)


def _sort_text(key: SortKey) -> str:
    return key.field.render() + (" desc" if key.descending else " asc")


def _all_pages(
    client: TrackingClient, experiment_id: str, page_size: int, **query: object
) -> list[pb.CompareRow]:
    rows: list[pb.CompareRow] = []
    token = ""
    while True:
        page = client.compare_runs(experiment_id, page_size=page_size, page_token=token, **query)  # type: ignore[arg-type]
        rows.extend(page.rows)
        token = page.next_page_token
        if not token:
            return rows


def test_compare_matches_the_reference(client: TrackingClient) -> None:
    experiment_id, runs = _populate(client)
    by_id = {run.run_id: run for run in runs}
    columns = [("loss", "latest"), ("acc", "min"), ("val/f1", "max")]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(expression=st.one_of(st.none(), expressions), sort=sort_keys, page_size=st.integers(1, 45))
    def check(expression: Expr | None, sort: list[SortKey], page_size: int) -> None:
        text = "" if expression is None else render(expression)
        rows = _all_pages(
            client, experiment_id, page_size,
            metrics=columns, params=list(PARAMS), filter=text, order_by=[_sort_text(k) for k in sort],
        )  # fmt: skip
        assert [row.run_id for row in rows] == reference(runs, expression, sort), text
        for row in rows:  # the cells hold the chosen aggregates and parameters
            run = by_id[row.run_id]
            for (key, aggregate), cell in zip(columns, row.metrics, strict=True):
                expected = run.value(Field("metric", key, aggregate))  # type: ignore[arg-type]
                assert (cell.value if cell.HasField("value") else None) == expected
            assert [c.value if c.HasField("value") else None for c in row.params] == [
                run.params.get(key) for key in PARAMS
            ]

    check()


def test_total_count_and_tokens(client: TrackingClient) -> None:
    experiment_id, runs = _populate(client)
    page = client.compare_runs(experiment_id, filter="metrics.loss >= 0", page_size=5)
    expected = sum(1 for run in runs if run.metrics.get("loss") and run.metrics["loss"][-1] >= 0)
    assert page.total_count == expected and len(page.rows) == min(5, expected)
    with pytest.raises(InvalidArgument, match="different query"):
        client.compare_runs(experiment_id, filter="metrics.loss < 0", page_token=page.next_page_token)
    with pytest.raises(InvalidArgument, match="malformed"):
        client.compare_runs(experiment_id, page_token="not-a-token")


def test_attributes_filter_and_sort(client: TrackingClient) -> None:
    with client.start_run("attrs", "alpha") as first:
        first.log_metrics({"loss": 1.0})
    with pytest.raises(RuntimeError), client.start_run("attrs", "beta"):
        raise RuntimeError("boom")
    experiment_id = client.get_experiment("attrs").experiment_id
    rows = client.compare_runs(experiment_id, filter='attributes.status = "FAILED"').rows
    assert [row.name for row in rows] == ["beta"]
    rows = client.compare_runs(experiment_id, filter="attributes.status = 'failed'").rows  # any case
    assert [row.name for row in rows] == ["beta"]
    with pytest.raises(InvalidArgument, match=r"attributes\.status is RUNNING, FINISHED, FAILED or KILLED"):
        client.compare_runs(experiment_id, filter="attributes.status = 'DONE'")
    rows = client.compare_runs(experiment_id, order_by=["attributes.name desc"]).rows
    assert [row.name for row in rows] == ["beta", "alpha"]
    rows = client.compare_runs(experiment_id, filter="attributes.end_time > 0 and metrics.loss = 1").rows
    assert [row.name for row in rows] == ["alpha"]


def test_bad_filters_and_sort_keys_are_invalid_arguments_naming_the_position(client: TrackingClient) -> None:
    experiment_id = client.create_experiment("bad-filters").experiment_id
    with pytest.raises(InvalidArgument, match="bad filter at position 22: expected a field"):
        client.compare_runs(experiment_id, filter="metrics.loss < 0.5 and")
    with pytest.raises(InvalidArgument, match="bad sort key at position 13: unexpected 'sideways'"):
        client.compare_runs(experiment_id, order_by=["metrics.loss sideways"])
    with pytest.raises(InvalidArgument, match="metric name must not be empty"):
        client.compare_runs(experiment_id, metrics=[""])
    # Each sort key widens every later page's condition by a term per key: 1,100 failed INTERNAL, and a
    # few hundred took a page minutes of server CPU.
    with pytest.raises(InvalidArgument, match="order_by has 17 sort keys; at most 16 are allowed"):
        client.compare_runs(experiment_id, order_by=["attributes.start_time"] * 17)
    assert client.compare_runs(experiment_id, order_by=["attributes.start_time"] * 16).rows == []


def test_deep_and_long_filters_are_invalid_arguments_not_internal(client: TrackingClient) -> None:
    """'not ' * 1000 or 600 nested parentheses ran the recursive parser out of stack (RecursionError,
    INTERNAL); the deepest and longest filters still accepted run on the database."""
    experiment_id = client.create_experiment("deep-filters").experiment_id
    client.create_run(experiment_id, "r", params={"lr": "0.1"})
    for text in ("not " * 1000 + "metrics.a > 1", "(" * 600 + "metrics.a > 1" + ")" * 600):
        with pytest.raises(InvalidArgument, match=f"nest more than {MAX_DEPTH} deep"):
            client.compare_runs(experiment_id, filter=text)
    with pytest.raises(InvalidArgument, match=f"at most {MAX_FILTER_LENGTH}"):
        client.compare_runs(experiment_id, filter="params.lr = '0.1' " + " " * MAX_FILTER_LENGTH)
    match = "params.lr = '0.1'"
    assert client.compare_runs(experiment_id, filter="not " * MAX_DEPTH + match).total_count == 1
    nested = "(not " * (MAX_DEPTH // 2) + match + ")" * (MAX_DEPTH // 2)
    assert client.compare_runs(experiment_id, filter=nested).total_count == 1
    term = "metrics.a>1or "
    longest = term * (MAX_FILTER_LENGTH // len(term) - 1) + match
    assert len(longest) <= MAX_FILTER_LENGTH
    assert client.compare_runs(experiment_id, filter=longest).total_count == 1


def test_filter_and_sort_naming_too_many_fields_is_an_invalid_argument(client: TrackingClient) -> None:
    """One outer join per distinct metric, parameter or tag: 70 of them failed on SQLite with "at most 64
    tables in a join" (INTERNAL)."""
    experiment_id = client.create_experiment("wide-filters").experiment_id
    client.create_run(experiment_id, "r", params={"p1": "x"})
    seventy = " or ".join(f"metrics.m{index} > 0" for index in range(70))
    with pytest.raises(InvalidArgument, match=f"more than {MAX_JOINED_FIELDS} distinct metrics"):
        client.compare_runs(experiment_id, filter=seventy)
    kinds = ("metrics.m{} > 0", "params.p{} = 'x'", "tags.t{} = 'x'")
    widest = " or ".join(kinds[index % 3].format(index) for index in range(MAX_JOINED_FIELDS - 1))
    # Fields named again (min() and max() of a metric too) reuse their join; the sort key adds the 32nd.
    widest += " or min(metrics.m0) > 0 or max(metrics.m0) > 0 or params.p1 = 'x'"
    page = client.compare_runs(experiment_id, filter=widest, order_by=["metrics.sort_key desc"])
    assert page.total_count == 1
    with pytest.raises(InvalidArgument, match=f"at metric 'one_too_many'\\); at most {MAX_JOINED_FIELDS}"):
        client.compare_runs(
            experiment_id, filter=widest, order_by=["metrics.sort_key desc", "metrics.one_too_many"]
        )


def test_a_column_asked_for_twice_or_too_many_columns_are_invalid_arguments(client: TrackingClient) -> None:
    """A repeated column came back twice in every row (a client keying cells by name saw one), and
    repeating a long parameter column made one row outgrow gRPC's 4 MiB reply, which no page cut helps."""
    experiment_id = client.create_experiment("repeated-columns").experiment_id
    client.create_run(experiment_id, "r", params={"p": "x" * 6000})
    with pytest.raises(InvalidArgument, match="metric column 'loss' \\(min\\) is asked for twice"):
        client.compare_runs(experiment_id, metrics=[("loss", "min"), "loss", ("loss", "min")])
    with pytest.raises(InvalidArgument, match="parameter column 'p' is asked for twice"):
        client.compare_runs(experiment_id, params=["p", "q", "p"])
    with pytest.raises(InvalidArgument, match=f"at most {MAX_COLUMNS} together"):
        client.compare_runs(experiment_id, params=[f"p{index}" for index in range(MAX_COLUMNS + 1)])
    page = client.compare_runs(experiment_id, metrics=["loss", ("loss", "min")], params=["p"])
    assert [len(page.rows[0].metrics), len(page.rows[0].params)] == [2, 1]
