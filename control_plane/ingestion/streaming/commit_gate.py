"""The stream materializer's commit of a batch, ordered against a retire or delete of its view version in
SQL: the version's status is read, with the row locked, in a SQL transaction that stays open around the
batch's Redis commit (``commit.Committer.commit``).

The materializer read the status only every ``status_every_s`` (``status_check.py``), so a batch it
committed less than that after a retire had its online values written and was stored and counted, for a
version nothing serves. A read before each commit alone would still let a retire commit between the
read and the commit; so the read holds the version row until the batch's Redis transaction has run, and
a retire (or delete) that comes meanwhile waits for it:

- SQLite (WAL) serializes writers: the transaction is a ``write_session``, which begins with ``BEGIN
  IMMEDIATE`` and so holds the database's write lock before the read. A retire that committed before
  it is seen (the write lock's holder reads the newest data); one that comes after waits, in its own
  ``BEGIN IMMEDIATE``, until the batch is committed (the busy timeout, 30 s, is far above one Redis
  transaction).
- PostgreSQL (READ COMMITTED): a plain SELECT could read the row as it was while a retire was committing,
  and the retire would not wait for anything. The read is ``SELECT ... FOR SHARE`` of the version row
  (``version_gate.status_query``), a lock the retire's UPDATE of the same row, and a delete's DELETE of it,
  wait for; one already updating it makes the read wait for its end and return the row as it committed.

So either the batch's Redis transaction ran before the retire's SQL transaction committed (the batch is
one committed before the retire: stored and counted, as a batch run's chunk begun before one), or the
read finds the version retired or deleted, and the batch is not committed at all: its Redis transaction
(online values, applied ids, receipt, XACK) is never sent, so there is no online value, no receipt in
the outbox and thus no offline history row nor count of it; its messages stay pending in the stream,
unacknowledged, as every later one does once a retire stops the materializer. The materializer then
stops as the periodic check does (``ViewRetired`` after draining the outbox, whose receipts all came
before the retire; ``ViewDeleted`` after its delete path). The window state it applied the batch to is
in memory only, and goes with it.

Why around the Redis transaction and not in the outbox drain's SQL transaction (which stores the
offline rows and counts them, several batches at a time, ``outbox.py``): a batch is committed by its Redis
transaction; by its drain, its online values are written and its messages acknowledged, so a drain
refusing it would leave them online and uncounted for good (no materializer drains a retired version's
outbox), and could not tell a receipt committed before the retire from one committed after it. With the
gate every receipt in the outbox was committed before the retire, and draining them after it (as
``ViewRetired`` does) stores and counts only such batches.

One gap is left, on PostgreSQL: the server releases a connection's locks when it loses the connection,
and the materializer learns of it only at its next statement. A connection that drops during the Redis
round trip lets a retire commit before that batch's Redis transaction; the gate's own COMMIT then fails,
and the commit is tried again, which finds the version retired and stops after draining the outbox, that
batch with it (stored and counted, as one committed before the retire). SQLite's write lock is the
process's own and lasts as long as it. A second gap, on both: a Redis that stops answering after the
EXEC was sent (frozen, or a partition that sends no RST) times the exchange out, the gate's transaction
ends, and Redis may still run the buffered EXEC once it answers again; a retire committed in between
precedes that batch, which the retry then finds committed (a lost reply) and counts.

The cost: one indexed query (by view name and version) and one short transaction per committed batch;
on SQLite the write lock is held for one Redis round trip (the EXEC: a retry watches its keys again
before taking the gate, ``Committer.watch_again``). A Redis that stops answering during that EXEC holds
the lock for up to the Redis reply timeout (``AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S``, 5 s by default),
once: the retries then meet the silent Redis outside the gate. Other writers wait meanwhile, and one
whose busy timeout (30 s) is shorter than a Redis timeout raised above it fails with "database is
locked"; keep that timeout below the busy timeout on SQLite. A database that cannot answer is waited out
as the outbox drain waits it out (``drain_retry.py``): the batch is not committed without the read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import write_session
from control_plane.ingestion.version_gate import state_in, status_query


class CommitGate:
    """Holds a view version open (not retired or deleted) for the length of a batch's commit."""

    def __init__(self, sessions: sessionmaker[Session], view: pb.FeatureView) -> None:
        self._sessions, self._view = sessions, view
        self._query = status_query(view, hold=True)  # built once: building it took most of a read's time

    @contextmanager
    def held(self) -> Iterator[str | None]:
        """Yields None while the version takes rows, and then holds it so (see the module docstring)
        until the block ends; ``version_gate.RETIRED`` or ``DELETED`` once it does not, and the caller
        commits nothing. The transaction writes nothing; it only ends the lock."""
        with write_session(self._sessions) as session:
            yield state_in(session, self._view, self._query)
