"""Validation per rule, and random batches against a brute-force per-record checker (hypothesis)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from clients.errors import InvalidArgument
from control_plane.ingestion.validation import judged_alone, null_fractions, validate

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ENTITY = pb.Entity(name="sensor", join_keys=[pb.JoinKey(name="sensor_id", value_type=t.INT64)])
VIEW = pb.FeatureView(
    spec=pb.FeatureViewSpec(
        name="climate",
        entity="sensor",
        features=[
            pb.Feature(
                name="temperature_c",
                value_type=t.FLOAT32,
                validation=pb.ValidationRule(min_value=-40, max_value=60, max_null_fraction=0.25),
            ),
            pb.Feature(
                name="mode", value_type=t.INT32, validation=pb.ValidationRule(allowed_values=[1, 2, 3])
            ),
        ],
    ),
    version=1,
)


def reasons(table: pa.Table) -> dict[int, str]:
    result = validate(VIEW, ENTITY, table, now=NOW)
    assert result.accepted.num_rows + result.rejected.num_rows == table.num_rows
    return dict(
        zip(
            result.rejected.column("row_index").to_pylist(),
            result.rejected.column("reason").to_pylist(),
            strict=True,
        )
    )


def batch(**columns: list[object]) -> pa.Table:
    base: dict[str, list[object]] = {
        "sensor_id": [1],
        "event_ts": [NOW],
        "temperature_c": [20.0],
        "mode": [1],
    }
    base.update(columns)
    return pa.table(base)


def test_valid_record_is_accepted_and_cast_to_registered_types() -> None:
    result = validate(VIEW, ENTITY, batch(), now=NOW)
    assert result.rejected.num_rows == 0
    assert result.accepted.schema.field("temperature_c").type == pa.float32()
    assert result.accepted.schema.field("mode").type == pa.int32()
    assert result.accepted.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"temperature_c": [75.2]}, "temperature_c: 75.2 above max 60"),
        ({"temperature_c": [-41.0]}, "temperature_c: -41 below min -40"),
        ({"mode": [7]}, "mode: 7 not in allowed values [1, 2, 3]"),
        ({"mode": [1.5]}, "mode: 1.5 not castable to int32 without loss"),
        ({"mode": ["two"]}, "mode: 'two' not castable to int32 without loss"),
        ({"mode": [None]}, "mode: null (NaN or missing) not allowed"),
        (
            {"temperature_c": [math.nan]},
            "temperature_c: null (null fraction 1.000 in batch exceeds max 0.25)",
        ),
        ({"sensor_id": [None]}, "sensor_id: required join key is null"),
        ({"sensor_id": [math.nan]}, "sensor_id: required join key is null (NaN or missing)"),
        ({"sensor_id": ["abc"]}, "sensor_id: 'abc' not castable to int64 without loss"),
        ({"event_ts": [None]}, "event_ts: timestamp is null"),
        (
            {"event_ts": [datetime(2026, 1, 1, 12)]},
            "event_ts: 2026-01-01T12:00:00 is not a time-zone-aware timestamp",
        ),
        (
            {"event_ts": ["2026-01-01T12:00:00"]},
            "event_ts: '2026-01-01T12:00:00' is not a time-zone-aware timestamp",
        ),
        ({"event_ts": [NOW + timedelta(days=2)]}, "is more than 1 day, 0:00:00 ahead of now"),
        (
            {"event_ts": [1_767_268_800_000]},  # epoch milliseconds: Arrow would read them as µs, in 1970
            "event_ts: 1767268800000 is of type int64, not a time-zone-aware timestamp (accepted: a"
            " timestamp with a time zone, or an ISO 8601 string with a zone offset or Z)",
        ),
        ({"event_ts": [NOW.date()]}, "event_ts: 2026-01-01 is of type date32[day], not a time-zone-aware"),
        ({"event_ts": [1.767e9]}, "event_ts: 1.767e+09 is of type double, not a time-zone-aware"),
        ({"humidity": [0.5]}, "humidity: unknown column"),
    ],
)
def test_each_rule_rejects_with_a_reason_naming_column_and_rule(
    columns: dict[str, list[object]], expected: str
) -> None:
    found = reasons(batch(**columns))
    assert list(found) == [0]
    assert expected in found[0]


def test_missing_join_key_and_timestamp_columns_reject_every_record() -> None:
    found = reasons(pa.table({"temperature_c": [1.0, 2.0], "mode": [1, 1]}))
    assert all(
        "sensor_id: required join key missing" in r and "event_ts: timestamp missing" in r
        for r in found.values()
    )
    assert sorted(found) == [0, 1]


def test_null_fraction_at_the_limit_is_accepted_and_above_it_quarantines_the_nulls() -> None:
    four = {"sensor_id": [1, 2, 3, 4], "event_ts": [NOW] * 4, "mode": [1] * 4}
    assert reasons(pa.table({**four, "temperature_c": [1.0, None, 3.0, 4.0]})) == {}
    found = reasons(pa.table({**four, "temperature_c": [1.0, None, math.nan, 4.0]}))
    assert sorted(found) == [1, 2]  # only the null records; NaN counts as null


def test_nan_in_an_unknown_column_counts_as_null_and_only_a_value_there_rejects_the_record() -> None:
    """NaN counts as null, and only a non-null value in a column the schema does not know rejects its
    record: a pandas frame's extra float column, all NaN where another view's feature is missing,
    rejected every record (the check read NaN as a value). The same for a dictionary-encoded column."""
    four = {"sensor_id": [1, 2, 3, 4], "event_ts": [NOW] * 4, "temperature_c": [20.0] * 4, "mode": [1] * 4}
    humidity = pa.array([math.nan, None, 0.5, math.nan])
    assert reasons(pa.table({**four, "humidity": humidity})) == {2: "humidity: unknown column"}
    encoded = humidity.dictionary_encode()
    assert reasons(pa.table({**four, "humidity": encoded})) == {2: "humidity: unknown column"}
    all_nan = pa.array([math.nan] * 4, pa.float32())
    assert reasons(pa.table({**four, "humidity": all_nan})) == {}


def test_a_run_end_encoded_column_is_validated_as_its_plain_values() -> None:
    """Arrow's ``take`` has no run-end-encoded kernel: copying the rejected rows raised
    ArrowNotImplementedError. The column is decoded first."""
    mode = pa.RunEndEncodedArray.from_arrays([2, 3], pa.array([1, 9]))
    table = pa.table(
        {"sensor_id": [1, 2, 3], "event_ts": [NOW] * 3, "temperature_c": [20.0] * 3, "mode": mode}
    )
    result = validate(VIEW, ENTITY, table, now=NOW)
    assert result.accepted.column("mode").to_pylist() == [1, 1]
    assert result.rejected.column("reason").to_pylist() == ["mode: 9 not in allowed values [1, 2, 3]"]
    assert json.loads(result.rejected.column("payload")[0].as_py())["mode"] == 9


def test_null_fractions_count_over_all_tables_as_validate_counts_nulls() -> None:
    """NaN is null, a missing column is all null, a value that fails its cast is no null."""
    first = pa.table({"sensor_id": [1, 2], "event_ts": [NOW] * 2, "temperature_c": [None, math.nan]})
    second = pa.table(
        {"sensor_id": [3, 4], "event_ts": [NOW] * 2, "temperature_c": ["warm", "20"], "mode": [1, None]}
    )
    assert null_fractions(VIEW, ENTITY, [first, second]) == {"temperature_c": 0.5, "mode": 0.75}
    assert null_fractions(VIEW, ENTITY, []) == {"temperature_c": 0.0, "mode": 0.0}


def test_given_null_fractions_judge_the_table_and_no_nulls_is_a_rule_of_each_record() -> None:
    """A chunk of a call is judged by the call's fraction (``null_fractions``), a replayed record alone
    (``judged_alone``: no batch fraction); ``max_null_fraction`` 0 refuses a null either way."""
    one = batch(temperature_c=[None], mode=[None])
    assert reasons(one) == {
        0: "temperature_c: null (null fraction 1.000 in batch exceeds max 0.25); mode: null (NaN or"
        " missing) not allowed"
    }
    alone = validate(VIEW, ENTITY, one, now=NOW, null_fractions=judged_alone(VIEW, ENTITY))
    assert alone.rejected.column("reason").to_pylist() == ["mode: null (NaN or missing) not allowed"]
    calls = {"temperature_c": 0.2}
    assert (
        validate(VIEW, ENTITY, batch(temperature_c=[None]), now=NOW, null_fractions=calls).rejected.num_rows
        == 0
    )
    over = validate(VIEW, ENTITY, batch(temperature_c=[20.0]), now=NOW, null_fractions={"temperature_c": 0.9})
    assert over.rejected.num_rows == 0  # only a null is rejected for its fraction


def test_rejected_payload_is_the_original_row_as_json() -> None:
    result = validate(VIEW, ENTITY, batch(temperature_c=[99.0]), now=NOW)
    payload = json.loads(result.rejected.column("payload")[0].as_py())
    assert payload == {"sensor_id": 1, "event_ts": NOW.isoformat(), "temperature_c": 99.0, "mode": 1}


def test_strict_mode_names_first_rows_and_columns() -> None:
    table = pa.table(
        {"sensor_id": [1, 2, 3], "event_ts": [NOW] * 3, "temperature_c": [1.0, 70.0, 2.0], "mode": [1, 1, 9]}
    )
    with pytest.raises(InvalidArgument) as raised:
        validate(VIEW, ENTITY, table, now=NOW, strict=True)
    assert raised.value.message.startswith(
        "2 of 3 records failed validation: row 1: temperature_c: 70 above max 60"
    )
    assert "row 2: mode: 9 not in allowed values" in raised.value.message


def test_aggregation_view_validates_the_aggregated_event_fields() -> None:
    view = pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name="clicks",
            entity="sensor",
            features=[pb.Feature(name="amount_sum_1h", value_type=t.FLOAT64)],
            aggregations=[
                pb.Aggregation(column="amount", function="sum", window_seconds=3600, output="amount_sum_1h")
            ],
        ),
        version=1,
    )
    table = pa.table(
        {"sensor_id": ["1", "2", "3"], "event_ts": [NOW.isoformat()] * 3, "amount": ["2.5", "nan", "x"]}
    )
    result = validate(view, ENTITY, table, now=NOW)
    assert result.accepted.column_names == ["sensor_id", "event_ts", "amount"]
    assert result.accepted.column("amount").to_pylist() == [2.5]
    assert result.rejected.column("reason").to_pylist() == [
        "amount: null (NaN or missing) not allowed",
        "amount: 'x' not castable to double without loss",
    ]


SUMMED = pb.FeatureView(
    spec=pb.FeatureViewSpec(
        name="sums",
        entity="sensor",
        features=[
            pb.Feature(name="amount_sum_1h", value_type=t.FLOAT64),
            pb.Feature(name="amount_max_1h", value_type=t.FLOAT64),
        ],
        aggregations=[
            pb.Aggregation(column="amount", function="sum", window_seconds=3600, output="amount_sum_1h"),
            pb.Aggregation(column="amount", function="max", window_seconds=3600, output="amount_max_1h"),
        ],
    ),
    version=1,
)


def test_an_aggregated_event_field_must_be_finite() -> None:
    """An infinity would poison every window holding it (inf + -inf is NaN); a literal too large for a
    float64 is no infinity the sender wrote. Both are quarantined, each with its reason."""
    amounts = ["5", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e308", "-0.0"]
    table = pa.table(
        {"sensor_id": ["1"] * len(amounts), "event_ts": [NOW.isoformat()] * len(amounts), "amount": amounts}
    )
    result = validate(SUMMED, ENTITY, table, now=NOW)
    assert result.accepted.column("amount").to_pylist() == [5.0, 1e308, -0.0]
    assert result.rejected.column("row_index").to_pylist() == [1, 2, 3, 4, 5]
    assert result.rejected.column("reason").to_pylist() == [
        "amount: inf is not finite",
        "amount: -inf is not finite",
        "amount: inf is not finite",
        "amount: '1e309' not castable to double without loss",
        "amount: '-1e309' not castable to double without loss",
    ]
    # Typed infinities too (a replayed record, an Arrow batch), whatever the other fields say.
    typed = pa.table({"sensor_id": [1, 2], "event_ts": [NOW] * 2, "amount": [math.inf, 2.5]})
    found = validate(SUMMED, ENTITY, typed, now=NOW)
    assert found.rejected.column("reason").to_pylist() == ["amount: inf is not finite"]
    assert found.accepted.column("amount").to_pylist() == [2.5]


def test_a_plain_float_feature_keeps_an_infinity_written_as_one_but_not_an_overflow() -> None:
    """Only aggregated fields must be finite: a plain feature's infinity is a value its producer may mean
    (and a range rule refuses it where it is not wanted); a literal beyond the type is a lossy cast."""
    view = pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name="gaps",
            entity="sensor",
            features=[
                pb.Feature(name="since_last_s", value_type=t.FLOAT64),
                pb.Feature(name="ratio", value_type=t.FLOAT32),
            ],
        ),
        version=1,
    )
    table = pa.table(
        {
            "sensor_id": [1, 2, 3, 4],
            "event_ts": [NOW] * 4,
            "since_last_s": ["inf", "-Infinity", "1e309", "12.5"],
            "ratio": [math.inf, 1.0, 1.0, 1e39],
        }
    )
    result = validate(view, ENTITY, table, now=NOW)
    assert result.accepted.column("since_last_s").to_pylist() == [math.inf, -math.inf]
    assert result.accepted.column("ratio").to_pylist() == [math.inf, 1.0]
    assert result.rejected.column("reason").to_pylist() == [
        "since_last_s: '1e309' not castable to double without loss",
        "ratio: 1e+39 not castable to float without loss",
    ]


def test_aggregation_view_rows_as_stored_are_checked_as_its_aggregates() -> None:
    """The offline store holds a streaming view's aggregates, not its events: checked as stored, an
    aggregated row passes on its features' rules, and the raw event field is not required."""
    view = pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name="clicks",
            entity="sensor",
            features=[
                pb.Feature(
                    name="amount_sum_1h", value_type=t.FLOAT64, validation=pb.ValidationRule(max_value=100)
                )
            ],
            aggregations=[
                pb.Aggregation(column="amount", function="sum", window_seconds=3600, output="amount_sum_1h")
            ],
        ),
        version=1,
    )
    stored = pa.table({"sensor_id": [1, 2], "event_ts": [NOW] * 2, "amount_sum_1h": [7.5, 250.0]})
    result = validate(view, ENTITY, stored, now=NOW, stored=True)
    assert result.accepted.column_names == ["sensor_id", "event_ts", "amount_sum_1h"]
    assert result.accepted.column("amount_sum_1h").to_pylist() == [7.5]
    assert result.rejected.column("reason").to_pylist() == ["amount_sum_1h: 250 above max 100"]
    as_events = validate(view, ENTITY, stored, now=NOW)
    assert as_events.accepted.num_rows == 0  # as raw events they lack ``amount`` and carry an unknown column


