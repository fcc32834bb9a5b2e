"""What the retraining loop reads for one deployment: trigger observations from the monitor's tables
(read-only), and the training spec of the serving model version.

* performance: the monitor's complete quality windows
  (:func:`control_plane.monitoring.performance.performance`) since the last trigger (at most two days
  back, and at most as many windows as the monitor answers for in one query: short windows look back
  less) that held enough labels, with their counts of labels and of unusable predictions (a window whose
  every labelled prediction was NaN holds no metric, and only that count says it degraded). A window still
  in progress is left out, as the monitor's own alerting does: it ends after every trigger, so it would
  count as fresh again after each cooldown;
* drift: the monitor's stored drift reports over the same span, ending by now (each window's start is
  kept: :func:`.triggers.decide` leaves out those that started before the serving champion did);
* new labels: feedback of the deployment's predictions that joined after the last trigger's label
  period and by now, by the database's clock that labels are stamped by (:func:`label_volume`: each
  label counts in exactly one period);
* the training spec: the job whose tracking run produced the champion version (``JobRow.run_id``, or the
  run's ``aether.job_id`` tag), rebuilt for the retraining over the trigger config's entity rows (see
  :func:`retraining_spec`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import struct_pb2
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import jobs_pb2
from clients.aether.v1 import monitoring_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import FailedPrecondition, NotFound
from control_plane.db import read_session
from control_plane.db.clock import database_now_us
from control_plane.jobs.store import spec_from_dict
from control_plane.jobs.tables import JobRow
from control_plane.model_registry.registry import ModelRegistry
from control_plane.monitoring.config import max_range_us
from control_plane.monitoring.feedback import settled_labels, with_labels
from control_plane.monitoring.performance import performance
from control_plane.monitoring.reports import query_reports
from control_plane.monitoring.tables import PredictionIndexRow
from control_plane.offline.datasets import read_dataset_record
from control_plane.offline.store import OfflineStore
from control_plane.retraining.triggers import DriftObservation, PerformanceObservation
from control_plane.tracking.tables import RunRow, TagRow

LOOKBACK_US = 2 * 24 * 3600 * 1_000_000
JOB_ID_TAG = "aether.job_id"
_NAME_CHARS = re.compile(r"[^a-z0-9._-]")


def performance_windows(
    sessions: sessionmaker[Session], monitor: mpb.MonitorConfig, since_us: int, now_us: int
) -> list[PerformanceObservation]:
    if monitor.task == mpb.TASK_TYPE_UNSPECIFIED:
        return []
    since = max(since_us, now_us - performance_lookback_us(monitor))
    if _empty_span(since, now_us):
        return []
    found = performance(sessions, monitor, since, now_us)
    scored = (mpb.PERFORMANCE_STATUS_OK, mpb.PERFORMANCE_STATUS_DEGRADED)
    return [
        PerformanceObservation(w.end_us, dict(w.metrics), w.n_labels, w.n_invalid_predictions, w.start_us)
        for w in found.windows
        if w.status in scored and w.end_us <= now_us
    ]


def _empty_span(since_us: int, now_us: int) -> bool:
    """Whether no window can have ended in ``(since_us, now_us]``: a last trigger at or after now (another
    control plane's, whose clock runs ahead of this one's). Asked for that span, the monitor answered
    INVALID_ARGUMENT (since_us must be before until_us): each tick decided nothing for the deployment,
    and a person's TriggerNow got that error back."""
    return since_us >= now_us


def performance_lookback_us(monitor: mpb.MonitorConfig) -> int:
    """Two days, or less where two days hold more windows than one performance query may span."""
    width_us = round(monitor.performance_window_seconds * 1e6)
    step_us = max(1, round(monitor.performance_step_seconds * 1e6))
    # At least 999 steps for every config accepted; cut as width / step windows fewer than the cap, it
    # fell back to one step past 1998 steps a width, which still overlapped more windows than the cap.
    return max(1, min(LOOKBACK_US, max_range_us(width_us, step_us)))


