"""A streaming view's replay publishes each record to its Redis stream once, even when the answer to
its publish is lost: a real redis-server behind a TCP proxy that lets the request through (Redis runs
it) and swallows the answer, so the replay fails not knowing the outcome and hands the record back; the
retry must find it published instead of publishing it again (the materializer would apply both)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from clients.errors import FailedPrecondition
from control_plane.ingestion import quarantine
from control_plane.ingestion.service import IngestionService
from control_plane.redis_clients import sync_client
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.test_replay_claims import clicks_record, replay_counts
from tests.support.tcp_proxy import AnswerLosingProxy


@pytest.fixture
def lossy(env: Env, redis_url: str) -> Iterator[tuple[IngestionService, AnswerLosingProxy]]:
    """The env's service on a client (1 s socket timeout) whose Redis answers the proxy can lose."""
    proxy = AnswerLosingProxy(redis_url.removeprefix("redis://").rsplit("/", 1)[0])
    client = sync_client(f"redis://{proxy.address}/0", 1.0)
    client.ping()  # connected before the answers are lost
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
    assert replay_counts(env) == (1, 1, 0)  # counted once, by the replay that committed it


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
    assert replay_counts(env) == (1, 1, 0)


def test_a_replay_publishes_each_record_once(env: Env) -> None:
    """The path with nothing lost: every record published once, in one script, and marked replayed."""
    first, first_fixed = clicks_record(env, 6, 16.0)
    second, second_fixed = clicks_record(env, 7, 17.0)
    outcome = env.service.replay([first, second], {first: first_fixed, second: second_fixed}, actor="op")
    assert sorted(outcome.replayed) == sorted([first, second])
    assert sorted(event["amount"] for event in stream(env)) == ["16.0", "17.0"]
    assert stream(env)[0] == json.loads(first_fixed)  # the event's fields, as text
    assert {env.service.get_quarantined(i).status for i in (first, second)} == {quarantine.REPLAYED}
    assert replay_counts(env) == (2, 2, 0)