# -- random batches against a per-record reference ------------------------------------------------------

temperatures = st.one_of(st.none(), st.just(math.nan), st.floats(-60, 80, allow_nan=False, width=32))
modes = st.one_of(st.none(), st.integers(0, 4))
stamps = st.one_of(st.none(), st.integers(-3, 3).map(lambda days: NOW + timedelta(days=days)))
records = st.tuples(st.one_of(st.none(), st.integers(0, 9)), stamps, temperatures, modes)


def expected_rejects(rows: list[tuple[int | None, datetime | None, float | None, int | None]]) -> set[int]:
    nulls = sum(1 for r in rows if r[2] is None or math.isnan(r[2]))
    too_many_nulls = nulls / len(rows) > 0.25
    bad = set()
    for i, (key, ts, temp, mode) in enumerate(rows):
        temp_null = temp is None or math.isnan(temp)
        if (
            key is None
            or ts is None
            or ts > NOW + timedelta(days=1)
            or (temp_null and too_many_nulls)
            or (temp is not None and not temp_null and not -40 <= temp <= 60)
            or mode is None
            or mode not in (1, 2, 3)
        ):
            bad.add(i)
    return bad


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=40))
def test_random_batches_match_a_per_record_checker(
    rows: list[tuple[int | None, datetime | None, float | None, int | None]],
) -> None:
    table = pa.table(
        {
            "sensor_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_ts": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
            "temperature_c": pa.array([r[2] for r in rows], pa.float64()),
            "mode": pa.array([r[3] for r in rows], pa.int64()),
        }
    )
    result = validate(VIEW, ENTITY, table, now=NOW)
    assert set(result.rejected.column("row_index").to_pylist()) == expected_rejects(rows)
    assert result.accepted.num_rows + result.rejected.num_rows == len(rows)
    assert result.accepted.column("sensor_id").null_count == 0


