"""ORM tables of control_plane.ingestion (registered on control_plane.db.models.Base).

* ``ingestion_runs``: one row per ingestion run (a batch materialization, a replay, or one stream
  materializer's consumer group, which is one long run across restarts) with its counters. The counters
  move in the same transaction as the quarantine rows they count, so ``records_in == accepted +
  quarantined`` holds after every commit. A replay of a streaming view's records counts those it
  publishes to the view's stream ``published``, outside ``records_in``: the stream run that reads them
  back counts each in, accepted or quarantined (counted by both, a record was accepted twice).
* ``quarantine``: one row per rejected record: view, version, source, the original payload (JSON text),
  the reasons, and a status (quarantined -> replayed | discarded | superseded). ``(run_id, record_key)`` is
  unique, so re-inserting a redelivered stream message is a no-op; ``(view, version, source_id, record_key)``
  is indexed for finding the copies a rerun of the same source supersedes. An ``online_pending`` record
  that a replay stored keeps the stored row's ingestion time (``ingested_at_us``) for its online write.
* ``ingestion_receipts``: the stream materializer's applied outbox receipts (see
  ``streaming/outbox.py``); a receipt applied twice is recognised by its id and skipped. A row is
  pruned once its receipt is gone from Redis (no drainer can apply it again then).
* ``ingestion_intents``: one row per chunk (or replay group) whose offline files are being written and
  not yet counted (``intents.py``); none is left once every run has committed or been recovered.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.models import NAME_LENGTH, ROW_ID, Base

RUN_ID_LENGTH = 200
SOURCE_LENGTH = 1024


class IngestionRunRow(Base):
    __tablename__ = "ingestion_runs"

    run_id: Mapped[str] = mapped_column(String(RUN_ID_LENGTH), primary_key=True)
    view: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    source_kind: Mapped[str] = mapped_column(String(16))  # batch | stream | replay
    source_id: Mapped[str] = mapped_column(String(SOURCE_LENGTH))
    records_in: Mapped[int] = mapped_column(BigInteger)
    accepted: Mapped[int] = mapped_column(BigInteger)
    quarantined: Mapped[int] = mapped_column(BigInteger)
    #: Records a replay published to its streaming view's stream, for the stream run to count (not in
    #: ``records_in``); 0 for every other run.
    published: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    started_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class QuarantineRow(Base):
    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("run_id", "record_key", name="uq_quarantine_run_record"),
        Index("ix_quarantine_view_status", "view", "status"),
        Index("ix_quarantine_source_record", "view", "version", "source_id", "record_key"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(RUN_ID_LENGTH))
    #: The record's identity within its run: a stream message id, or the row number in the batch.
    record_key: Mapped[str] = mapped_column(String(200))
    view: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    source_kind: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(SOURCE_LENGTH))
    payload: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(16)
    )  # quarantined | replaying | replayed | discarded | superseded
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
    #: An ``online_pending`` record's ingestion time (µs): the ``ingested_ts`` of the row a replay stored
    #: offline for it, which its online value, written later, carries as its write time, so that a tie of
    #: event times goes to the same row online as in training sets. None for every other record, and for
    #: one committed before migration 0032 (its online value is stamped when it is written).
    ingested_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class IngestionReceiptRow(Base):
    __tablename__ = "ingestion_receipts"

    receipt_id: Mapped[str] = mapped_column(String(RUN_ID_LENGTH), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(RUN_ID_LENGTH))
    applied_at_us: Mapped[int] = mapped_column(BigInteger)


class IngestionIntentRow(Base):
    """A chunk's offline files being written (``intents``): committed before the write, deleted by the
    transaction that counts the chunk, or by the recovery pass once its owner let it lapse and its files
    are removed. ``updated_at_us`` is the owner's lease stamp, and once a recovery pass took it
    (``reclaiming``) and failed to remove its files, the time of that failure: passes take the oldest
    first, so one that keeps failing does not starve the others. ``invalid``: an intent the recovery
    will not act on (its paths unreadable or not its store's files), kept for an operator."""

    __tablename__ = "ingestion_intents"
    __table_args__ = (
        Index("ix_ingestion_intents_state_updated", "state", "updated_at_us"),
        Index("ux_ingestion_intents_token", "token", unique=True),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    #: A random identity (uuid4 hex) never reused, unlike ``id`` (SQLite reuses the highest id once its
    #: row is deleted): the chunk's transaction, its drop and the recovery match on both.
    token: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str] = mapped_column(String(RUN_ID_LENGTH))  # the batch run or replay run
    chunk: Mapped[int] = mapped_column(Integer)  # the run's chunk number (a replay group's: 0)
    view: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    paths: Mapped[str] = mapped_column(Text)  # JSON list of the offline store's filesystem paths
    state: Mapped[str] = mapped_column(String(16))  # writing | reclaiming | invalid
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
