"""The hash chain: an untouched log verifies; an edited, inserted or deleted entry is found and named;
entries commit and roll back with the caller's transaction."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.chain import GENESIS_HASH, AuditEntry, entry_hash, expected_hash, normalize
from control_plane.audit.export import entry_from_line, export_lines
from control_plane.audit.log import record
from control_plane.audit.query import AuditFilter, query_page
from control_plane.audit.tables import AuditEntryRow
from control_plane.audit.verify import verify_chain
from control_plane.db import create_db_engine, create_session_factory
from control_plane.db.engine import read_session, write_session
from tests.unit.audit.helpers import append, delete_entry, edit_column, execute, forge_entry


def test_an_empty_log_verifies(sessions: sessionmaker[Session]) -> None:
    result = verify_chain(sessions)
    assert (result.ok, result.entries_checked, result.head_seq, result.head_hash) == (
        True,
        0,
        0,
        GENESIS_HASH,
    )


def test_untouched_chain_verifies_and_links(sessions: sessionmaker[Session]) -> None:
    entries = [append(sessions, index) for index in range(5)]
    assert [entry.seq for entry in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(entries))
    result = verify_chain(sessions)
    assert result.ok, result.reason
    assert (result.entries_checked, result.head_seq, result.head_hash) == (5, 5, entries[-1].hash)


def test_stored_rows_hash_to_their_digest_after_the_round_trip(sessions: sessionmaker[Session]) -> None:
    """Awkward values (nested, unicode, big integers, floats, non-finite floats, tuples, non-string
    keys) are normalized before hashing, so what the backend gives back hashes the same."""
    awkward = {
        "nested": {"list": [1, 2.5, None, True], "tuple": (1, "two")},
        "unicode": "Zürich — 東京",
        "big": 2**62,
        "small": 1e-300,
        "nan": math.nan,
        "inf": -math.inf,
        7: "int key",
    }
    entry = append(sessions, 0, before=awkward, after={"x": 0.1})
    with read_session(sessions) as session:
        page = query_page(session, AuditFilter())
    (stored,) = page.entries
    assert stored == entry
    assert stored.before == normalize(awkward)
    assert stored.before["nan"] == "NaN" and stored.before["7"] == "int key"
    assert expected_hash(stored) == stored.hash
    assert verify_chain(sessions).ok


def test_an_entry_rolls_back_with_the_change_it_describes(sessions: sessionmaker[Session]) -> None:
    append(sessions, 0)
    with pytest.raises(RuntimeError), write_session(sessions) as session:
        record(session, actor="a", action="create", object_type="t", object_id="1", before=None, after={})
        raise RuntimeError("the mutation failed after auditing")
    second = append(sessions, 1)
    assert second.seq == 2
    assert verify_chain(sessions).ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "mallory"),
        ("action", "delete"),
        ("object_id", "view99"),
        ("timestamp_us", 1),
        ("after", {"index": 2, "tags": {"team": "fraud"}}),
        ("before", {"approved": True}),
        ("hash", "0" * 64),
    ],
)
def test_an_edited_row_is_named(
    engine: Engine, sessions: sessionmaker[Session], column: str, value: object
) -> None:
    for index in range(5):
        append(sessions, index)
    edit_column(engine, 3, column, value)
    result = verify_chain(sessions)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.entries_checked == 2
    assert "entry 3" in result.reason


def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_next_link(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    entries = [append(sessions, index) for index in range(4)]
    forged = {**entries[1].to_json(), "actor": "mallory"}
    del forged["hash"]
    edit_column(engine, 2, "actor", "mallory")
    edit_column(engine, 2, "hash", entry_hash(**forged))
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "does not link" in result.reason


def test_a_deleted_middle_row_is_named(engine: Engine, sessions: sessionmaker[Session]) -> None:
    for index in range(5):
        append(sessions, index)
    delete_entry(engine, 2)
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "missing" in result.reason


def test_a_deleted_last_row_is_caught_by_the_head(engine: Engine, sessions: sessionmaker[Session]) -> None:
    for index in range(3):
        append(sessions, index)
    delete_entry(engine, 3)
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "head" in result.reason


def test_a_forged_row_appended_without_the_head_is_named(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    entries = [append(sessions, index) for index in range(3)]
    forge_entry(engine, 4, entries[-1].hash, correct_hash=True)
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "beyond the recorded head" in result.reason


def test_a_forged_row_inserted_into_a_gap_is_named(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """Replacing a deleted entry with a forged one that hashes right still breaks the next link."""
    entries = [append(sessions, index) for index in range(4)]
    delete_entry(engine, 2)
    forge_entry(engine, 2, entries[0].hash, correct_hash=True)
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_a_rewritten_head_does_not_hide_a_deletion_in_the_middle(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    for index in range(4):
        append(sessions, index)
    delete_entry(engine, 4)
    delete_entry(engine, 2)
    execute(engine, "UPDATE audit_head SET seq = 3")
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_appends_continue_the_chain_across_sessions_and_engines(
    db_url: str, sessions: sessionmaker[Session]
) -> None:
    append(sessions, 0)
    other = create_db_engine(db_url)
    try:
        append(create_session_factory(other), 1)
    finally:
        other.dispose()
    append(sessions, 2)
    with read_session(sessions) as session:
        assert session.scalar(select(func.count()).select_from(AuditEntryRow)) == 3
    assert verify_chain(sessions).ok


def test_export_lines_carry_everything_needed_to_rehash(sessions: sessionmaker[Session]) -> None:
    entries = [append(sessions, index, before={"i": index} if index else None) for index in range(3)]
    lines = list(export_lines(sessions))
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    restored = [entry_from_line(line) for line in lines]
    assert restored == entries
    assert all(expected_hash(entry) == entry.hash for entry in restored)


def _refuse(sessions: sessionmaker[Session], outcome: str) -> AuditEntry:
    with write_session(sessions) as session:
        return record(
            session,
            actor="mallory",
            action="approve",
            object_type="model_version",
            object_id="fraud/2",
            before=None,
            after=None,
            outcome=outcome,
        )


def test_an_entry_without_an_outcome_hashes_as_before_outcomes_were_logged() -> None:
    """The digest pinned here was computed before the outcome field existed: chains written then verify."""
    fields: dict[str, Any] = {
        "seq": 1,
        "timestamp_us": 1_700_000_000_000_000,
        "actor": "alice",
        "action": "approve",
        "object_type": "model_version",
        "object_id": "eta/1",
        "before": {"approval_status": "PendingManualApproval"},
        "after": {"approval_status": "Approved", "reason": ""},
        "prev_hash": GENESIS_HASH,
    }
    pinned = "ce7ad6f79965dd5e715c30bb192ef92f38e41eb122a30edfd5a7096f4d4b6b7b"
    assert entry_hash(**fields) == entry_hash(**fields, outcome="") == pinned
    assert entry_hash(**fields, outcome="refused: NOT_FOUND: no such version") != pinned


@pytest.mark.parametrize("edit", ["remove", "edit", "add"])
def test_an_outcome_removed_edited_or_added_is_named(
    engine: Engine, sessions: sessionmaker[Session], edit: str
) -> None:
    """A refusal cannot be passed off as a change carried out, nor the other way round."""
    append(sessions, 0)
    refused = _refuse(sessions, "refused: PERMISSION_DENIED: the readonly token may not call it")
    append(sessions, 2)
    assert (refused.seq, verify_chain(sessions).ok) == (2, True)
    seq, value = {"remove": (2, ""), "edit": (2, "refused: NOT_FOUND: x"), "add": (3, "refused: x")}[edit]
    execute(engine, "UPDATE audit_log SET outcome = :value WHERE seq = :seq", value=value, seq=seq)
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq) == (False, seq)
    assert "was modified" in result.reason


def test_export_lines_carry_the_outcome_of_a_refusal_only(sessions: sessionmaker[Session]) -> None:
    entries = [append(sessions, 0), _refuse(sessions, "refused: FAILED_PRECONDITION: already Rejected")]
    lines = list(export_lines(sessions))
    assert ["outcome" in json.loads(line) for line in lines] == [False, True]
    restored = [entry_from_line(line) for line in lines]
    assert restored == entries
    assert all(expected_hash(entry) == entry.hash for entry in restored)


@pytest.mark.parametrize("stored", ["not json", '{"index": NaN}', '{"index": Infinity}'])
def test_a_row_whose_json_does_not_decode_is_named_and_shown_damaged(
    db_url: str, engine: Engine, sessions: sessionmaker[Session], stored: str
) -> None:
    """A JSON column edited to hold text that is not JSON (or a NaN the log never stores) is the edited
    entry, named by verify; list and export show that one row as damaged and the rest as they are."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's json type refuses such text, so no one can store it")
    entries = [append(sessions, index) for index in range(5)]
    execute(engine, "UPDATE audit_log SET after = :value WHERE seq = 3", value=stored)
    result = verify_chain(sessions)
    assert (result.ok, result.first_bad_seq, result.entries_checked) == (False, 3, 2)
    assert "entry 3 was modified (after is not valid JSON" in result.reason
    with read_session(sessions) as session:
        page = query_page(session, AuditFilter())
    assert [entry.damaged != "" for entry in page.entries] == [False, False, True, False, False]
    assert page.entries[2].after is None and stored[:8] in page.entries[2].damaged
    assert [page.entries[i] for i in (0, 1, 3, 4)] == [entries[i] for i in (0, 1, 3, 4)]
    lines = [json.loads(line) for line in export_lines(sessions)]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert "damaged" not in lines[1]