# -- int64 range and categories, exact near and beyond 2**53 --------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
near = st.sampled_from([0, 2**53, -(2**53), 2**63 - 1024, INT64_MIN]).flatmap(
    lambda centre: st.integers(max(INT64_MIN, centre - 4), min(INT64_MAX, centre + 4))
)
big_ints = st.one_of(near, st.integers(INT64_MIN, INT64_MAX))
# Bounds are doubles: some exactly on an integer near a value, some between integers; categories int64.
bounds = st.one_of(
    big_ints.map(float),
    near.map(lambda v: float(v) + 0.5),
    st.floats(allow_nan=False),
    st.sampled_from([math.inf, -math.inf, 2.0**63, -(2.0**63), 2.0**53 + 2]),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(big_ints, min_size=1, max_size=20),
    low=st.one_of(st.none(), bounds),
    high=st.one_of(st.none(), bounds),
    allowed=st.lists(big_ints, max_size=6),
)
def test_int64_range_and_categories_match_exact_comparison(
    values: list[int], low: float | None, high: float | None, allowed: list[int]
) -> None:
    rule = pb.ValidationRule(allowed_values=allowed)
    if low is not None:
        rule.min_value = low
    if high is not None:
        rule.max_value = high
    view = pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name="counts",
            entity="sensor",
            features=[pb.Feature(name="n", value_type=t.INT64, validation=rule)],
        ),
        version=1,
    )
    table = pa.table(
        {"sensor_id": [1] * len(values), "event_ts": [NOW] * len(values), "n": pa.array(values, pa.int64())}
    )
    result = validate(view, ENTITY, table, now=NOW)

    # Brute force: Python compares an int with a float exactly, whatever their sizes.
    def bad(v: int) -> bool:
        return (
            (low is not None and v < low)
            or (high is not None and v > high)
            or (bool(allowed) and v not in allowed)
        )

    assert result.rejected.column("row_index").to_pylist() == [i for i, v in enumerate(values) if bad(v)]
    assert result.accepted.column("n").to_pylist() == [v for v in values if not bad(v)]