def drift_reports(
    sessions: sessionmaker[Session], deployment: str, since_us: int, now_us: int
) -> list[DriftObservation]:
    since = max(since_us, now_us - LOOKBACK_US)
    if _empty_span(since, now_us):
        return []
    # Only reports that ended by now, as for quality windows: one ending later (a data plane clock
    # ahead of ours) would count as fresh after every trigger, and take one of the 50 places.
    reports = query_reports(sessions, deployment, since_us=since + 1, until_us=now_us + 1, limit=50)
    return [
        DriftObservation(
            r.window_end_us,
            r.status == mpb.DRIFT_STATUS_DRIFT,
            r.prediction_status == mpb.DRIFT_STATUS_DRIFT,
            r.drifted_share,
            r.window_start_us,
        )
        for r in reports
    ]


@dataclass(frozen=True)
class LabelVolume:
    """What one tick's label-volume read found: ``count`` labels joined in the period, which ends at
    ``until_us`` (the database's clock), where the next period starts once this tick triggers."""

    count: int
    until_us: int
    #: The database's clock as the tick read it, under the writers' lock (0: the tick did not count).
    read_at_us: int = 0


def label_volume(sessions: sessionmaker[Session], deployment: str, since_us: int) -> LabelVolume:
    """Labels of ``deployment``'s predictions that joined after ``since_us`` (the end of the last
    triggering tick's period, :func:`.records.last_label_period_end`) and by now, now being the database's
    clock read under the label writers' lock (:func:`settled_labels`), the clock they stamp by; the period
    ends just before that instant: every label stamped by the period's end has committed and is counted,
    and any other, one stamped in the read's instant after it too, counts in the next period. The period
    ended at the tick's own clock before: a label written through a control plane whose clock ran behind
    the loop's was stamped at or before the tick's time after the tick had read, and counted in no
    period."""
    with settled_labels(sessions) as session:
        read_at_us = database_now_us(session)
        # Just before the read's instant: a writer after the read (once this session lets go of the lock)
        # may stamp that same instant (SQLite's clock is in milliseconds), and so counts in the next
        # period; a row stamped before that instant was stamped before the read, under the lock: visible.
        until_us = read_at_us - 1
        return LabelVolume(_joined_between(session, deployment, since_us, until_us), until_us, read_at_us)


def label_period_end(sessions: sessionmaker[Session]) -> int:
    """Where a tick that does not count labels (the rule is off) ends its label-volume period: just before
    the database's now, by which labels are stamped and counted (:func:`label_volume`)."""
    with read_session(sessions) as session:
        return database_now_us(session) - 1


def new_labels(sessions: sessionmaker[Session], deployment: str, since_us: int, until_us: int) -> int:
    """Labels of ``deployment``'s predictions that joined in ``(since_us, until_us]`` (µs of the database's
    clock, which labels are stamped by): a label joins its prediction at the later of its recorded time
    and the prediction's indexed time. By recorded time alone, a label recorded before a trigger whose
    prediction was indexed after it (an orphan until then) was in no period: not joined when the
    trigger's tick counted, and recorded before the next period. Rows indexed before their time was kept
    count by the label's. Read once every label or index row stamped by ``until_us`` has committed
    (:func:`settled_labels`): one stamped before the tick and committed after a plain read was in neither
    period. The loop counts through :func:`label_volume`, whose period ends at the database's now."""
    with settled_labels(sessions) as session:
        return _joined_between(session, deployment, since_us, until_us)


def _joined_between(session: Session, deployment: str, since_us: int, until_us: int) -> int:
    indexed_at = func.coalesce(PredictionIndexRow.indexed_at_us, 0)
    labelled = with_labels(indexed_at.label("indexed_at_us")).where(
        PredictionIndexRow.deployment == deployment
    )
    joined = labelled.subquery()
    joined_at = case(
        (joined.c.indexed_at_us > joined.c.recorded_at_us, joined.c.indexed_at_us),
        else_=joined.c.recorded_at_us,
    )
    count = session.execute(
        select(func.count()).select_from(joined).where(joined_at > since_us, joined_at <= until_us)
    ).scalar_one()
    return int(count)


