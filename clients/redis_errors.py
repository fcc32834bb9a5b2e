"""Which failures of the control plane's Redis (redis-py, used by the materializer, the online writer,
ingestion, the online cleanup and the prediction-log reader) are a moment to wait out, and which are a
setting to fix, so that a call fails UNAVAILABLE (retryable) or FAILED_PRECONDITION rather than INTERNAL:

* UNAVAILABLE: Redis cannot be reached or timed out (``ConnectionError``, ``TimeoutError``), is loading
  its dataset after a restart (``BusyLoadingError``), runs a script past its time limit (``BUSY``), is a
  replica whose primary is down or a cluster resharding (``MASTERDOWN``, ``TRYAGAIN``, ``CLUSTERDOWN``), or
  a connection still on a primary that failover made a replica (``READONLY``);
* FAILED_PRECONDITION: the credentials of ``AETHER_REDIS_URL`` are missing or wrong (``NOAUTH``,
  ``WRONGPASS``), or its user lacks a permission (``NOPERM``).

``clients`` imports no Redis library, so the errors are recognised by their class names in
``redis.exceptions`` (and BUSY, which redis-py leaves a plain ``ResponseError``, by its first word)."""

from __future__ import annotations

import grpc

_UNAVAILABLE = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
        "ClusterDownError",
        "TryAgainError",
        "ReadOnlyError",
    }
)
#: Checked first: redis-py makes AuthenticationError and AuthorizationError kinds of ConnectionError.
_MISCONFIGURED = frozenset({"AuthenticationError", "AuthorizationError", "NoPermissionError"})
_MAX_CHARS = 300


def redis_status(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status and message for ``exc`` when it is one of the Redis failures above, else None."""
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__ == "redis.exceptions"}
    if not names:
        return None
    text = str(exc).strip().partition("\n")[0][:_MAX_CHARS]  # redis-py's texts hold no URL or password
    if names & _MISCONFIGURED:
        return (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the online store's Redis refused the control plane: {text}; set the user and password "
            "of AETHER_REDIS_URL (redis://USER:PASSWORD@HOST:PORT/DB) or grant the user the permission",
        )
    if names & _UNAVAILABLE or (names & {"ResponseError"} and text.startswith("BUSY ")):
        return grpc.StatusCode.UNAVAILABLE, f"online store (Redis) unavailable: {type(exc).__name__}: {text}"
    return None