def test_an_int64_beyond_2_53_is_checked_exactly_and_named_in_full() -> None:
    view = pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name="counts",
            entity="sensor",
            features=[
                pb.Feature(name="n", value_type=t.INT64, validation=pb.ValidationRule(max_value=2.0**53))
            ],
        ),
        version=1,
    )
    table = pa.table(
        {"sensor_id": [1, 2], "event_ts": [NOW] * 2, "n": pa.array([2**53, 2**53 + 1], pa.int64())}
    )
    result = validate(view, ENTITY, table, now=NOW)
    assert result.accepted.column("n").to_pylist() == [2**53]
    assert result.rejected.column("reason").to_pylist() == ["n: 9007199254740993 above max 9007199254740992"]


# -- float32 bounds --------------------------------------------------------------------------------------


def float32_view(low: float | None, high: float | None) -> pb.FeatureView:
    rule = pb.ValidationRule()
    if low is not None:
        rule.min_value = low
    if high is not None:
        rule.max_value = high
    return pb.FeatureView(
        spec=pb.FeatureViewSpec(
            name="ratios",
            entity="sensor",
            features=[pb.Feature(name="ratio", value_type=t.FLOAT32, validation=rule)],
        ),
        version=1,
    )


def test_a_float32_value_written_as_its_bound_passes_it() -> None:
    # 0.7 and 0.9 are stored as 0.699999988 and 0.899999976 in float32: compared with the double bounds
    # 0.7 failed its own min.
    table = pa.table(
        {
            "sensor_id": [1, 2, 3, 4, 5],
            "event_ts": [NOW] * 5,
            "ratio": pa.array([0.7, 0.8, 0.9, 0.6999999, 0.9000001], pa.float32()),
        }
    )
    result = validate(float32_view(0.7, 0.9), ENTITY, table, now=NOW)
    assert result.accepted.column("sensor_id").to_pylist() == [1, 2, 3]
    assert result.rejected.column("reason").to_pylist() == [
        "ratio: 0.6999999 below min 0.7",
        "ratio: 0.9000001 above max 0.9",
    ]


