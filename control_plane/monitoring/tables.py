"""ORM tables of control_plane.monitoring (registered on control_plane.db.models.Base).

* ``reference_profiles``: which artifact holds the drift reference of a model version (and of its
  outputs). Model name and version are plain columns, not a foreign key: the registry's rows come from
  another migration branch, so the link is checked in code when it is made.
* ``monitor_configs``: a deployment's monitor settings as the ``MonitorConfig`` message in JSON form.
* ``drift_reports``: one row per scored window, per-feature results as JSON, and the rows the monitor
  dropped (late, another feature count) since the previous window.
* ``prediction_index``: (deployment, request id, row) → (version, variant, prediction time, prediction,
  time indexed), written by the monitor as it reads the served entries of the prediction log, so that
  labels arriving later can be joined. The deployment is part of the key: request ids are chosen by
  clients, and two deployments given the same one each keep their own prediction. Pruned after a
  retention period.
* ``feedback``: labels by (request id, row, deployment); deployment ``""`` is a label for that request id
  in every deployment. ``joined`` is false while no prediction it applies to has been seen (orphaned
  feedback); indexing the prediction later sets it.
* ``feedback_counts``: ``orphaned``, the orphaned feedback rows stored (kept as they change, so no
  write counts the table), and ``orphans_expired``, the orphaned labels retention deleted so far.
* ``performance_alerts``: quality windows already alerted on, so that each alerts once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Double, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clients.serving_rules import REQUEST_ID_LENGTH as REQUEST_ID_LENGTH  # the rule Predict keeps to
from control_plane.db.models import NAME_LENGTH, ROW_ID, Base

SHA256_LENGTH = 64
ACTOR_LENGTH = 128
STATUS_LENGTH = 32


class ReferenceProfileRow(Base):
    __tablename__ = "reference_profiles"

    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifact_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    feature_names: Mapped[list[str]] = mapped_column(JSON)
    output_artifact_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))  # "" = none
    output_names: Mapped[list[str]] = mapped_column(JSON)
    n_rows: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class MonitorConfigRow(Base):
    __tablename__ = "monitor_configs"

    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class DriftReportRow(Base):
    __tablename__ = "drift_reports"
    __table_args__ = (Index("ix_drift_reports_deployment_end", "deployment", "window_end_us"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    window_start_us: Mapped[int] = mapped_column(BigInteger)
    window_end_us: Mapped[int] = mapped_column(BigInteger)
    n_rows: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    prediction_status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    test: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    threshold: Mapped[float] = mapped_column(Double)
    correction: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    drifted_share: Mapped[float] = mapped_column(Double)
    drift_share_threshold: Mapped[float] = mapped_column(Double)
    #: [FeatureDrift in protobuf JSON form, ...] in profile order; NaN scores are stored as null.
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    #: Rows dropped since the previous window closed (0 on reports stored before they were counted).
    late_rows: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    mismatched_rows: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class PredictionIndexRow(Base):
    __tablename__ = "prediction_index"
    __table_args__ = (
        Index("ix_prediction_index_deployment_ts", "deployment", "ts_us"),
        # Labels without a deployment look their predictions up by request id alone.
        Index("ix_prediction_index_request", "request_id", "row"),
    )

    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    ts_us: Mapped[int] = mapped_column(BigInteger)
    #: The row of the prediction output, as a list of numbers.
    prediction: Mapped[list[float]] = mapped_column(JSON)
    #: True when the output holds class codes (an integer tensor) rather than scores or values.
    prediction_is_label: Mapped[bool] = mapped_column(Boolean)
    #: When the monitor indexed the row, by the database's clock (None: indexed before migration 0035): a
    #: label waiting for it joins then, and counts from then in the retraining loop's label volume
    #: (``observe.label_volume``).
    indexed_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class FeedbackRow(Base):
    __tablename__ = "feedback"
    #: The prune deletes the labels of one kind recorded before a horizon (``feedback_prune.prune``); every
    #: lookup by ``joined`` alone uses it too (migration 0027).
    __table_args__ = (Index("ix_feedback_joined_recorded", "joined", "recorded_at_us"),)

    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: "" = the label applies to this request id's prediction in every deployment.
    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True, server_default="")
    label: Mapped[float] = mapped_column(Double)
    joined: Mapped[bool] = mapped_column(Boolean)
    #: When the label was first recorded as it is (a changed label: recorded anew), by the database's clock.
    recorded_at_us: Mapped[int] = mapped_column(BigInteger)


class FeedbackCountRow(Base):
    __tablename__ = "feedback_counts"

    name: Mapped[str] = mapped_column(String(STATUS_LENGTH), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class PerformanceAlertRow(Base):
    __tablename__ = "performance_alerts"

    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    window_start_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    metric: Mapped[str] = mapped_column(String(NAME_LENGTH))
    value: Mapped[float] = mapped_column(Double)
    threshold: Mapped[float] = mapped_column(Double)
    details: Mapped[str] = mapped_column(Text)
    alerted_at_us: Mapped[int] = mapped_column(BigInteger)
