"""ORM tables of control_plane.retraining (registered on control_plane.db.models.Base).

* ``retraining_configs``: a deployment's ``TriggerConfig`` in protobuf JSON form.
* ``retraining_decisions``: every trigger decision that retrained, and every tick's decision that did
  not when it differs from the previous one of the deployment (so a quiet deployment does not fill the
  table), with what came of it (``outcome``) and the job it submitted.
* ``retraining_evaluations``: one challenger/champion evaluation per finished retraining job.
* ``retraining_promotions``: the promotion state of each evaluated challenger.
* ``retraining_ticks``: when the loop last decided for each deployment, which is where the schedule
  rule's next window starts; stored, not kept in memory, so a restart does not lose a cron minute.

Deployment, model and job ids are plain columns, not foreign keys: those rows belong to other concerns
(and other migration branches) and may be deleted while this history stays.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Double, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.models import NAME_LENGTH, ROW_ID, Base

ACTOR_LENGTH = 128
STATUS_LENGTH = 32
JOB_ID_LENGTH = 64


class RetrainingConfigRow(Base):
    __tablename__ = "retraining_configs"

    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class RetrainingDecisionRow(Base):
    __tablename__ = "retraining_decisions"
    __table_args__ = (Index("ix_retraining_decisions_deployment_at", "deployment", "at_us"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH))
    at_us: Mapped[int] = mapped_column(BigInteger)  # decided: the trigger step's start
    # Written: what the submit grace of a ``submitting`` decision runs from (a step can take long).
    stored_at_us: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    triggered: Mapped[bool] = mapped_column(Boolean)
    rules: Mapped[list[str]] = mapped_column(JSON)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(STATUS_LENGTH), index=True)
    job_id: Mapped[str] = mapped_column(String(JOB_ID_LENGTH))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    champion_version: Mapped[int] = mapped_column(Integer)
    #: A trigger's label-volume period's end (the database's clock, as labels are stamped), where the next
    #: period starts; None before migration 0036 (the next period starts at ``at_us``) and when no trigger.
    labels_until_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RetrainingEvaluationRow(Base):
    __tablename__ = "retraining_evaluations"
    __table_args__ = (Index("ix_retraining_evaluations_deployment", "deployment", "id"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH))
    decision_id: Mapped[int] = mapped_column(ROW_ID)
    job_id: Mapped[str] = mapped_column(String(JOB_ID_LENGTH))
    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    champion_version: Mapped[int] = mapped_column(Integer)
    challenger_version: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    metric: Mapped[str] = mapped_column(String(NAME_LENGTH))
    champion_metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    challenger_metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    champion_p95_ms: Mapped[float] = mapped_column(Double)
    challenger_p95_ms: Mapped[float] = mapped_column(Double)
    holdout_rows: Mapped[int] = mapped_column(BigInteger)
    holdout_source: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class RetrainingPromotionRow(Base):
    __tablename__ = "retraining_promotions"

    evaluation_id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH), index=True)
    reason: Mapped[str] = mapped_column(Text)
    agreement_rate: Mapped[float | None] = mapped_column(Double, nullable=True)
    phase_started_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class RetrainingTickRow(Base):
    __tablename__ = "retraining_ticks"

    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    at_us: Mapped[int] = mapped_column(BigInteger)
