"""A rule on an aggregated feature, through real stream ingestion (redis-server, SQLite, the offline
store): the event that would break it is quarantined, naming the feature, and the retraining
data-window check then passes on the aggregates stored."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import jobs_pb2, retraining_pb2
from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.offline.store import OfflineStore
from control_plane.retraining.data_window import check_window
from tests.integration.ingestion.conftest import CLICKS, CLIMATE, registry_on
from tests.integration.ingestion.streaming_support import (
    Event,
    publish,
    read_online,
    run_until_idle,
    started_materializer,
)
from tests.support.legacy_views import store_view_as_before_aggregate_rule_checks

OPTIONS = MaterializerOptions(count=100, block_ms=20)


def test_an_event_breaking_a_mean_rule_is_quarantined_and_the_window_check_passes(
    tmp_path: Path, redis_url: str
) -> None:
    spec = pb.FeatureViewSpec()
    spec.CopyFrom(CLICKS)
    spec.features[2].validation.min_value = 0  # amount_mean_1h, the mean of amount over 1h
    db = registry_on(f"sqlite:///{tmp_path / 'aether.db'}", spec)
    client = redis.Redis.from_url(redis_url)
    try:
        now = dt.datetime.now(dt.UTC)
        # The negative amount first: accepted, it alone made the stored mean -5 (below min 0).
        events = [
            Event(1, now - dt.timedelta(seconds=60 - i), amount) for i, amount in enumerate([-5, 10, 20])
        ]
        publish(client, events)
        _source, materializer = started_materializer(
            tmp_path, client, db.sessions, db.view, db.entity, OPTIONS
        )
        run_until_idle(materializer)

        with read_session(db.sessions) as session:
            records = quarantine.list_quarantined(session, view="clicks")
        assert [record.reason for record in records] == [
            "amount: -5 below min 0 (the rule of feature 'amount_mean_1h', the mean of 'amount' over 1h)"
        ]
        assert read_online(client, db.view, [1])[1][2] == 15.0  # the mean of 10 and 20

        check = check_window(
            retraining_pb2.TriggerConfig(
                deployment="d", data_window_seconds=3600, min_rows=1, max_rejected_fraction=0
            ),
            jobs_pb2.JobSpec(name="train", features=["clicks:amount_mean_1h"]),
            db.registry,
            OfflineStore(str(tmp_path / "offline")),
            dt.datetime.now(dt.UTC),
        )
        assert check.passed, check.reasons
        assert check.rows == 2
    finally:
        client.close()
        db.engine.dispose()


def test_a_stored_rule_refused_since_keeps_its_enforceable_bound(tmp_path: Path, redis_url: str) -> None:
    """A view stored before rules on aggregates were checked holds ``amount_sum_1h`` {min: 0, max: 100}:
    max 100 on a sum is refused now (events each below it can sum above it), min 0 is not (a sum of
    values >= 0 is at least each of them). Ingestion dropped the whole rule, so an event of -5 was
    accepted and the stored sum broke min 0; now min 0 is held on each event and only max 100 left out."""
    spec = pb.FeatureViewSpec()
    spec.CopyFrom(CLICKS)
    spec.features[1].validation.CopyFrom(pb.ValidationRule(min_value=0, max_value=100))  # amount_sum_1h
    db = registry_on(f"sqlite:///{tmp_path / 'aether.db'}", CLIMATE)  # the entity, and another view
    view = store_view_as_before_aggregate_rule_checks(db.sessions, spec)
    client = redis.Redis.from_url(redis_url)
    try:
        now = dt.datetime.now(dt.UTC)
        events = [Event(1, now - dt.timedelta(seconds=60 - i), a) for i, a in enumerate([-5, 60, 70])]
        publish(client, events)
        _source, materializer = started_materializer(tmp_path, client, db.sessions, view, db.entity, OPTIONS)
        run_until_idle(materializer)

        with read_session(db.sessions) as session:
            records = quarantine.list_quarantined(session, view="clicks")
        assert [record.reason for record in records] == [
            "amount: -5 below min 0 (the rule of feature 'amount_sum_1h', the sum of 'amount' over 1h)"
        ]
        assert read_online(client, view, [1])[1][1] == 130.0  # 60 + 70: max 100 is not held per event
    finally:
        client.close()
        db.engine.dispose()
