"""Which errors of the retraining loop may pass by its next tick, and which will recur every tick."""

from __future__ import annotations

from grpc import StatusCode

from clients.errors import AetherError
from control_plane.background import TRANSIENT_FAILURES

_PASSING_CODES = (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.ABORTED)


def passing(exc: BaseException) -> bool:
    """Whether ``exc`` may not happen again on the next try (anything else will, every tick)."""
    if isinstance(exc, TRANSIENT_FAILURES):
        return True
    return isinstance(exc, AetherError) and exc.code in _PASSING_CODES
