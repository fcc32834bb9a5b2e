"""Which failures of the metadata database are transient, so that a call fails UNAVAILABLE (retryable)
rather than INTERNAL (a bug): the database is locked or busy (SQLite, past its busy timeout), cannot be
reached or is restarting (PostgreSQL connection failures, SQLSTATE class 08, administrator or crash
shutdown, not yet accepting connections, too many connections), a transaction lost a conflict
(serialization failure, deadlock detected), or the connection pool stayed full.

Everything else stays INTERNAL: "no such table", a constraint or a type the code got wrong are bugs, and
so are a wrong password or a missing database (a configuration to fix, not a moment to wait out).

``clients`` imports no database library (only grpc, numpy and generated code), so the errors are
recognised by their class names and the attributes SQLAlchemy and the drivers set, not by ``isinstance``."""

from __future__ import annotations

import re

#: SQLSTATEs worth a retry besides class 08 (connection exception).
_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down, in recovery)
    }
)
#: What the server answers a new connection while it cannot serve one (psycopg gives no SQLSTATE then):
#: PostgreSQL's FATAL texts for 57P03 while starting, recovering or stopping, and for 53300. After a crash
#: the server replays its WAL and answers "not yet accepting connections" until recovery is consistent
#: (PostgreSQL 14+); a standby with hot_standby off answers "not accepting connections" until promoted.
_SERVER_NOT_READY = (
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "sorry, too many clients already",
    "remaining connection slots are reserved",  # the rest of the text differs between versions
)
_SQLITE_BUSY = ("database is locked", "database is busy")
#: Credentials a driver's message might quote from a URL or a connection string.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
_MAX_CHARS = 300


def database_unavailable(exc: BaseException) -> str | None:
    """The UNAVAILABLE message for ``exc`` when it is a transient failure of the metadata database
    (``metadata database unavailable: <the driver's first line>``, without credentials), else None."""
    if _from_sqlalchemy(exc, "TimeoutError"):  # the pool had no free connection within its timeout
        return _message(exc)
    if not _from_sqlalchemy(exc, "DBAPIError"):
        return None
    orig = getattr(exc, "orig", None)
    # connection_invalidated: SQLAlchemy itself recognised a lost connection (server restarted, killed).
    if getattr(exc, "connection_invalidated", False) or (orig is not None and _transient_driver_error(orig)):
        return _message(orig if orig is not None else exc)
    return None


def _from_sqlalchemy(exc: BaseException, name: str) -> bool:
    return any(cls.__module__ == "sqlalchemy.exc" and cls.__name__ == name for cls in type(exc).__mro__)


def _transient_driver_error(error: BaseException) -> bool:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)  # psycopg 3, psycopg2
    if isinstance(state, str) and state:
        return state.startswith("08") or state in _TRANSIENT_SQLSTATES
    text = str(error)
    package = type(error).__module__.partition(".")[0]
    if package == "sqlite3":
        return text.startswith(_SQLITE_BUSY)
    if package in ("psycopg", "psycopg2") and type(error).__name__ == "OperationalError":
        # Failures to connect carry no SQLSTATE: refused, timed out, unreachable are transient; a FATAL
        # answer from the server is not (wrong password, no such database) unless it is not ready yet.
        if text.startswith("connection timeout expired"):
            return True
        if text.startswith("connection failed:"):
            return "FATAL:" not in text or any(reason in text for reason in _SERVER_NOT_READY)
    return False


def _message(error: BaseException) -> str:
    text = str(error).strip().partition("\n")[0]
    text = _DSN_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
    if len(text) > _MAX_CHARS:
        text = text[:_MAX_CHARS] + "…"
    return f"metadata database unavailable: {text}"
