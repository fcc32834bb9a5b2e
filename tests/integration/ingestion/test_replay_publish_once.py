"""A streaming view's replay publishes each record to its Redis stream once, even when the answer to
its publish is lost: a real redis-server behind a TCP proxy that lets the request through (Redis runs
it) and swallows the answer, so the replay fails not knowing the outcome and hands the record back; the
retry must find it published instead of publishing it again (the materializer would apply both)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from clients.errors import FailedPrecondition
from control_plane.ingestion import quarantine
from control_plane.ingestion.replay_publish import (
    GRACE_S,
    MARKER_TTL_S,
    PUBLISH_SCRIPT,
    marker_key,
    record_identity,
    redis_publisher,
)
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.redis_clients import sync_client
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.streaming_support import run_until_idle, started_materializer
from tests.integration.ingestion.test_replay_claims import clicks_record, replay_counts
from tests.support.redis_server import user_without_eval
from tests.support.tcp_proxy import AnswerLosingProxy


@pytest.fixture
def lossy(env: Env, redis_url: str) -> Iterator[tuple[IngestionService, AnswerLosingProxy]]:
    """The env's service on a client (1 s socket timeout) whose Redis answers the proxy can lose."""
    proxy = AnswerLosingProxy(redis_url.removeprefix("redis://").rsplit("/", 1)[0])
    client = sync_client(f"redis://{proxy.address}/0", 1.0)
    client.ping()  # connected before the answers are lost
    # The publish runs by EVALSHA: a Redis that does not know the script yet answers NOSCRIPT without
    # running it, which is not the lost answer of a publish that ran, what these tests are about.
    client.script_load(PUBLISH_SCRIPT)
    yield IngestionService(env.sessions, env.registry, env.offline, client), proxy
    client.close()
    proxy.close()


def stream(env: Env) -> list[dict[str, str]]:
    entries = env.client.xrange("events:clicks")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


def lose_the_answer(service: IngestionService, proxy: AnswerLosingProxy, record_id: int, fixed: str) -> None:
    """A replay whose publish Redis runs, while its answer never comes back: it fails, not knowing."""
    proxy.hold_answers()
    with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
        service.replay([record_id], {record_id: fixed}, actor="op")
    proxy.cut()  # the network is back


def test_a_retried_replay_whose_publish_answer_was_lost_publishes_the_record_once(
    env: Env, lossy: tuple[IngestionService, AnswerLosingProxy]
) -> None:
    service, proxy = lossy
    record_id, fixed = clicks_record(env, 4, 14.0)
    lose_the_answer(service, proxy, record_id, fixed)
    assert service.get_quarantined(record_id).status == quarantine.QUARANTINED  # handed back, unknown
    assert [event["amount"] for event in stream(env)] == ["14.0"]  # yet Redis ran the publish
    outcome = service.replay([record_id], {record_id: fixed}, actor="op")
    assert outcome.replayed == [record_id]
    assert [event["amount"] for event in stream(env)] == ["14.0"]  # not published again
    assert service.get_quarantined(record_id).status == quarantine.REPLAYED
    assert replay_counts(env) == (0, 0, 0, 1)  # counted once, by the replay that committed it


def test_a_retry_with_another_correction_keeps_the_one_the_stream_holds(
    env: Env, lossy: tuple[IngestionService, AnswerLosingProxy]
) -> None:
    service, proxy = lossy
    record_id, fixed = clicks_record(env, 5, 14.0)
    lose_the_answer(service, proxy, record_id, fixed)
    other = json.dumps({**json.loads(fixed), "amount": "15.0"})
    with pytest.raises(FailedPrecondition, match=rf"records \[{record_id}\] .* published already"):
        service.replay([record_id], {record_id: other}, actor="op")
    assert [event["amount"] for event in stream(env)] == ["14.0"]
    record = service.get_quarantined(record_id)
    assert record.status == quarantine.REPLAYED  # with what was published, not the new correction
    assert json.loads(record.payload)["amount"] == "14.0"
    assert replay_counts(env) == (0, 0, 0, 1)


