"""ListRuns and CompareRuns pages on the real store, on each supported database: runs started (and runs
leaving a filter's result set) between two page calls neither repeat nor skip a run that was in the
listing throughout, which offset pages did; concatenated pages equal a brute-force Python ordering for
random runs (ties, missing values, every sort key type) and page sizes; and a malformed or foreign page
token is INVALID_ARGUMENT naming the problem."""

from __future__ import annotations

import base64
import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from clients.aether.v1 import tracking_pb2 as pb
from clients.aether.v1.tracking_pb2_grpc import TrackingStub
from clients.errors import InvalidArgument
from clients.sdk.tracking import TrackingClient
from control_plane.db import create_db_engine, create_session_factory, pages, upgrade_to_head
from control_plane.tracking import run_size
from control_plane.tracking.records import MAX_RUN_VALUES_BYTES
from control_plane.tracking.run_size import MAX_RUN_MESSAGE_BYTES
from control_plane.tracking.store import TrackingStore
from control_plane.tracking.tables import RunRow
from tests.integration.tracking.conftest import ThreadedControlPlane
from tests.integration.tracking.test_cli import _aetherctl

ACTOR = "paging-test"


@pytest.fixture
def store(db_url: str) -> Iterator[TrackingStore]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield TrackingStore(create_session_factory(engine))
    engine.dispose()


def _list_all(store: TrackingStore, experiment_id: str, size: int, between: Callable[[], None]) -> list[str]:
    names: list[str] = []
    runs, token = store.list_runs(experiment_id, page_size=size)
    names += [run.name for run in runs]
    while token:
        between()
        runs, token = store.list_runs(experiment_id, page_size=size, page_token=token)
        names += [run.name for run in runs]
    return names


def test_runs_started_between_list_pages_neither_repeat_nor_skip_a_run(store: TrackingStore) -> None:
    experiment_id = store.create_experiment("sweep", actor=ACTOR).experiment_id
    # Three runs share each start time, so the run id tiebreak is crossed by page boundaries too.
    for index in range(12):
        store.create_run(experiment_id, f"old{index}", start_time_us=1_000 + index // 3, actor=ACTOR)
    started = iter(range(100))

    def another_worker_starts_runs() -> None:
        number = next(started)
        store.create_run(experiment_id, f"new{number}", actor=ACTOR)  # newest: ahead of the cursor
        store.create_run(experiment_id, f"tie{number}", start_time_us=1_000 + number % 4, actor=ACTOR)

    names = _list_all(store, experiment_id, 5, another_worker_starts_runs)
    assert len(names) == len(set(names)), names
    assert {f"old{index}" for index in range(12)} <= set(names)
    # The pages are the final listing's order, minus runs that started behind the cursor.
    final = [run.name for run in store.list_runs(experiment_id, page_size=1000)[0]]
    assert names == [name for name in final if name in set(names)]


@pytest.mark.parametrize(
    "sort", [["metrics.loss asc"], ["metrics.loss desc", "attributes.start_time desc"], []], ids=str
)
def test_compare_pages_with_a_sort_and_a_filter_survive_runs_starting_and_leaving(
    store: TrackingStore, sort: list[str]
) -> None:
    experiment_id = store.create_experiment("sweep", actor=ACTOR).experiment_id
    run_ids: dict[str, str] = {}
    for index in range(15):
        run_id = store.create_run(experiment_id, f"old{index}", actor=ACTOR).run_id
        run_ids[f"old{index}"] = run_id
        if index % 5:  # every fifth run has no loss: missing values sort last
            _log(store, run_id, {"loss": float(index % 4)})  # ties on the sort key
        store.update_run(run_id, pb.RUN_STATUS_FINISHED, actor=ACTOR)
    query = {"filter": "attributes.status = 'FINISHED'", "order_by": sort, "page_size": 4}
    page = store.compare(experiment_id, **query)  # type: ignore[arg-type]
    names = [row.name for row in page.rows]
    left: list[str] = []
    for number in itertools.count():
        if not page.next_page_token:
            break
        if number % 2 == 0:  # a run already listed fails: it leaves the result set behind the cursor
            left.append(next(name for name in names if name.startswith("old") and name not in left))
            store.update_run(run_ids[left[-1]], pb.RUN_STATUS_FAILED, actor=ACTOR)
        else:  # another worker of the sweep starts and finishes a run, ahead of the cursor or behind it
            run_id = store.create_run(experiment_id, f"new{number}", actor=ACTOR).run_id
            _log(store, run_id, {"loss": float(number % 4) - 1.5})
            store.update_run(run_id, pb.RUN_STATUS_FINISHED, actor=ACTOR)
        page = store.compare(experiment_id, page_token=page.next_page_token, **query)  # type: ignore[arg-type]
        names += [row.name for row in page.rows]
    throughout = set(run_ids) - set(left)
    assert len(names) == len(set(names)), names
    assert throughout <= set(names), sorted(throughout - set(names))


def _log(store: TrackingStore, run_id: str, metrics: dict[str, float]) -> None:
    series = [pb.MetricSeries(key=key, values=[value], steps=[0]) for key, value in metrics.items()]
    store.log_batch([pb.RunBatch(run_id=run_id, metrics=series)], actor=ACTOR)


# Against a brute-force reference ----------------------------------------------------------------------

NAMES = ("a", "B", "b", "a-1", "Zed", "é")
PARAM_VALUES = ("0.01", "0.1", "1e-3", "adam", "Adam", "")
METRIC_VALUES = (-1.5, 0.0, 0.1, 0.30000000000000004, 0.3, 1e300, 2.0)
STATUSES = (pb.RUN_STATUS_RUNNING, pb.RUN_STATUS_FINISHED, pb.RUN_STATUS_FAILED)
STATUS_NAMES: dict[int, str] = {
    pb.RUN_STATUS_RUNNING: "RUNNING",
    pb.RUN_STATUS_FINISHED: "FINISHED",
    pb.RUN_STATUS_FAILED: "FAILED",
}
SORT_FIELDS = (
    "metrics.loss",
    "min(metrics.loss)",
    "metrics.acc",
    "params.lr",
    "tags.team",
    "attributes.name",
    "attributes.status",
    "attributes.start_time",
    "attributes.end_time",
)


@dataclass
class RunSpec:
    name: str
    start_time_us: int
    status: int
    end_time_us: int
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, list[float]]
    run_id: str = ""

    def value(self, text: str) -> float | int | str | None:
        if text == "min(metrics.loss)":
            return min(self.metrics["loss"]) if self.metrics.get("loss") else None
        kind, _, key = text.partition(".")
        if kind == "metrics":
            values = self.metrics.get(key)
            return values[-1] if values else None
        if kind == "params":
            return self.params.get(key)
        if kind == "tags":
            return self.tags.get(key)
        attributes: dict[str, float | int | str | None] = {
            "name": self.name,
            "status": STATUS_NAMES[self.status],
            "start_time": self.start_time_us,
            "end_time": self.end_time_us or None,
        }
        return attributes[key]


