"""The stream materializer's outbox drain (``streaming/outbox.py``) announces its offline files in an
intent (``ingestion/intents.py``) before writing them, and its counting transaction deletes it; against a
real redis-server, SQLite and PostgreSQL, and real Parquet files:

* a drain SIGKILLed between its offline write and its commit (the named fault ``DiesAfterWrite``, in a
  process of its own) leaves its files and their intent; the next drain (a restarted materializer)
  writes and counts the receipts again, a recovery pass while the intent is younger than the lease
  leaves the files (the drainer may be alive), and one after it removes them: the store then holds
  exactly the rows the run counts. Before, the killed drain's rows stayed for good, stored twice;
* a drain that stalls past the lease between its write and its commit (a recovery pass run inside the
  write: a stall only code stopped there can cause) finds its intent taken and is refused at its commit
  (``IntentLost``), counting nothing and leaving no file; the receipt stays in the outbox and is drained
  by the drain's next try, or, when every try is refused, by a later drain."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import pyarrow as pa
import pytest

from clients.errors import NotFound
from control_plane.ingestion.intents import IntentLost, Recovery
from control_plane.ingestion.streaming.outbox import drain
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.test_stream_receipts import KEYS, RUN, counts, put_receipt, stored_intents
from tests.support.killed_script import run_until_killed

pytestmark = pytest.mark.integration


# One outbox drain in a process of its own, which SIGKILLs itself once its offline write has put its
# files in place, before the transaction that counts them: the named fault.
_DYING_DRAIN = """
import os, signal, sys

import redis

from control_plane.db import create_db_engine, create_session_factory
from control_plane.ingestion.streaming.outbox import drain
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.test_stream_receipts import KEYS, RUN


class DiesAfterWrite(OfflineStore):
    def write(self, view, version, table, announce=None):
        paths = super().write(view, version, table, announce)
        os.kill(os.getpid(), signal.SIGKILL)
        return paths