def as_float32(x: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def within(value: float, low: float | None, high: float | None) -> bool:
    """The reference: a float32 value passes a bound it reaches exactly, or that rounds to it in
    float32 (the two are indistinguishable once stored); no bound rounds to an infinity."""

    def same(bound: float) -> bool:
        return math.isfinite(as_float32(bound)) and value == as_float32(bound)

    return (low is None or value >= low or same(low)) and (high is None or value <= high or same(high))


float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
float32_bounds = st.one_of(
    float32s,
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(-1000, 1000, places=3).map(float),
    st.sampled_from([3.5e38, -3.5e38, 3.4028235677973366e38, math.inf, -math.inf]),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), values=st.lists(float32s, min_size=1, max_size=20))
def test_float32_bounds_match_a_per_value_reference(data: st.DataObject, values: list[float]) -> None:
    # Bounds next to the values (a ulp of float64 or so either side) find the rounding edges.
    near = st.sampled_from(values).flatmap(
        lambda v: st.sampled_from([v, math.nextafter(v, math.inf), math.nextafter(v, -math.inf)])
    )
    low = data.draw(st.one_of(st.none(), float32_bounds, near))
    high = data.draw(st.one_of(st.none(), float32_bounds, near))
    table = pa.table(
        {
            "sensor_id": list(range(len(values))),
            "event_ts": [NOW] * len(values),
            "ratio": pa.array(values, pa.float32()),
        }
    )
    result = validate(float32_view(low, high), ENTITY, table, now=NOW)
    passed = [i for i, v in enumerate(values) if within(v, low, high)]
    assert result.accepted.column("sensor_id").to_pylist() == passed