runs_strategy = st.builds(
    RunSpec,
    name=st.sampled_from(NAMES),
    start_time_us=st.integers(1, 4),
    status=st.sampled_from(STATUSES),
    end_time_us=st.sampled_from((0, 10, 20)),
    params=st.dictionaries(st.just("lr"), st.sampled_from(PARAM_VALUES)),
    tags=st.dictionaries(st.just("team"), st.sampled_from(PARAM_VALUES)),
    metrics=st.dictionaries(
        st.sampled_from(("loss", "acc")), st.lists(st.sampled_from(METRIC_VALUES), min_size=1, max_size=3)
    ),
)
sorts_strategy = st.lists(st.tuples(st.sampled_from(SORT_FIELDS), st.booleans()), max_size=3)
filters_strategy = st.sampled_from(
    (
        "",
        "metrics.loss >= 0",
        "attributes.status != 'RUNNING'",
        "params.lr < 'adam'",
        "attributes.end_time > 10",
    )
)


def _matches(run: RunSpec, text: str) -> bool:
    if not text:
        return True
    field_text, op, literal = text.split(" ", 2)
    value = run.value(field_text)
    if value is None:
        return False  # SQL: a comparison with a missing value is unknown, never true
    bound: float | str = literal.strip("'") if literal.startswith("'") else float(literal)
    return {">=": value >= bound, "!=": value != bound, "<": value < bound, ">": value > bound}[op]  # type: ignore[operator]


