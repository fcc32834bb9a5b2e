"""ORM tables of control_plane.tracking (registered on control_plane.db.models.Base).

Runs have an integer surrogate key (``id``) used by the per-run tables, so joins and indexes stay narrow;
the public ``run_id`` is a 32-hex-digit UUID that other concerns (the model registry) store as a plain
column. Metric points are stored in chunks: one row per (run, key, logged batch) holding the batch's
points as packed little-endian arrays (steps int64, values float64, timestamps int64 µs). A million
points logged in batches are then a few thousand rows, not a million, which is what makes logging fast;
``tracking_metric_latest`` keeps each (run, key)'s newest value and extremes current on every insert, so
comparing and sorting 10,000 runs reads one narrow indexed row per run and metric."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from clients.tracking_rules import KEY_LENGTH  # the SDK checks keys too, so the limits live in clients/
from control_plane.db.models import NAME_LENGTH, ROW_ID, Base
from control_plane.db.strings import byte_ordered_name

ID_LENGTH = 32
SENDER_ID_LENGTH = 64


class ExperimentRow(Base):
    __tablename__ = "tracking_experiments"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(byte_ordered_name(NAME_LENGTH), unique=True)
    description: Mapped[str] = mapped_column(Text)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class RunRow(Base):
    __tablename__ = "tracking_runs"
    __table_args__ = (Index("ix_tracking_runs_experiment_start", "experiment_pk", "start_time_us"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    experiment_pk: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("tracking_experiments.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(16))  # RUNNING | FINISHED | FAILED | KILLED
    start_time_us: Mapped[int] = mapped_column(BigInteger)
    end_time_us: Mapped[int] = mapped_column(BigInteger)  # 0 while running


class ParamRow(Base):
    __tablename__ = "tracking_params"

    run_pk: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TagRow(Base):
    __tablename__ = "tracking_tags"

    run_pk: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class MetricChunkRow(Base):
    """The points of one metric of one run from one logged batch, as packed arrays of ``count`` items."""

    __tablename__ = "tracking_metric_chunks"
    __table_args__ = (
        Index("ix_tracking_metric_chunks_run_key", "run_pk", "key", "id"),
        # A history page's chunks: those whose range reaches its token, by lowest step (tracking/history.py).
        Index("ix_tracking_metric_chunks_steps", "run_pk", "key", "min_step", "max_step"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ROW_ID, ForeignKey("tracking_runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    count: Mapped[int] = mapped_column(Integer)
    # The lowest and highest step of the chunk's points. Every chunk written has them (migration 0034
    # computed those of the chunks before it); NULL only for a chunk an older control plane wrote since,
    # which every history page then reads.
    min_step: Mapped[int | None] = mapped_column(BigInteger)
    max_step: Mapped[int | None] = mapped_column(BigInteger)
    steps: Mapped[bytes] = mapped_column(LargeBinary)
    values: Mapped[bytes] = mapped_column(LargeBinary)
    timestamps_us: Mapped[bytes] = mapped_column(LargeBinary)


class MetricLatestRow(Base):
    """Per (run, key): the point with the highest (step, timestamp) and the extremes over all points."""

    __tablename__ = "tracking_metric_latest"

    run_pk: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    step: Mapped[int] = mapped_column(BigInteger)
    timestamp_us: Mapped[int] = mapped_column(BigInteger)
    min_value: Mapped[float] = mapped_column(Double)
    max_value: Mapped[float] = mapped_column(Double)
    count: Mapped[int] = mapped_column(BigInteger)


class RunArtifactRow(Base):
    __tablename__ = "tracking_artifacts"

    run_pk: Mapped[int] = mapped_column(
        ROW_ID, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    uri: Mapped[str] = mapped_column(Text)
    logged_at_us: Mapped[int] = mapped_column(BigInteger)


class LogSenderRow(Base):
    """Per sender of keyed ``LogBatch`` requests: the highest sequence applied, which makes a retried
    request a no-op (see :mod:`control_plane.tracking.senders`). One row per sender, not per request: the
    table stays as small as the number of recently active clients."""

    __tablename__ = "tracking_log_senders"
    __table_args__ = (Index("ix_tracking_log_senders_applied", "applied_at_us"),)

    sender_id: Mapped[str] = mapped_column(String(SENDER_ID_LENGTH), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    first_seen_us: Mapped[int] = mapped_column(BigInteger)
    applied_at_us: Mapped[int] = mapped_column(BigInteger)  # when ``sequence`` was applied (for pruning)