def test_a_replay_publishes_each_record_once(env: Env) -> None:
    """The path with nothing lost: every record published once, in one script, and marked replayed."""
    first, first_fixed = clicks_record(env, 6, 16.0)
    second, second_fixed = clicks_record(env, 7, 17.0)
    outcome = env.service.replay([first, second], {first: first_fixed, second: second_fixed}, actor="op")
    assert sorted(outcome.replayed) == sorted([first, second])
    assert sorted(event["amount"] for event in stream(env)) == ["16.0", "17.0"]
    assert stream(env)[0] == json.loads(first_fixed)  # the event's fields, as text
    assert {env.service.get_quarantined(i).status for i in (first, second)} == {quarantine.REPLAYED}
    assert replay_counts(env) == (0, 0, 0, 2)


def test_a_replay_publishes_as_a_redis_user_without_eval(env: Env, redis_url: str) -> None:
    """The publish runs by EVALSHA (SCRIPT LOAD when Redis lost the script), as the streaming side's scripts
    do: a Redis user granted those and not EVAL, enough for the materializer, had every replay to a
    streaming view refused NOPERM."""
    with user_without_eval(redis_url) as url, contextlib.closing(sync_client(url, 5.0)) as client:
        service = IngestionService(env.sessions, env.registry, env.offline, client)
        record, fixed = clicks_record(env, 8, 18.0)
        env.client.script_flush()  # Redis forgot the script (a restart): loaded again, not EVALed
        assert service.replay([record], {record: fixed}, actor="op").replayed == [record]
        assert [event["amount"] for event in stream(env)] == ["18.0"]


def markers(env: Env, record_id: int | None = None) -> list[bytes]:
    """The replay publish markers Redis holds (of ``record_id``, or all)."""
    pattern = marker_key("events:clicks", f"{record_id}:*" if record_id is not None else "*")
    return sorted(env.client.scan_iter(match=pattern))


def ttl_of(env: Env, marker: bytes) -> int:
    return int(env.client.ttl(marker))  # type: ignore[arg-type]


