"""Rules changed while a view streams (UpdateValidation), through real stream ingestion (redis-server,
SQLite, the offline store): events applied under an earlier rule stay in the windows across a restart,
and a running materializer enforces the rules as they are now."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path
from typing import cast

import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.rule_refresh import RuleRefresh
from control_plane.ingestion.streaming.state_keys import StateKeys
from tests.integration.ingestion.conftest import registry_on
from tests.integration.ingestion.streaming_support import (
    STREAM,
    Event,
    assert_close,
    expected_online,
    publish,
    read_online,
    run_until_idle,
    started_materializer,
)

OPTIONS = MaterializerOptions(count=100, block_ms=20)


def test_a_restart_keeps_the_events_applied_before_a_rule_was_tightened(
    tmp_path: Path, redis_url: str
) -> None:
    db = registry_on(f"sqlite:///{tmp_path / 'aether.db'}")  # clicks, no rule on any feature
    client = redis.Redis.from_url(redis_url)
    try:
        now = dt.datetime.now(dt.UTC)
        before = [Event(1, now - dt.timedelta(seconds=60 - i), a) for i, a in enumerate([-5.0, 10.0, 20.0])]
        publish(client, before)
        _source, first = started_materializer(tmp_path, client, db.sessions, db.view, db.entity, OPTIONS)
        run_until_idle(first)
        assert first.totals.accepted == 3

        # The mean must now be >= 0: the -5 applied before breaks the event rule derived from it.
        db.registry.update_validation("clicks", 1, {"amount_mean_1h": pb.ValidationRule(min_value=0)})
        view = db.registry.get_feature_view("clicks", 1)
        _source, restarted = started_materializer(tmp_path, client, db.sessions, view, db.entity, OPTIONS)
        after = [Event(1, now - dt.timedelta(seconds=30), 30.0)]
        publish(client, after)
        run_until_idle(restarted)

        # Every applied event is in the rebuilt windows: count, sum, mean, max and last as brute force.
        assert_close(read_online(client, view, [1]), expected_online(before + after))
        keys = StateKeys.of("clicks", 1, OPTIONS.group)
        assert (client.zcard(keys.applied), client.zcard(keys.rejected)) == (4, 0)
        with read_session(db.sessions) as session:
            assert quarantine.list_quarantined(session, view="clicks") == []
    finally:
        client.close()
        db.engine.dispose()


def test_a_rebuild_logs_the_applied_messages_it_cannot_convert_any_more(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = registry_on(f"sqlite:///{tmp_path / 'aether.db'}")
    client = redis.Redis.from_url(redis_url)
    try:
        now = dt.datetime.now(dt.UTC)
        events = [Event(1, now - dt.timedelta(seconds=60 - i), float(i)) for i in range(2)]
        publish(client, events)
        _source, first = started_materializer(tmp_path, client, db.sessions, db.view, db.entity, OPTIONS)
        run_until_idle(first)
        # A message applied by a version whose conversion was looser than today's: not a number now.
        ts = (now - dt.timedelta(seconds=40)).isoformat()
        odd = cast(bytes, client.xadd(STREAM, {"sensor_id": "1", "event_ts": ts, "amount": "lots"}))
        keys = StateKeys.of("clicks", 1, OPTIONS.group)
        client.zadd(keys.applied, {odd: int(odd.split(b"-")[0])})  # scored by its stream time
        caplog.set_level(logging.WARNING, "aether.ingestion.stream")

        _source, restarted = started_materializer(tmp_path, client, db.sessions, db.view, db.entity, OPTIONS)

        warnings = [r.getMessage() for r in caplog.records if "could not be converted" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "1 applied messages" in warnings[0] and "amount: 'lots'" in warnings[0], warnings[0]
        later = [Event(1, now - dt.timedelta(seconds=30), 5.0)]
        publish(client, later)
        run_until_idle(restarted)
        assert_close(read_online(client, db.view, [1]), expected_online(events + later))  # the others kept
    finally:
        client.close()
        db.engine.dispose()


def test_a_running_materializer_holds_events_to_a_rule_tightened_while_it_runs(
    tmp_path: Path, redis_url: str
) -> None:
    db = registry_on(f"sqlite:///{tmp_path / 'aether.db'}")  # clicks, no rule on any feature
    client = redis.Redis.from_url(redis_url)
    options = dataclasses.replace(OPTIONS, rules_every_s=0.05)
    try:
        now = dt.datetime.now(dt.UTC)
        publish(client, [Event(1, now - dt.timedelta(seconds=60), 10.0)])
        _source, materializer = started_materializer(
            tmp_path, client, db.sessions, db.view, db.entity, options
        )
        run_until_idle(materializer)

        db.registry.update_validation("clicks", 1, {"amount_mean_1h": pb.ValidationRule(min_value=0)})
        deadline = time.monotonic() + 60
        while not materializer.view.spec.features[2].validation.HasField("min_value"):  # its next read
            assert time.monotonic() < deadline, "the materializer never read the rules again"
            materializer.step()
        publish(client, [Event(1, now - dt.timedelta(seconds=50), -7.0)])
        run_until_idle(materializer)

        with read_session(db.sessions) as session:
            records = quarantine.list_quarantined(session, view="clicks")
        assert [record.reason for record in records] == [
            "amount: -7 below min 0 (the rule of feature 'amount_mean_1h', the mean of 'amount' over 1h)"
        ]
        assert materializer.totals.accepted == 1 and materializer.totals.quarantined == 1
        assert read_online(client, db.view, [1])[1][1] == 10.0  # the sum holds the one accepted event
    finally:
        client.close()
        db.engine.dispose()


def test_a_rule_refresh_that_fails_or_finds_another_schema_keeps_the_rules_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = registry_on(f"sqlite:///{tmp_path / 'aether.db'}")
    empty = create_db_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}")  # no tables: every read fails
    caplog.set_level(logging.INFO, "aether.ingestion.stream")
    try:
        failing = RuleRefresh(create_session_factory(empty))
        assert failing.refreshed(db.view) is None and failing.refreshed(db.view) is None
        said = [r.getMessage() for r in caplog.records if "could not be read again" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("clicks v1: its validation rules"), said
        assert failing.failures == 2

        db.registry.update_validation("clicks", 1, {"amount_mean_1h": pb.ValidationRule(min_value=0)})
        other = pb.FeatureView()
        other.CopyFrom(db.view)
        other.spec.ttl_seconds = 60  # not what the version stores: a materializer of another schema
        refresh = RuleRefresh(db.sessions)
        assert refresh.refreshed(other) is None and refresh.refreshed(other) is None
        differs = [
            r for r in caplog.records if "differs from the one this materializer runs" in r.getMessage()
        ]
        assert len(differs) == 1
        updated = refresh.refreshed(db.view)  # the same schema: the new rule is taken
        assert updated is not None and updated.spec.features[2].validation.min_value == 0
    finally:
        empty.dispose()
        db.engine.dispose()
