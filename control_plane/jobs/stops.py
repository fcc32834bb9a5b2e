"""The stop of a running attempt (a cancel, a timeout) as the supervisor carries it out, apart from the
supervisor's loop (``supervisor.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.jobs.tables import JobRow


@dataclass
class Stop:
    """A stop in progress: why (cancel | timeout), when SIGTERM went out, whether SIGKILL followed."""

    kind: str
    since_us: int
    killed: bool = False


def due_stop(row: JobRow, now_us: int) -> tuple[Stop, str] | None:
    """The stop that ``row``'s running attempt is due for at ``now_us``, with why in its log's words (a
    cancel requested, its timeout passed); None when none is."""
    if row.cancel_requested:
        return Stop("cancel", now_us), row.cancel_reason
    if row.timeout_s > 0 and now_us - row.attempt_started_at_us >= row.timeout_s * 1e6:
        return Stop("timeout", now_us), f"timeout after {row.timeout_s:g}s"
    return None