def wait_until_gone(env: Env, record_id: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while markers(env, record_id) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_the_marker_stays_until_a_retry_commits_the_record_then_goes(
    env: Env, lossy: tuple[IngestionService, AnswerLosingProxy]
) -> None:
    service, proxy = lossy
    record_id, fixed = clicks_record(env, 8, 18.0)
    lose_the_answer(service, proxy, record_id, fixed)
    # While the record may be replayed again, its marker is there, for far longer than the 7 days it
    # had: a retry weeks later still finds it (the TTL is a backstop; the commit cuts it).
    (marker,) = markers(env, record_id)
    assert 30 * 24 * 3600 < ttl_of(env, marker) <= MARKER_TTL_S
    outcome = service.replay([record_id], {record_id: fixed}, actor="op")
    assert outcome.replayed == [record_id]
    assert [event["amount"] for event in stream(env)] == ["18.0"]  # published once
    # Committed ``replayed``: the marker is kept only for the grace (twice the claim lease, 10 minutes).
    assert 0 < ttl_of(env, marker) <= GRACE_S


def test_a_committed_records_marker_is_gone_after_the_grace(env: Env) -> None:
    service = IngestionService(env.sessions, env.registry, env.offline, env.client, claim_lease_s=1)
    first, first_fixed = clicks_record(env, 9, 19.0)
    second, second_fixed = clicks_record(env, 10, 20.0)
    service.replay([first, second], {first: first_fixed, second: second_fixed}, actor="op")
    assert {service.get_quarantined(i).status for i in (first, second)} == {quarantine.REPLAYED}
    assert all(0 < ttl_of(env, marker) <= 2 for marker in markers(env))  # twice the 1 s lease
    wait_until_gone(env, first)
    wait_until_gone(env, second)
    assert markers(env) == []  # before, every replayed record left one for 7 days


def test_a_replay_publishing_late_within_the_grace_finds_the_marker(env: Env) -> None:
    """A replay that stalled past the lease before its publish while another took its record over and
    committed it: its late publish still finds the marker (its commit is then refused, ClaimLost)."""
    record_id, fixed = clicks_record(env, 13, 23.0)
    env.service.replay([record_id], {record_id: fixed}, actor="op")
    created = env.service.get_quarantined(record_id).created_at_us
    late = redis_publisher(env.client, "events:clicks")
    assert late([json.loads(fixed)], [record_identity(record_id, created)]) == [None]
    assert [event["amount"] for event in stream(env)] == ["23.0"]  # not published twice


class LosesMarkerCuts(redis.Redis):
    """A client whose pipelines fail as if Redis went away right after the replay's commit (the named
    fault: the publish, a script, and the commit must succeed first, then the markers' cut fail)."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        raise redis.ConnectionError("Redis went away (test fault)")


def test_a_marker_cut_that_fails_is_logged_and_the_ttl_removes_it(
    env: Env, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = LosesMarkerCuts.from_url(redis_url)
    service = IngestionService(env.sessions, env.registry, env.offline, client, replay_marker_ttl_s=1)
    record_id, fixed = clicks_record(env, 11, 21.0)
    with caplog.at_level(logging.ERROR, logger="aether.ingestion.replay"):
        outcome = service.replay([record_id], {record_id: fixed}, actor="op")
    assert outcome.replayed == [record_id]  # the failed cut does not fail the replay
    assert service.get_quarantined(record_id).status == quarantine.REPLAYED
    assert "could not cut the replay publish markers" in caplog.text
    assert len(markers(env, record_id)) == 1
    wait_until_gone(env, record_id)  # the backstop TTL (1 s here)
    assert markers(env, record_id) == []
    client.close()


def test_a_retry_later_than_the_backstop_ttl_publishes_again(
    env: Env, lossy: tuple[IngestionService, AnswerLosingProxy]
) -> None:
    """The limit that stays: a marker whose replay never committed lives only its TTL (90 days; 3 s here,
    through the service's parameter), and a retry after it publishes the record again."""
    _, proxy = lossy
    client = sync_client(f"redis://{proxy.address}/0", 1.0)
    client.ping()
    service = IngestionService(env.sessions, env.registry, env.offline, client, replay_marker_ttl_s=3)
    record_id, fixed = clicks_record(env, 12, 22.0)
    lose_the_answer(service, proxy, record_id, fixed)
    assert len(markers(env, record_id)) == 1
    wait_until_gone(env, record_id)
    service.replay([record_id], {record_id: fixed}, actor="op")
    assert [event["amount"] for event in stream(env)] == ["22.0", "22.0"]
    client.close()


def test_a_record_replayed_to_the_stream_is_counted_accepted_once_by_the_stream_run(
    env: Env, tmp_path: Path
) -> None:
    # The replay run counted the published records accepted, and the stream run that read them back
    # counted them accepted again: summed over the runs, each replayed record was two accepted records.
    fixed = {}
    ids = []
    for sensor, amount in ((1, 11.0), (2, 12.0), (3, 13.0)):
        record_id, fixed[record_id] = clicks_record(env, sensor, amount)
        ids.append(record_id)
    bad = json.dumps({"sensor_id": "4", "event_ts": "not a time", "amount": "1.0"})
    still, _ = clicks_record(env, 4, 1.0)
    outcome = env.service.replay([*ids, still], {**fixed, still: bad}, actor="op")
    assert (sorted(outcome.replayed), [r.id for r in outcome.still_quarantined]) == (sorted(ids), [still])
    view, entity = env.registry.get_feature_view("clicks"), env.registry.get_entity("sensor")
    options = MaterializerOptions(count=100, block_ms=20)
    _source, materializer = started_materializer(tmp_path, env.client, env.sessions, view, entity, options)
    run_until_idle(materializer)
    assert materializer.totals.accepted == len(ids)

    runs = env.service.list_runs("clicks")
    assert sum(r.accepted for r in runs) == len(ids)  # each record once
    assert all(r.records_in == r.accepted + r.quarantined for r in runs)
    counts = sorted(
        (r.source_kind, r.records_in, r.accepted, r.quarantined, r.published)
        for r in runs
        if r.source_kind != "batch"
    )
    # The replay run: the record still bad quarantined, the others published, none accepted by it.
    assert counts == [("replay", 1, 0, 1, len(ids)), ("stream", len(ids), len(ids), 0, 0)]
