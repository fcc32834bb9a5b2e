"""Which errors of the retraining loop may pass by its next tick, and which will recur every tick."""

from __future__ import annotations

import redis.exceptions
import sqlalchemy.exc
from grpc import StatusCode

from clients.errors import AetherError

# Failures that may pass by the next tick: the database or Redis unreachable, locked or timing out.
_PASSING = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
_PASSING_CODES = (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.ABORTED)


def passing(exc: BaseException) -> bool:
    """Whether ``exc`` may not happen again on the next try (anything else will, every tick)."""
    return isinstance(exc, _PASSING) or (isinstance(exc, AetherError) and exc.code in _PASSING_CODES)
