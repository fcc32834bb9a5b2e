"""The production holdout: labelled predictions joined with the feature rows the data plane's own writer
logged to a real Redis Stream, on a real database."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis.asyncio
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.retraining.holdout import production_holdout
from data_plane.prediction_log import PredictionRecord
from tests.support.prediction_log import append_records

STREAM = "test:holdout"


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield create_session_factory(engine)
    engine.dispose()


def served(request_id: str, features: list[float], ts_us: int, version: int = 1) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        deployment="eta",
        model="eta",
        version=version,
        variant="primary",
        role="served",
        routing_key="",
        ts_us=ts_us,
        entities=[{"id": "0"}],
        features=np.array([features], dtype=np.float32),
        outputs={"y": np.array([[1.0]], dtype=np.float32)},
    )


async def log(redis_url: str, records: list[PredictionRecord]) -> None:
    """Appends the records in order, through the data plane's writer."""
    await append_records(redis_url, STREAM, records)


async def test_after_a_schema_change_the_holdout_keeps_the_newest_schemas_rows(
    sessions: sessionmaker[Session], redis_url: str
) -> None:
    # The newest width used to be the width of the largest (request id, row): here the old schema's
    # request, whose id sorts last, so the challenger was judged on rows of the schema it replaced.
    now = time.time_ns() // 1000
    records = [
        served("zzz-old-schema", [1.0, 2.0, 3.0], now - 3_000_000),
        served("mmm-new-schema", [1.0, 2.0, 3.0, 4.0], now - 2_000_000),
        served("aaa-new-schema", [5.0, 6.0, 7.0, 8.0], now - 1_000_000),
    ]
    await log(redis_url, records)
    index_predictions(
        sessions,
        [
            IndexedPrediction(r.request_id, 0, "eta", "eta", 1, "primary", r.ts_us, [1.0], False)
            for r in records
        ],
    )
    record_feedback(sessions, [mpb.Feedback(request_id=r.request_id, label=i) for i, r in enumerate(records)])
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        found = await production_holdout(
            sessions, client, STREAM, "eta", now - 3_600_000_000, now + 1, lambda _m, _v: ()
        )
    finally:
        await client.aclose()
    assert found.holdout.features.tolist() == [[5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0, 4.0]]
    assert found.holdout.labels.tolist() == [2.0, 1.0]
    assert (found.labelled, found.missing_features, found.other_columns) == (3, 0, 1)


async def test_rows_another_version_logged_are_put_in_the_newest_versions_columns_by_name(
    sessions: sessionmaker[Session], redis_url: str
) -> None:
    # v2 (a canary) lists v1's refs in another order, and v3 needs a feature v1 never logged. Mixed by
    # width, v2's rows put "b" under "a"'s name.
    refs = {1: ("v@1:a", "v@1:b", "v@1:c"), 2: ("v@1:c", "v@1:a", "v@1:b"), 3: ("v@1:a", "v@1:x", "v@1:c")}
    now = time.time_ns() // 1000
    records = [
        served("old", [30.0, 10.0, 20.0], now - 4_000_000, version=2),
        served("other", [1.0, 99.0, 3.0], now - 3_000_000, version=3),
        served("gone", [1.0, 2.0, 3.0], now - 2_500_000, version=4),
        served("new", [1.0, 2.0, 3.0], now - 2_000_000, version=1),
    ]
    await log(redis_url, records)
    index_predictions(
        sessions,
        [
            IndexedPrediction(r.request_id, 0, "eta", "eta", 1, "primary", r.ts_us, [1.0], False)
            for r in records
        ],
    )
    record_feedback(sessions, [mpb.Feedback(request_id=r.request_id, label=i) for i, r in enumerate(records)])
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        found = await production_holdout(
            sessions, client, STREAM, "eta", now - 3_600_000_000, now + 1, lambda _m, v: refs.get(v)
        )
    finally:
        await client.aclose()
    assert found.holdout.feature_refs == refs[1]
    assert found.holdout.features.tolist() == [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]
    assert found.holdout.labels.tolist() == [3.0, 0.0]
    assert (found.labelled, found.missing_features, found.other_columns) == (4, 0, 2)


async def test_a_label_gets_the_features_of_the_prediction_it_joined_not_a_later_one_of_its_id(
    sessions: sessionmaker[Session], redis_url: str
) -> None:
    # A client re-used a request id. The index keeps the first prediction, and the label judges it; the
    # holdout read the log and kept the last entry of the id, pairing the label with another prediction's
    # features. It now takes the indexed one and counts the other.
    now = time.time_ns() // 1000
    first, second = (
        served("reused", [1.0, 2.0], now - 2_000_000),
        served("reused", [9.0, 9.0], now - 1_000_000),
    )
    await log(redis_url, [first, second])
    indexed = index_predictions(
        sessions,
        [
            IndexedPrediction(r.request_id, 0, "eta", "eta", 1, "primary", r.ts_us, [1.0], False)
            for r in (first, second)
        ],
    )
    assert len(indexed.duplicates) == 1
    record_feedback(sessions, [mpb.Feedback(request_id="reused", label=7.0)])
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        found = await production_holdout(
            sessions, client, STREAM, "eta", now - 3_600_000_000, now + 1, lambda _m, _v: ()
        )
    finally:
        await client.aclose()
    assert found.holdout.features.tolist() == [[1.0, 2.0]] and found.holdout.labels.tolist() == [7.0]
    assert (found.labelled, found.missing_features, found.duplicate_request_ids) == (1, 0, 1)