def reference(runs: list[RunSpec], text: str, sort: list[tuple[str, bool]]) -> list[str]:
    """Matching runs sorted in Python: each key with missing values last in either direction, then by
    run id; strings by code point."""
    ordered = sorted((run for run in runs if _matches(run, text)), key=lambda run: run.run_id)
    for key, descending in reversed(sort):  # stable sorts, least significant key first
        present = [run for run in ordered if run.value(key) is not None]
        missing = [run for run in ordered if run.value(key) is None]
        present.sort(key=lambda run: run.value(key), reverse=descending)  # type: ignore[arg-type, return-value]
        ordered = present + missing
    return [run.run_id for run in ordered]


def _create(store: TrackingStore, experiment_id: str, run: RunSpec) -> None:
    run.run_id = store.create_run(
        experiment_id, run.name, run.params, run.tags, run.start_time_us, actor=ACTOR
    ).run_id
    if run.metrics:
        series = [
            pb.MetricSeries(key=key, values=values, steps=range(len(values)))
            for key, values in run.metrics.items()
        ]
        store.log_batch([pb.RunBatch(run_id=run.run_id, metrics=series)], actor=ACTOR)
    if run.status != pb.RUN_STATUS_RUNNING:
        store.update_run(run.run_id, run.status, run.end_time_us or 5, actor=ACTOR)  # after any start
        run.end_time_us = run.end_time_us or 5
    else:
        run.end_time_us = 0


def test_concatenated_pages_equal_the_reference_also_while_runs_start(store: TrackingStore) -> None:
    experiments = [0]

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        runs=st.lists(runs_strategy, min_size=2, max_size=16),
        started=st.lists(runs_strategy, max_size=4),
        text=filters_strategy,
        sort=sorts_strategy,
        page_size=st.integers(1, 6),
    )
    def check(
        runs: list[RunSpec], started: list[RunSpec], text: str, sort: list[tuple[str, bool]], page_size: int
    ) -> None:
        experiments[0] += 1
        experiment_id = store.create_experiment(f"e{experiments[0]}", actor=ACTOR).experiment_id
        for run in runs:
            _create(store, experiment_id, run)
        order_by = [f"{key} {'desc' if descending else 'asc'}" for key, descending in sort]
        expected = reference(runs, text, sort)

        def pages(between: Callable[[], None]) -> list[str]:
            page = store.compare(experiment_id, filter=text, order_by=order_by, page_size=page_size)
            found = [row.run_id for row in page.rows]
            while page.next_page_token:
                assert len(page.rows) == page_size
                between()
                page = store.compare(
                    experiment_id, filter=text, order_by=order_by, page_size=page_size,
                    page_token=page.next_page_token,
                )  # fmt: skip
                found += [row.run_id for row in page.rows]
            return found

        assert pages(lambda: None) == expected
        listed = _list_all(store, experiment_id, page_size, lambda: None)
        by_time = sorted(runs, key=lambda run: run.run_id)
        by_time.sort(key=lambda run: run.start_time_us, reverse=True)
        assert listed == [run.name for run in by_time]

        waiting = list(started)

        def start_one() -> None:
            if waiting:
                run = waiting.pop()
                _create(store, experiment_id, run)
                runs.append(run)

        found = pages(start_one)
        assert len(found) == len(set(found))
        assert set(expected) <= set(found)  # every run present throughout, once
        final = reference(runs, text, sort)
        assert found == [run_id for run_id in final if run_id in set(found)]  # in the final order

    check()


