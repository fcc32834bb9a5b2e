"""Eight writers, each with its own engine (as separate processes would have), append to the audit log
at once: no "database is locked", sequence numbers 1..N without gaps or duplicates, and the chain
verifies."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.query import AuditFilter, iter_entries
from control_plane.audit.verify import verify_chain
from control_plane.db import create_db_engine, create_session_factory
from tests.unit.audit.helpers import append

WRITERS, ROUNDS = 8, 10


def test_eight_concurrent_writers_keep_one_valid_chain(db_url: str, sessions: sessionmaker[Session]) -> None:
    start = threading.Barrier(WRITERS)

    def write(writer: int) -> list[int]:
        own = create_db_engine(db_url)
        try:
            own_sessions = create_session_factory(own)
            start.wait()
            return [
                append(own_sessions, round_, actor=f"writer{writer}", object_id=f"w{writer}").seq
                for round_ in range(ROUNDS)
            ]
        finally:
            own.dispose()

    with ThreadPoolExecutor(WRITERS) as pool:
        seqs = list(pool.map(write, range(WRITERS)))

    assert sorted(seq for writer in seqs for seq in writer) == list(range(1, WRITERS * ROUNDS + 1))
    assert all(writer == sorted(writer) for writer in seqs)  # each writer's appends in its own order
    result = verify_chain(sessions)
    assert result.ok, result.reason
    assert result.entries_checked == WRITERS * ROUNDS
    per_writer = {
        writer: [
            entry.after["index"]
            for entry in iter_entries(sessions, AuditFilter("feature_view", f"w{writer}"))
        ]
        for writer in range(WRITERS)
    }
    assert per_writer == {writer: list(range(ROUNDS)) for writer in range(WRITERS)}
