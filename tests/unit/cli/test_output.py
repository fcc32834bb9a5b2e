"""``aetherctl``'s JSON output is strict JSON, whatever numbers a command prints."""

from __future__ import annotations

import io
import json
import math

from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import feature_registry_pb2 as fr
from clients.aether.v1 import jobs_pb2 as jobs
from clients.aether.v1 import model_registry_pb2 as mr
from control_plane.cli import output
from control_plane.cli.output import print_json, timestamp, to_jsonable


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_are_written_as_proto3_json_writes_them() -> None:
    out = io.StringIO()
    print_json({"runs": [{"loss": math.nan, "best": math.inf}, (-math.inf, 1.5)], "n": 2}, out)
    # json.dump wrote bare NaN/Infinity, which jq and most parsers refuse (`runs compare --json`).
    assert _strict(out.getvalue()) == {
        "runs": [{"loss": "NaN", "best": "Infinity"}, ["-Infinity", 1.5]],
        "n": 2,
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_value_prints_as_strict_json_keeping_finite_values(value: object) -> None:
    out = io.StringIO()
    print_json(value, out)
    parsed = _strict(out.getvalue())

    def expected(data: object) -> object:
        if isinstance(data, float) and not math.isfinite(data):
            return "NaN" if math.isnan(data) else ("Infinity" if data > 0 else "-Infinity")
        if isinstance(data, dict):
            return {k: expected(v) for k, v in data.items()}
        if isinstance(data, list):
            return [expected(v) for v in data]
        return data

    assert parsed == expected(value)


def test_int64_fields_are_json_numbers_at_any_depth() -> None:
    # proto3's JSON mapping writes 64-bit integers as strings, so a script adding two counts concatenated
    # them, while other commands (audit lines) printed numbers.
    model = mr.RegisteredModel(name="eta", latest_version=3, aliases={"champion": 2}, created_at_us=2**62)
    assert to_jsonable(model) | {"name": "eta"} == {
        "name": "eta", "description": "", "tags": {}, "latest_version": 3, "aliases": {"champion": 2},
        "created_at_us": 2**62, "updated_at_us": 0,
    }  # fmt: skip
    rules = fr.UpdateValidationRequest(name="v", rules={"x": fr.ValidationRule(allowed_values=[1, -(2**63)])})
    assert to_jsonable(rules)["rules"]["x"]["allowed_values"] == [1, -(2**63)]  # map of messages, repeated
    view = fr.FeatureView(schema_fingerprint=2**64 - 1)
    view.spec.features.add(name="f", validation=fr.ValidationRule(allowed_values=[7]))
    shown = to_jsonable(view)
    assert shown["schema_fingerprint"] == 2**64 - 1 and shown["spec"]["features"][0]["validation"][
        "allowed_values"
    ] == [7]
    job = jobs.Job(submitted_at_us=5)
    job.spec.hyperparameters.update({"epochs": 3})  # a Struct keeps its own JSON form
    shown = to_jsonable(job)
    assert shown["submitted_at_us"] == 5 and shown["spec"]["hyperparameters"] == {"epochs": 3.0}
    out = io.StringIO()
    print_json(shown, out)
    assert _strict(out.getvalue())["submitted_at_us"] == 5  # type: ignore[index]


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_stored_time_prints_without_raising(microseconds: int) -> None:
    """A run started at 2**63 - 1, stored by an older server, made `runs list` die in
    datetime.fromtimestamp: a time no date holds prints as its number with a note."""
    assert timestamp(microseconds)


def test_times_print_as_dates_up_to_year_9999_and_as_numbers_after() -> None:
    assert timestamp(0) == timestamp(-5) == "-"
    assert timestamp(1_700_000_000_999_999) == "2023-11-14 22:13:20Z"
    assert timestamp(253_402_300_799_999_999) == "9999-12-31 23:59:59Z"
    assert timestamp(2**63 - 1) == f"{2**63 - 1} (microseconds since 1970: after year 9999)"


def test_a_table_aligns_wide_characters_by_the_columns_a_terminal_shows() -> None:
    """A CJK character or an emoji takes two columns: counted as one, the next column moved left on
    their rows."""
    text = output.table(["NAME", "OWNER"], [["天気予報", "a"], ["weather", "b"], ["e\u0301clair", "c"]])
    lines = text.splitlines()
    shown = {"天": 2, "気": 2, "予": 2, "報": 2, "\u0301": 0}  # the columns a terminal gives them
    owner_starts = {sum(shown.get(char, 1) for char in line[:-1]) for line in lines[1:]}
    assert owner_starts == {len(lines[0]) - len("OWNER")}, text


def test_a_table_cell_with_control_characters_stays_one_line_that_cannot_drive_the_terminal() -> None:
    text = output.table(["NAME", "REASON"], [["job1", "OOM\nkilled\x1b[2J"], ["job2", "ok"]])
    assert text.splitlines() == [
        "NAME  REASON",
        "job1  OOM\\nkilled\\x1b[2J",
        "job2  ok",
    ]