# -- nanosecond values in rejected records --------------------------------------------------------------


def test_nanosecond_timestamps_of_rejected_records_keep_every_digit() -> None:
    """Without pandas, ``as_py`` cannot hold a nanosecond; the payload keeps the exact value as ISO text,
    written as ``datetime.isoformat`` would whenever the value has no digit below a microsecond."""
    stamps = [1_767_268_800_123_456_789, 1_767_268_800_123_456_000, 1_767_268_800_000_000_000]
    table = pa.table(
        {
            "sensor_id": [1, 2, 3, 4],
            "event_ts": pa.array([*stamps, stamps[0]], pa.timestamp("ns", tz="UTC")),
            "temperature_c": [99.0, 99.0, 99.0, 20.0],
            "mode": [1, 1, 1, 1],
            "lag": pa.array([None, None, None, None], pa.duration("ns")),
        }
    )
    result = validate(VIEW, ENTITY, table.drop_columns(["lag"]), now=NOW)
    assert [json.loads(p)["event_ts"] for p in result.rejected.column("payload").to_pylist()] == [
        "2026-01-01T12:00:00.123456789+00:00",
        "2026-01-01T12:00:00.123456+00:00",
        "2026-01-01T12:00:00+00:00",
    ]
    assert result.accepted.column("event_ts").cast(pa.int64()).to_pylist() == [1_767_268_800_123_456]

    naive = table.set_column(1, "event_ts", pa.array([*stamps, stamps[0]], pa.timestamp("ns")))
    naive = naive.set_column(4, "lag", pa.array([1, 2, 3, 43_200_123_456_789], pa.duration("ns")))
    found = validate(VIEW, ENTITY, naive, now=NOW).rejected
    assert (
        "event_ts: 2026-01-01T12:00:00.123456789 is not a time-zone-aware timestamp"
        in found["reason"][0].as_py()
    )
    last = json.loads(found["payload"][3].as_py())
    assert last["event_ts"] == "2026-01-01T12:00:00.123456789"  # naive stays naive
    assert last["lag"] == "43200123456789"  # a nanosecond duration as its count of nanoseconds