# Tokens -----------------------------------------------------------------------------------------------


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def test_malformed_and_foreign_tokens_are_invalid_arguments_naming_the_problem(store: TrackingStore) -> None:
    experiment_id = store.create_experiment("tokens", actor=ACTOR).experiment_id
    other_id = store.create_experiment("other", actor=ACTOR).experiment_id
    for index in range(3):
        run_id = store.create_run(experiment_id, f"r{index}", actor=ACTOR).run_id
        _log(store, run_id, {"loss": float(index)})
    store.create_run(other_id, "o", actor=ACTOR)
    runs_token = store.list_runs(experiment_id, page_size=1)[1]
    compare_token = store.compare(experiment_id, order_by=["metrics.loss"], page_size=1).next_page_token
    assert runs_token and compare_token

    for bad in ("not-a-token", "%%%", _token([1, 2]), _token({"listing": "ListRuns"})):
        with pytest.raises(InvalidArgument, match="malformed"):
            store.list_runs(experiment_id, page_token=bad)
        with pytest.raises(InvalidArgument, match="malformed"):
            store.compare(experiment_id, order_by=["metrics.loss"], page_token=bad)
    with pytest.raises(InvalidArgument, match="issued by 'CompareRuns', not by ListRuns"):
        store.list_runs(experiment_id, page_token=compare_token)
    with pytest.raises(InvalidArgument, match="issued by 'ListRuns', not by CompareRuns"):
        store.compare(experiment_id, order_by=["metrics.loss"], page_token=runs_token)
    with pytest.raises(InvalidArgument, match="different experiment"):
        store.list_runs(other_id, page_token=runs_token)
    with pytest.raises(InvalidArgument, match="different query"):
        store.compare(experiment_id, order_by=["metrics.loss desc"], page_token=compare_token)

    # A token of the right listing and query whose key was edited: wrong types, lengths, non-numbers.
    payload = json.loads(base64.urlsafe_b64decode(compare_token))
    for key in (["x", payload["after"][1]], [1.0], [True, payload["after"][1]], [1.0, 7], [1.0, None]):
        with pytest.raises(InvalidArgument, match="malformed"):
            store.compare(
                experiment_id, order_by=["metrics.loss"], page_token=_token({**payload, "after": key})
            )
    infinite = base64.urlsafe_b64encode(
        json.dumps({**payload, "after": [math.inf, payload["after"][1]]}).encode()
    ).decode()
    with pytest.raises(InvalidArgument, match="malformed"):
        store.compare(experiment_id, order_by=["metrics.loss"], page_token=infinite)
    # An integer is a valid value of a metric key (JSON does not tell 1 from 1.0).
    page = store.compare(
        experiment_id, order_by=["metrics.loss"], page_token=_token({**payload, "after": [0, ""]})
    )
    assert [row.name for row in page.rows] == ["r0", "r1", "r2"]
    payload = json.loads(base64.urlsafe_b64decode(runs_token))
    for key in (["1", payload["after"][1]], [2**70, payload["after"][1]], [None, payload["after"][1]]):
        with pytest.raises(InvalidArgument, match="malformed"):
            store.list_runs(experiment_id, page_token=_token({**payload, "after": key}))


# Pages bounded in bytes, over gRPC ----------------------------------------------------------------------

#: 8 parameters of 6,000 characters (each within the tracking rules): 100 such runs took 4.8 MB, over
#: gRPC's 4 MiB, and every ListRuns of the experiment failed RESOURCE_EXHAUSTED.
_BIG_PARAMS = {f"config_{index}": "y" * 6000 for index in range(8)}


