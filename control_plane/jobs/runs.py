"""A job's tracking run ends with the job: FINISHED, FAILED or KILLED as the job SUCCEEDED, FAILED or was
CANCELLED. Every path that makes a job with a run terminal goes through :func:`end_run`: an attempt's
end, a cancel or a rejection while the job waits between attempts, and a cancel that lands while its
first start creates the run. Otherwise the run would stay RUNNING forever, on dashboards and in
comparisons, for a job that is long gone."""

from __future__ import annotations

import logging

from clients.aether.v1 import tracking_pb2
from control_plane.jobs.store import JobState
from control_plane.tracking.store import TrackingStore

_log = logging.getLogger("aether.jobs")

_RUN_STATUS = {
    JobState.SUCCEEDED: tracking_pb2.RUN_STATUS_FINISHED,
    JobState.FAILED: tracking_pb2.RUN_STATUS_FAILED,
    JobState.CANCELLED: tracking_pb2.RUN_STATUS_KILLED,
}


def end_run(tracking: TrackingStore, run_id: str, state: JobState, at_us: int, *, actor: str) -> None:
    """Ends run ``run_id`` of a job that became ``state`` (terminal) at ``at_us``. Called once the job's
    transition committed; a tracking failure is logged, not raised: the job's own end must stand."""
    try:
        tracking.update_run(run_id, _RUN_STATUS[state], at_us, actor=actor)
    except Exception:
        _log.exception("cannot end tracking run %s", run_id)