def test_a_timestamp_string_with_nanoseconds_is_read_to_the_microsecond() -> None:
    found = reasons(batch(event_ts=["2026-01-01T11:00:00.123456789+00:00"]))
    assert found == {}
    result = validate(VIEW, ENTITY, batch(event_ts=["2026-01-01T11:00:00.123456789Z"]), now=NOW)
    assert result.accepted.column("event_ts").to_pylist() == [datetime(2026, 1, 1, 11, 0, 0, 123456, UTC)]


# -- times after year 9999 --------------------------------------------------------------------------------


def test_a_timestamp_after_year_9999_in_utc_is_rejected_with_its_reason_not_an_error() -> None:
    """A valid ISO string west of UTC on 9999-12-31 lands in year 10000, where Python's datetime stops:
    writing its "too far ahead" reason raised OverflowError, which failed the whole batch (INTERNAL) and
    stopped a stream materializer at that message on every restart. It is one rejected record now, with
    the time in its reason and payload as Arrow formats it."""
    found = reasons(batch(sensor_id=[1, 2], event_ts=["9999-12-31T23:00:00-05:00", NOW.isoformat()],
                          temperature_c=[20.0, 20.0], mode=[1, 1]))  # fmt: skip
    assert found == {
        0: "event_ts: 10000-01-01T04:00:00+00:00 is more than 1 day, 0:00:00 ahead of now"
        " (2026-01-01T12:00:00+00:00)"
    }
    year_10000_us = 253_402_300_800_000_000
    arrow = batch(event_ts=pa.array([year_10000_us], pa.timestamp("us", tz="UTC")))
    result = validate(VIEW, ENTITY, arrow, now=NOW)
    assert result.accepted.num_rows == 0
    assert result.rejected.column("reason").to_pylist() == [
        "event_ts: 10000-01-01T00:00:00+00:00 is more than 1 day, 0:00:00 ahead of now"
        " (2026-01-01T12:00:00+00:00)"
    ]
    assert (
        json.loads(result.rejected.column("payload")[0].as_py())["event_ts"] == "10000-01-01T00:00:00+00:00"
    )