def test_list_runs_cuts_a_page_by_size_and_loses_no_run(
    control_plane: ThreadedControlPlane, client: TrackingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment_id = client.create_experiment("big").experiment_id
    created = [client.create_run(experiment_id, f"r{i}", params=_BIG_PARAMS).run_id for i in range(100)]

    first = client.list_runs(experiment_id)  # the default page size, 100
    assert 0 < len(first.runs) < 100 and first.next_page_token
    assert first.ByteSize() <= pages.MAX_PAGE_BYTES
    seen = [run.run_id for run in first.runs]
    token = first.next_page_token
    while token:
        page = client.list_runs(experiment_id, page_token=token)
        assert page.runs and page.ByteSize() <= pages.MAX_PAGE_BYTES
        seen += [run.run_id for run in page.runs]
        token = page.next_page_token
    assert len(seen) == len(set(seen)) == 100 and set(seen) == set(created)
    assert all(dict(run.params) == _BIG_PARAMS for run in first.runs)

    assert _aetherctl(control_plane.address, "runs", "list", "big", "--limit", "100") == 0
    assert len(capsys.readouterr().out.splitlines()) == 101  # the header and every run


def test_compare_runs_cuts_a_page_by_size_and_loses_no_run(
    control_plane: ThreadedControlPlane, client: TrackingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A page of CompareRuns holds the asked parameters of every run in it: 100 runs (the default page
    size) with eight 6,000-character parameters took 4.8 MB, over gRPC's 4 MiB, and the compare failed
    RESOURCE_EXHAUSTED on the client for good, as ListRuns did before its pages were cut by bytes."""
    experiment_id = client.create_experiment("wide").experiment_id
    created = [client.create_run(experiment_id, f"r{i}", params=_BIG_PARAMS).run_id for i in range(100)]
    columns = sorted(_BIG_PARAMS)

    first = client.compare_runs(experiment_id, params=columns, metrics=["loss"], order_by=["params.config_0"])
    assert 0 < len(first.rows) < 100 and first.next_page_token and first.total_count == 100
    assert first.ByteSize() <= pages.MAX_PAGE_BYTES + 64 * 1024  # the rows within the bound, plus a token
    seen = [row.run_id for row in first.rows]
    token = first.next_page_token
    while token:
        page = client.compare_runs(
            experiment_id, params=columns, metrics=["loss"], order_by=["params.config_0"], page_token=token
        )
        assert page.rows and page.total_count == 100
        seen += [row.run_id for row in page.rows]
        token = page.next_page_token
    assert len(seen) == len(set(seen)) == 100 and set(seen) == set(created)
    assert all(
        [cell.value for cell in row.params] == [_BIG_PARAMS[key] for key in columns] for row in first.rows
    )

    cli = ("runs", "compare", "wide", "--params", ",".join(columns), "--limit", "100", "--json")
    assert _aetherctl(control_plane.address, *cli) == 0
    assert {row["run_id"] for row in json.loads(capsys.readouterr().out)["rows"]} == set(created)


def test_a_run_whose_parameters_and_tags_outgrow_a_message_is_refused_when_written(
    client: TrackingClient,
) -> None:
    experiment_id = client.create_experiment("huge").experiment_id
    many = {f"p{index}": "z" * 6000 for index in range(620)}  # 3.7 MB, each value within the rules
    with pytest.raises(InvalidArgument, match=f"over the limit of {MAX_RUN_VALUES_BYTES} bytes per run"):
        client.create_run(experiment_id, "huge", params=many)

    # Grown over several requests: the stored values count too, and the refused request writes nothing.
    run_id = client.create_run(experiment_id, "grows", params=dict(list(many.items())[:400])).run_id
    more = pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run_id, tags=dict(list(many.items())[400:]))])
    with pytest.raises(InvalidArgument, match=f"run '{run_id}'.*over the limit"):
        client.log_batch(more)
    run = client.get_run(run_id)
    assert len(run.params) == 400 and not run.tags
    assert len(client.list_runs(experiment_id).runs) == 1


def test_a_run_whose_metric_keys_would_outgrow_a_message_is_refused_and_what_was_accepted_reads_back(
    control_plane: ThreadedControlPlane, client: TrackingClient
) -> None:
    """A run near its parameter bound has ~0.5 MiB left for metric summaries: logging more distinct keys
    made a run no Get or List could return (RESOURCE_EXHAUSTED on the client, for good). The batch that
    would outgrow the message is refused whole; every state accepted before reads back through a plain
    channel (gRPC's default 4 MiB receive limit)."""
    experiment_id = client.create_experiment("wide").experiment_id
    params = {f"p{index}": "z" * 6000 for index in range(590)}  # ~3.5 MB, within MAX_RUN_VALUES_BYTES
    run_id = client.create_run(experiment_id, "wide", params=params).run_id
    stub = TrackingStub(grpc.insecure_channel(control_plane.address))
    logged = 0
    for batch in range(8):  # 500 keys of 240 characters a batch: ~150 KB of summaries each
        keys = [f"{batch:02d}-{index:04d}-" + "k" * 230 for index in range(500)]
        series = [pb.MetricSeries(key=key, values=[1.0], steps=[0], timestamps_us=[1]) for key in keys]
        request = pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run_id, metrics=series)])
        try:
            client.log_batch(request)
        except InvalidArgument as refused:
            assert (
                f"run {run_id!r} would take" in refused.message and "nothing was written" in refused.message
            )
            break
        logged += len(keys)
        assert len(stub.GetRun(pb.GetRunRequest(run_id=run_id)).metrics) == logged
        assert [
            run.run_id for run in stub.ListRuns(pb.ListRunsRequest(experiment_id=experiment_id)).runs
        ] == [run_id]
    else:
        raise AssertionError("no batch was refused: the run outgrew a message")
    assert 0 < logged < 4000
    run = stub.GetRun(pb.GetRunRequest(run_id=run_id))  # the refused batch left nothing
    assert len(run.metrics) == logged and len(run.params) == 590


