"""The FATAL answers PostgreSQL gives a new connection while it starts, recovers from a crash or stops
(SQLSTATE 57P03, or 53300 when it is full) are transient, so the call is UNAVAILABLE and clients retry;
psycopg reports a failed connection with no SQLSTATE, so the server's text is what is recognised. A FATAL
answer that no wait will mend (wrong password, no such database) stays INTERNAL."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy.exc

from clients.database_errors import database_unavailable

_PREFIX = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '


def connect_error(server_text: str) -> sqlalchemy.exc.OperationalError:
    """What SQLAlchemy raises when psycopg 3 cannot connect and the server answered ``server_text``."""
    return sqlalchemy.exc.OperationalError(None, None, psycopg.OperationalError(_PREFIX + server_text))


@pytest.mark.parametrize(
    "server_text",
    [
        "the database system is starting up",
        # Crash restart (pg_ctl -m immediate, OOM kill): WAL replay until recovery is consistent.
        "the database system is not yet accepting connections\nDETAIL:  Consistent recovery state has not "
        "been yet reached.",
        "the database system is not accepting connections\nDETAIL:  Hot standby mode is disabled.",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "sorry, too many clients already",
        "remaining connection slots are reserved for non-replication superuser connections",
        "remaining connection slots are reserved for roles with the SUPERUSER attribute",
    ],
)
def test_a_server_not_ready_for_connections_is_unavailable(server_text: str) -> None:
    message = database_unavailable(connect_error(server_text))
    assert message == f"metadata database unavailable: {_PREFIX}{server_text.partition(chr(10))[0]}"


@pytest.mark.parametrize(
    "server_text",
    ['password authentication failed for user "aether"', 'database "aether" does not exist'],
)
def test_a_fatal_answer_that_waiting_will_not_mend_stays_internal(server_text: str) -> None:
    assert database_unavailable(connect_error(server_text)) is None
