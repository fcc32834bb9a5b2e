"""``record_many``: several entries appended under one head lock form the same chain as one ``record``
per entry: consecutive sequence numbers, each linking to the one before, verifiable, interleaving freely
with ``record``; tampering with an entry written in a group is found like any other; and eight
concurrent writers appending groups keep one gap-free chain with each group contiguous."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.chain import GENESIS_HASH, AuditEntry, expected_hash
from control_plane.audit.log import AuditEvent, record_many
from control_plane.audit.query import AuditFilter, iter_entries
from control_plane.audit.verify import verify_chain
from control_plane.db import create_db_engine, create_session_factory
from control_plane.db.engine import write_session
from tests.unit.audit.helpers import append, delete_entry, edit_column, execute


def events(count: int, *, actor: str = "ci", prefix: str = "run") -> list[AuditEvent]:
    return [
        AuditEvent(actor, "update", "run", f"{prefix}{index}", {"status": "RUNNING"}, {"index": index})
        for index in range(count)
    ]


def append_many(sessions: sessionmaker[Session], batch: list[AuditEvent]) -> list[AuditEntry]:
    with write_session(sessions) as session:
        return record_many(session, batch)


def reset(engine: Engine) -> None:
    execute(engine, "DELETE FROM audit_log")
    execute(engine, "UPDATE audit_head SET seq = 0, hash = :genesis", genesis=GENESIS_HASH)


def test_a_group_chains_like_single_appends_and_verifies(sessions: sessionmaker[Session]) -> None:
    first = append(sessions, 0)
    group = append_many(sessions, events(4))
    last = append(sessions, 5)
    written = [first, *group, last]

    assert [entry.seq for entry in written] == [1, 2, 3, 4, 5, 6]
    assert [entry.prev_hash for entry in written] == [GENESIS_HASH, *[entry.hash for entry in written[:-1]]]
    assert all(entry.hash == expected_hash(entry) for entry in written)
    assert [entry.object_id for entry in group] == ["run0", "run1", "run2", "run3"]
    assert list(iter_entries(sessions, AuditFilter())) == written  # stored exactly as returned
    result = verify_chain(sessions)
    assert result.ok, result.reason
    assert (result.entries_checked, result.head_seq, result.head_hash) == (6, 6, last.hash)


def test_no_events_write_nothing(sessions: sessionmaker[Session]) -> None:
    append(sessions, 0)
    assert append_many(sessions, []) == []
    assert [entry.seq for entry in iter_entries(sessions, AuditFilter())] == [1]
    assert verify_chain(sessions).head_seq == 1


def test_long_fields_are_clipped_and_values_normalized(sessions: sessionmaker[Session]) -> None:
    event = AuditEvent("a" * 300, "update", "run", "r", None, {"loss": float("nan"), "steps": (1, 2)})
    (entry,) = append_many(sessions, [event])
    assert len(entry.actor) == 256 and entry.actor.endswith("…")
    assert entry.after == {"loss": "NaN", "steps": [1, 2]}
    assert verify_chain(sessions).ok


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[int], str, int]:
    """Group sizes (1 = a single ``record``), a tampering (edit or delete) and the entry it hits."""
    groups = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    kind = draw(st.sampled_from(["edit_after", "edit_object_id", "edit_prev_hash", "delete"]))
    return groups, kind, draw(st.integers(1, sum(groups)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_tampering_with_any_grouped_entry_is_found(
    engine: Engine, sessions: sessionmaker[Session], history: tuple[list[int], str, int]
) -> None:
    groups, kind, seq = history
    reset(engine)
    for number, size in enumerate(groups):
        if size == 1:
            append(sessions, number)
        else:
            append_many(sessions, events(size, prefix=f"g{number}-"))
    assert verify_chain(sessions).ok

    if kind == "delete":
        delete_entry(engine, seq)
    else:
        column = kind.removeprefix("edit_")
        edit_column(engine, seq, column, {"forged": True} if column == "after" else "e" * 64)
    result = verify_chain(sessions)
    assert not result.ok
    assert result.first_bad_seq == seq, result.reason


WRITERS, ROUNDS, GROUP = 8, 5, 3


def test_eight_concurrent_group_writers_keep_one_valid_chain(
    db_url: str, sessions: sessionmaker[Session]
) -> None:
    start = threading.Barrier(WRITERS)

    def write(writer: int) -> list[list[int]]:
        own = create_db_engine(db_url)
        try:
            own_sessions = create_session_factory(own)
            start.wait()
            groups = []
            for round_ in range(ROUNDS):
                batch = events(GROUP, actor=f"writer{writer}", prefix=f"w{writer}r{round_}-")
                groups.append([entry.seq for entry in append_many(own_sessions, batch)])
            return groups
        finally:
            own.dispose()

    with ThreadPoolExecutor(WRITERS) as pool:
        per_writer = list(pool.map(write, range(WRITERS)))

    groups = [group for writer in per_writer for group in writer]
    assert sorted(seq for group in groups for seq in group) == list(range(1, WRITERS * ROUNDS * GROUP + 1))
    assert all(group == list(range(group[0], group[0] + GROUP)) for group in groups)  # never interleaved
    result = verify_chain(sessions)
    assert result.ok, result.reason
    assert result.entries_checked == WRITERS * ROUNDS * GROUP
    stored = {entry.seq: entry for entry in iter_entries(sessions, AuditFilter())}
    for writer, writer_groups in enumerate(per_writer):
        for round_, group in enumerate(writer_groups):
            assert [stored[seq].object_id for seq in group] == [
                f"w{writer}r{round_}-{i}" for i in range(GROUP)
            ]
            assert {stored[seq].actor for seq in group} == {f"writer{writer}"}