def test_a_long_rejected_value_is_cut_in_its_reason_and_kept_whole_in_the_record() -> None:
    # A 10 MB string went into the reason whole (and once more for each rule it failed).
    huge = "x" * 1_000_000
    result = validate(
        VIEW, ENTITY, batch(sensor_id=[1], event_ts=[huge], temperature_c=[20.0], mode=[1]), now=NOW
    )
    [reason] = result.rejected.column("reason").to_pylist()
    assert reason.startswith("event_ts: 'xxx") and reason.endswith(
        "... (1000000 characters) is not a time-zone-aware timestamp"
    )
    assert len(reason) < 300
    assert json.loads(result.rejected.column("payload")[0].as_py())["event_ts"] == huge


def test_a_column_named_twice_refuses_the_table_naming_it() -> None:
    """Validation looked columns up by name, and Arrow raised KeyError on a duplicate (INTERNAL over
    gRPC); the sender is told which column is named twice now."""
    table = batch().append_column("temperature_c", pa.array([2.0]))
    with pytest.raises(InvalidArgument, match=r"^columns 'temperature_c' appear more than once in the table"):
        validate(VIEW, ENTITY, table, now=NOW)


# -- times before year 1 ----------------------------------------------------------------------------------


def test_a_timestamp_before_year_1_is_rejected_with_its_reason() -> None:
    """ "0000-06-01T00:00:00Z" is valid ISO 8601 and Arrow holds times long before year 1, but no offline
    date partition can name one: accepted, it failed the offline write (OverflowError) for its whole batch
    and, on a stream, every outbox drain after it. It is one rejected record now."""
    found = reasons(batch(event_ts=["0000-06-01T00:00:00Z"]))
    assert found == {
        0: "event_ts: 0000-06-01T00:00:00+00:00 is outside the event times the stores hold (years 1 to"
        " 9999, UTC)"
    }
    first_us = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z, the first time a partition names
    arrow = batch(
        sensor_id=[1, 2],
        event_ts=pa.array([first_us - 1, first_us], pa.timestamp("us", tz="UTC")),
        temperature_c=[20.0, 20.0],
        mode=[1, 1],
    )
    result = validate(VIEW, ENTITY, arrow, now=NOW)
    assert result.rejected.column("reason").to_pylist() == [
        "event_ts: 0000-12-31T23:59:59.999999+00:00 is outside the event times the stores hold (years 1"
        " to 9999, UTC)"
    ]
    assert result.accepted.column("event_ts").cast(pa.int64()).to_pylist() == [first_us]


STRING_KEYED = pb.Entity(name="sensor", join_keys=[pb.JoinKey(name="sensor_id", value_type=t.STRING)])
_INSTANT = datetime(2026, 1, 1, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entity", "column", "values"),
    [
        # A time is no count of anything: Arrow's cast read it as a count of its own unit, so the
        # same instant sent in seconds or in nanoseconds became two different keys or values.
        (ENTITY, "sensor_id", pa.array([_INSTANT], pa.timestamp("s", tz="UTC"))),
        (ENTITY, "sensor_id", pa.array([_INSTANT], pa.timestamp("ns", tz="UTC"))),
        (ENTITY, "sensor_id", pa.array([timedelta(days=1)], pa.duration("us"))),
        (STRING_KEYED, "sensor_id", pa.array([_INSTANT], pa.timestamp("s", tz="UTC"))),
        (STRING_KEYED, "sensor_id", pa.array([_INSTANT.date()], pa.date32())),
        (ENTITY, "mode", pa.array([_INSTANT.date()], pa.date32())),
        (ENTITY, "mode", pa.array([timedelta(seconds=2)], pa.duration("s"))),
        (ENTITY, "mode", pa.array([_INSTANT.time()], pa.time32("s"))),
    ],
)
def test_a_time_date_or_duration_given_for_a_key_or_number_is_rejected_not_read_as_a_count(
    entity: pb.Entity, column: str, values: pa.Array
) -> None:
    table = batch().set_column(batch().column_names.index(column), column, values)
    result = validate(VIEW, entity, table, now=NOW)
    assert result.accepted.num_rows == 0
    (reason,) = result.rejected.column("reason").to_pylist()
    assert reason.startswith(f"{column}: ") and "not castable to" in reason, reason