db_url, redis_url, offline_root = sys.argv[1:4]
sessions = create_session_factory(create_db_engine(db_url))
drain(redis.Redis.from_url(redis_url), KEYS, sessions, DiesAfterWrite(offline_root), RUN)
"""


def not_counted(env: Env) -> bool:
    """Whether the run counted nothing yet (its row is created by its first counting transaction)."""
    try:
        return counts(env) == (0, 0, 0)
    except NotFound:
        return True


def stored_sensors(env: Env) -> list[int]:
    batches = list(env.offline.scan("clicks", 1))
    return sorted(v for batch in batches for v in batch.column("sensor_id").to_pylist())


def drain_until_killed(env: Env) -> None:
    engine = env.sessions.kw["bind"]
    redis_url = "redis://{host}:{port}/{db}".format(**env.client.connection_pool.connection_kwargs)
    url = engine.url.render_as_string(hide_password=False)
    run_until_killed(_DYING_DRAIN, url, redis_url, str(env.offline.root))


def test_a_drain_killed_between_its_write_and_its_commit_leaves_no_uncounted_rows(any_env: Env) -> None:
    put_receipt(any_env.client, "r0", 0)
    drain_until_killed(any_env)
    # Written, not counted; the receipt is still in the outbox, and the intent names the files.
    assert stored_sensors(any_env) == list(range(10))
    assert not_counted(any_env)
    assert any_env.client.llen(KEYS.outbox) == 1
    (intent,) = stored_intents(any_env)
    assert intent.run_id == RUN.run_id

    # The restarted materializer drains the receipt again: written a second time, and counted once.
    assert drain(any_env.client, KEYS, any_env.sessions, any_env.offline, RUN) == 1
    assert counts(any_env) == (11, 10, 1)
    assert stored_sensors(any_env) == sorted(list(range(10)) * 2)

    # A pass while the intent is younger than the lease leaves it (its drainer may be alive) ...
    young = any_env.service.batch.recover_intents(lease_s=300)
    assert young.intents == 0
    assert len(stored_intents(any_env)) == 1
    # ... one past it removes the killed drain's files: each counted row is stored once.
    recovery = any_env.service.batch.recover_intents(lease_s=0)
    assert recovery.removed == {RUN.run_id: list(json.loads(intent.paths))}
    assert stored_sensors(any_env) == list(range(10))
    assert counts(any_env) == (11, 10, 1)
    assert not stored_intents(any_env)


class StallsPastLease(OfflineStore):
    """An offline store whose writes (the first ``stalls`` of them) each run an intent recovery pass with
    a lapsed lease once the files are in place: the drain stalled past the lease between its write and
    its commit (a stall only code stopped there can cause)."""

    def __init__(
        self, root: str, recover: Callable[[], object], stalls: int, during_write: bool = False
    ) -> None:
        super().__init__(root)
        self._recover = recover
        self.stalls = stalls
        # True: the recovery runs after the announce and before the files exist (a write slow past the
        # lease, e.g. on an object store), so it removes nothing and the files appear after it.
        self._during_write = during_write

    def write(
        self,
        view: str,
        version: int,
        table: pa.Table,
        announce: Callable[[Sequence[str]], None] | None = None,
    ) -> list[str]:
        def announce_then_stall(paths: Sequence[str]) -> None:
            assert announce is not None
            announce(paths)
            if self._during_write and self.stalls:
                self.stalls -= 1
                self._recover()

        written = super().write(view, version, table, announce_then_stall)
        if not self._during_write and self.stalls:
            self.stalls -= 1
            self._recover()
        return written


@pytest.mark.parametrize("during_write", [False, True], ids=["after-write", "during-write"])
def test_a_drain_stalled_past_the_lease_is_refused_and_tried_again(any_env: Env, during_write: bool) -> None:
    put_receipt(any_env.client, "r0", 0)
    passes: list[Recovery] = []
    stalling = StallsPastLease(
        str(any_env.offline.root),
        lambda: passes.append(any_env.service.batch.recover_intents(lease_s=0)),
        stalls=1,
        during_write=during_write,
    )
    # The first try is refused at its commit; the second counts. Its files were removed by the recovery
    # (after-write), or appeared after the recovery took the intent (during-write): the refused drain
    # removes them itself, or they would stay stored, uncounted, with no intent left to recover them.
    assert drain(any_env.client, KEYS, any_env.sessions, stalling, RUN) == 1
    (taken,) = passes
    assert taken.intents == 1 and len(taken.removed[RUN.run_id]) == 1
    assert counts(any_env) == (11, 10, 1)
    assert stored_sensors(any_env) == list(range(10))
    assert any_env.client.llen(KEYS.outbox) == 0
    assert not stored_intents(any_env)


def test_a_drain_refused_at_every_try_keeps_its_receipt_for_a_later_drain(any_env: Env) -> None:
    put_receipt(any_env.client, "r0", 0)
    stalling = StallsPastLease(
        str(any_env.offline.root),
        lambda: any_env.service.batch.recover_intents(lease_s=0),
        stalls=1_000,  # every try (``outbox.INTENT_TRIES``)
    )
    with pytest.raises(IntentLost):
        drain(any_env.client, KEYS, any_env.sessions, stalling, RUN)
    # Nothing counted, nothing stored, the receipt still waiting.
    assert not_counted(any_env)
    assert stored_sensors(any_env) == []
    assert any_env.client.llen(KEYS.outbox) == 1
    assert not stored_intents(any_env)
    # A later drain (the materializer's next, or its successor's) stores and counts it once.
    assert drain(any_env.client, KEYS, any_env.sessions, any_env.offline, RUN) == 1
    assert counts(any_env) == (11, 10, 1)
    assert stored_sensors(any_env) == list(range(10))
    assert any_env.client.llen(KEYS.outbox) == 0
