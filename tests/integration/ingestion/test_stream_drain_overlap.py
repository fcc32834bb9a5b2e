"""Two outbox drainers whose listings overlap but differ (a fenced-out predecessor still draining; the
orphan sweep draining one run's receipts while the live materializer drains the whole outbox), against a
real redis-server, on SQLite and PostgreSQL: a drainer whose receipts another applied in part while it
wrote its offline files does not commit those files (they hold the other's rows too); it retries with
the receipts left, so each counted row is stored once and counted once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pyarrow as pa

from control_plane.ingestion.streaming.outbox import apply, drain
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.test_stream_receipts import (
    KEYS,
    RUN,
    PausingOffline,
    counts,
    put_receipt,
    stored_intents,
)


def stored_sensor_ids(env: Env) -> list[int]:
    stored = pa.Table.from_batches(list(env.offline.scan("clicks", 1)))
    return [int(i) for i in stored.column("sensor_id").to_pylist()]


def test_a_receipt_applied_by_another_drainer_meanwhile_is_not_stored_twice(any_env: Env) -> None:
    client, sessions = any_env.client, any_env.sessions
    put_receipt(client, "r0", 0)
    put_receipt(client, "r1", 10)

    def another_drainer() -> None:  # e.g. the orphan sweep, whose listing held r0 only
        assert apply(client, KEYS, sessions, any_env.offline, RUN, [KEYS.receipt("r0")]) == 1

    slow = PausingOffline(str(any_env.offline.root), another_drainer)
    # The slow drainer wrote r0's and r1's rows, then found r0 applied: it counts r1 only, from files
    # written again for r1 alone.
    assert drain(client, KEYS, sessions, slow, RUN) == 1
    assert counts(any_env) == (22, 20, 2)
    assert client.llen(KEYS.outbox) == 0
    ids = stored_sensor_ids(any_env)
    assert not {k: n for k, n in Counter(ids).items() if n > 1}, "offline rows stored twice"
    assert sorted(ids) == list(range(20))
    assert not stored_intents(any_env)


def test_a_drain_whose_receipts_shrink_twice_stores_the_rest_once(any_env: Env) -> None:
    client, sessions = any_env.client, any_env.sessions
    for n in range(3):
        put_receipt(client, f"r{n}", 10 * n)

    def applies(receipt_id: str) -> Callable[[], None]:
        def other() -> None:
            assert apply(client, KEYS, sessions, any_env.offline, RUN, [KEYS.receipt(receipt_id)]) == 1

        return other

    # The slow drainer's first try (files for r0, r1, r2) finds r0 applied meanwhile; its second (r1, r2)
    # finds r1 applied; its third counts r2, from files holding r2's rows alone.
    slow = PausingOffline(str(any_env.offline.root), applies("r0"), applies("r1"))
    assert drain(client, KEYS, sessions, slow, RUN) == 1
    assert not slow._during  # both pauses ran: the drain wrote three times
    assert counts(any_env) == (33, 30, 3)
    assert client.llen(KEYS.outbox) == 0
    assert sorted(stored_sensor_ids(any_env)) == list(range(30))
    assert not stored_intents(any_env)