def test_an_artifact_that_would_outgrow_its_runs_message_is_refused(store: TrackingStore) -> None:
    experiment_id = store.create_experiment("kept", actor=ACTOR).experiment_id
    params = {f"p{index}": "z" * 6000 for index in range(590)}
    run_id = store.create_run(experiment_id, "kept", params=params, actor=ACTOR).run_id
    uri = "file:///artifacts/" + "u" * 100_000  # artifacts add their URIs to the run's message
    logged = 0
    with pytest.raises(InvalidArgument, match=f"run {run_id!r} would take .* nothing was written"):
        for index in range(8):
            store.log_artifact(run_id, f"a{index}", "0" * 64, 1, uri, actor=ACTOR)
            logged += 1
    run = store.get_run(run_id)
    assert 0 < logged < 8 and len(run.artifacts) == logged
    assert run.ByteSize() <= MAX_RUN_MESSAGE_BYTES


def test_parameters_logged_after_many_metric_keys_cannot_outgrow_the_runs_message(
    store: TrackingStore,
) -> None:
    """The parameters' own bound (3.5 MiB) leaves room for the summaries only if those are small: a run
    that logged 3,000 long metric keys first took 3.5 MiB of parameters after them in point-free batches,
    each checked on parameters and tags alone, and could no longer be read."""
    experiment_id = store.create_experiment("late", actor=ACTOR).experiment_id
    run_id = store.create_run(experiment_id, "late", actor=ACTOR).run_id
    names = (f"{index:04d}-" + "k" * 235 for index in range(3000))
    series = [pb.MetricSeries(key=name, values=[1.0], steps=[0], timestamps_us=[1]) for name in names]
    store.log_batch([pb.RunBatch(run_id=run_id, metrics=series)], actor=ACTOR)
    logged = 0
    with pytest.raises(InvalidArgument, match=f"run {run_id!r} would take .* nothing was written"):
        for batch in range(6):  # 100 parameters of 6,000 characters a batch: ~0.6 MB each
            params = {f"b{batch}p{index}": "z" * 6000 for index in range(100)}
            store.log_batch([pb.RunBatch(run_id=run_id, params=params)], actor=ACTOR)
            logged += 1
    run = store.get_run(run_id)
    assert 0 < logged < 6 and len(run.params) == 100 * logged
    assert run.ByteSize() <= MAX_RUN_MESSAGE_BYTES


def test_the_bound_on_summaries_and_artifacts_counts_bytes_not_characters(db_url: str) -> None:
    """The cheap check sums what the database holds: its bound must not fall below what the run's
    message takes, keys of 4-byte characters included (``length`` counts characters on both backends)."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    store = TrackingStore(sessions)
    experiment_id = store.create_experiment("wide", actor=ACTOR).experiment_id
    run_id = store.create_run(experiment_id, "wide", actor=ACTOR).run_id
    keys = ["\U0001f600" * 200, "ascii", "\u00e9" * 100]
    last_us = 253402300799999999  # the largest timestamp accepted: the longest varint
    series = [pb.MetricSeries(key=k, values=[1e300], steps=[2**62], timestamps_us=[last_us]) for k in keys]
    store.log_batch([pb.RunBatch(run_id=run_id, metrics=series)], actor=ACTOR)
    store.log_artifact(run_id, "\U0001f600" * 50, "f" * 64, 2**62, "file:///\u00e9" * 40, actor=ACTOR)
    run = store.get_run(run_id)
    in_message = sum(pages.item_bytes(m) for m in run.metrics) + sum(
        pages.item_bytes(a) for a in run.artifacts
    )
    with sessions() as session:
        pk = session.scalars(select(RunRow.id).where(RunRow.run_id == run_id)).one()
        assert run_size.message_bound(session, pk) >= run.ByteSize() >= in_message
    engine.dispose()


def test_list_experiments_pages_by_size(control_plane: ThreadedControlPlane, client: TrackingClient) -> None:
    # Descriptions have no bound of their own: three of 1.5 MB took 4.5 MB in one unpaged reply.
    names = [f"e{index}" for index in range(3)]
    for name in names:
        client.create_experiment(name, description=name * 750_000)
    assert [experiment.name for experiment in client.list_experiments()] == names

    stub = TrackingStub(grpc.insecure_channel(control_plane.address))
    first = stub.ListExperiments(pb.ListExperimentsRequest())
    assert [e.name for e in first.experiments] == ["e0"] and first.next_page_token
    rest = stub.ListExperiments(pb.ListExperimentsRequest(page_token=first.next_page_token))
    assert [e.name for e in rest.experiments] == ["e1"] and rest.next_page_token
    small = stub.ListExperiments(pb.ListExperimentsRequest(page_size=1, page_token=rest.next_page_token))
    assert [e.name for e in small.experiments] == ["e2"] and not small.next_page_token
