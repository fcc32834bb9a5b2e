"""Decoding entries the data plane's own prediction-log writer appended to a real Redis Stream."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.monitoring.entries import MalformedEntry, decode_entry
from data_plane.prediction_log import PredictionLog, PredictionRecord
from data_plane.redis_client import RedisClient
from tests.support.prediction_log import append_records
from tests.unit.monitoring.world import fields_of

STREAM = "test:entries"


def record(**overrides: object) -> PredictionRecord:
    values: dict[str, object] = {
        "request_id": "r1",
        "deployment": "churn",
        "model": "churn-model",
        "version": 3,
        "variant": "primary",
        "role": "served",
        "routing_key": "",
        "ts_us": 1_700_000_000_000_000,
        "entities": [{"id": "1"}, {"id": "2"}],
        "features": np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32),
        "outputs": {
            "probabilities": np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32),
            "label": np.array([1, 0]),
        },
    }
    values.update(overrides)
    return PredictionRecord(**values)  # type: ignore[arg-type]


async def logged_fields(redis_url: str, records: Sequence[PredictionRecord]) -> list[dict[bytes, bytes]]:
    await append_records(redis_url, STREAM, records)
    reader = redis.Redis.from_url(redis_url)
    entries: Any = reader.xrange(STREAM)
    reader.close()
    return [dict(fields) for _, fields in entries]


async def test_a_sampled_served_entry_decodes_to_float_matrices(redis_url: str) -> None:
    (fields,) = await logged_fields(redis_url, [record()])
    logged = decode_entry(fields)
    assert logged is not None
    assert (logged.request_id, logged.deployment, logged.model, logged.version) == (
        "r1",
        "churn",
        "churn-model",
        3,
    )
    assert logged.features is not None and logged.features.shape == (2, 3) and np.isnan(logged.features[0, 1])
    assert list(logged.outputs) == ["probabilities", "label"]
    np.testing.assert_allclose(logged.outputs["probabilities"], [[0.2, 0.8], [0.9, 0.1]], rtol=1e-6)
    assert logged.outputs["label"].shape == (2, 1) and logged.integer_outputs == {"label"}


async def test_shadow_failed_and_unsampled_entries_carry_nothing_to_monitor(redis_url: str) -> None:
    entries = await logged_fields(
        redis_url,
        [
            record(role="shadow"),
            record(ok=False, error_code="INTERNAL", outputs=None),
            record(entities=None, features=None, outputs=None),
        ],
    )
    assert [decode_entry(fields) for fields in entries] == [None, None, None]


async def test_the_writers_gap_marker_is_skipped_not_malformed(redis_url: str) -> None:
    client = RedisClient(redis_url, pool_size=1)
    writer = PredictionLog(client, STREAM, sample_rate=1.0, maxlen=1000, buffer_size=1)
    writer.record(record(request_id="kept"))
    writer.record(record(request_id="dropped"))  # the buffer is full: dropped, and marked when written
    writer.start()
    await writer.stop()
    await client.close()
    reader = redis.Redis.from_url(redis_url)
    entries: Any = reader.xrange(STREAM)
    reader.close()
    marker, kept = (fields for _, fields in entries)
    assert marker[b"role"] == b"gap" and decode_entry(marker) is None
    assert (logged := decode_entry(kept)) is not None and logged.request_id == "kept"


async def test_bytes_that_do_not_match_their_shape_are_malformed(redis_url: str) -> None:
    (fields,) = await logged_fields(redis_url, [record()])
    fields[b"features_shape"] = b"5,3"
    with pytest.raises(MalformedEntry):
        decode_entry(fields)


VALID = fields_of(record())


def test_the_writers_fields_decode() -> None:
    logged = decode_entry(VALID)
    assert (
        logged is not None
        and logged.request_id == "r1"
        and list(logged.outputs) == ["probabilities", "label"]
    )


@pytest.mark.parametrize(
    "change",
    [
        {
            b"output:sc\xffore": b"\x00" * 4,
            b"output:sc\xffore:dtype": b"float32",
            b"output:sc\xffore:shape": b"1,1",
        },
        {b"deployment": b"ch\xffurn"},
        {b"model": b"\xfe"},
        {b"features_dtype": b"float\xff32"},
        {b"features_shape": b"2,\xff"},
        {b"features_dtype": b"datetime64[s]", b"features_shape": b"3", b"features": b"\x00" * 24},
        {b"features_dtype": b"complex64", b"features_shape": b"1,3"},
        {b"features_dtype": b"str96", b"features_shape": b"1"},
        # numpy parses a comma as a structured dtype's fields and raised SyntaxError on these
        {b"features_dtype": b","},
        {b"output:probabilities:dtype": b"f8,(1e9999,)f8"},
        {b"request_id": b"r" * 129},
        {b"variant": b"v" * 129},
        {b"version": b"2147483648"},
        {b"ts_us": b"9223372036854775808"},
    ],
    ids=[
        "output-name-not-utf8",
        "deployment-not-utf8",
        "model-not-utf8",
        "dtype-not-utf8",
        "shape-not-utf8",
        "dtype-datetime",
        "dtype-complex",
        "dtype-string",
        "dtype-comma",
        "output-dtype-bad-field-shape",
        "request-id-too-long",
        "variant-too-long",
        "version-out-of-int32",
        "ts-out-of-int64",
    ],
)
def test_undecodable_or_unindexable_entries_are_malformed_and_nothing_else(
    change: dict[bytes, bytes],
) -> None:
    with pytest.raises(MalformedEntry):
        decode_entry({**VALID, **change})


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(VALID)) | st.binary(max_size=12),
            st.none()
            | st.binary(max_size=40)
            | st.sampled_from([b"", b"0", b"1", b"-1", b"float32", b"int64", b"2,2"]),
        ),
        max_size=6,
    )
)
def test_any_corruption_decodes_or_is_malformed(changes: list[tuple[bytes, bytes | None]]) -> None:
    """Whatever happens to an entry's fields (replaced by any bytes, removed, added), decoding it gives its
    content, None, or MalformedEntry: never another exception, which would stop the monitor's reader."""
    fields = dict(VALID)
    for name, value in changes:
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    with contextlib.suppress(MalformedEntry):
        decode_entry(fields)