def training_spec(sessions: sessionmaker[Session], run_id: str) -> tuple[str, jobs_pb2.JobSpec] | None:
    """(job id, spec) of the job that ran ``run_id``, or None."""
    if not run_id:
        return None
    with read_session(sessions) as session:
        tagged = (
            select(TagRow.value)
            .join(RunRow, RunRow.id == TagRow.run_pk)
            .where(RunRow.run_id == run_id, TagRow.key == JOB_ID_TAG)
        )
        row = session.execute(
            select(JobRow)
            .where(or_(JobRow.run_id == run_id, JobRow.job_id.in_(tagged)))
            .order_by(JobRow.submitted_at_us.desc())
            .limit(1)
        ).scalar_one_or_none()
        return (row.job_id, spec_from_dict(row.spec)) if row is not None else None


def version_of_run(registry: ModelRegistry, model_name: str, run_id: str) -> int | None:
    """The newest version of ``model_name`` registered from the run ``run_id`` (a retraining job's)."""
    if not run_id:
        return None
    versions, token = registry.list_versions(model_name, page_size=1000)
    while token:
        more, token = registry.list_versions(model_name, page_size=1000, page_token=token)
        versions.extend(more)
    matching = [v.version for v in versions if v.run_id == run_id]
    return max(matching) if matching else None


def job_ending(sessions: sessionmaker[Session], suffix: str, since_us: int) -> str | None:
    """The id of the first job submitted at or after ``since_us`` whose name ends with ``suffix``."""
    with read_session(sessions) as session:
        return session.execute(
            select(JobRow.job_id)
            .where(JobRow.name.endswith(suffix, autoescape=True), JobRow.submitted_at_us >= since_us)
            .order_by(JobRow.submitted_at_us)
            .limit(1)
        ).scalar_one_or_none()


def retraining_spec(
    original: jobs_pb2.JobSpec, config: pb.TriggerConfig, model_name: str, now_us: int, offline: OfflineStore
) -> jobs_pb2.JobSpec:
    """The original spec over the latest data window: a new job name, the entity rows of the trigger
    config (when it names some, see :func:`window_dataset`), and the registered model name pinned so the
    new version lands on the deployed model."""
    spec = jobs_pb2.JobSpec()
    spec.CopyFrom(original)
    base = _NAME_CHARS.sub("-", original.name.lower())[:100] or "model"
    spec.name = f"{base}-retrain-{now_us // 1_000_000}"
    if config.entity_rows_path:
        spec.dataset.CopyFrom(window_dataset(original, config.entity_rows_path, offline))
    spec.hyperparameters.fields["model_name"].CopyFrom(struct_pb2.Value(string_value=model_name))
    return spec


def window_dataset(
    original: jobs_pb2.JobSpec, entity_rows_path: str, offline: OfflineStore
) -> jobs_pb2.DatasetRef:
    """The point-in-time query the retraining trains on: ``entity_rows_path`` joined with the features
    the champion's training set had. A query spec keeps its features; a recorded dataset (``dataset_hash``)
    is the same query over older rows, so its record's features and timestamp column are taken; a spec
    with neither takes its ``features``. Only point-in-time specs were rebuilt before, and a recorded
    dataset's job trained again on the old rows while its decision said it trained on the new window.
    FAILED_PRECONDITION (the retraining blocked, with this reason) when no feature list is known."""
    query = jobs_pb2.PointInTimeQuery(entity_rows_path=entity_rows_path)
    source = original.dataset.WhichOneof("source")
    if source == "point_in_time":
        query.features.extend(original.dataset.point_in_time.features)
        query.timestamp_column = original.dataset.point_in_time.timestamp_column
    elif source == "dataset_hash":
        dataset_hash = original.dataset.dataset_hash
        try:
            record = read_dataset_record(offline, dataset_hash)
        except NotFound as exc:
            raise FailedPrecondition(
                f"the training spec's dataset cannot be rebuilt over entity rows {entity_rows_path!r}: {exc}"
            ) from exc
        query.features.extend(str(f) for f in record.get("features") or original.features)
        query.timestamp_column = str((record.get("entity_rows") or {}).get("timestamp_column") or "")
    else:
        query.features.extend(original.features)
    if not query.features:
        what = f"dataset {original.dataset.dataset_hash}" if source == "dataset_hash" else "training spec"
        raise FailedPrecondition(
            f"the trigger config names entity rows {entity_rows_path!r}, but the champion's {what} lists no "
            "features to join them with: nothing to train on them; name the features in the training spec "
            "or clear entity_rows_path"
        )
    return jobs_pb2.DatasetRef(point_in_time=query)
