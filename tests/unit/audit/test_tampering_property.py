"""Property: after any sequence of appends and one tampering (an edited field, a deleted row, a forged
row at the end or in place of a deleted one), verify names exactly the first entry a reference model of
the chain says is bad; with no tampering the chain verifies."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.chain import GENESIS_HASH
from control_plane.audit.verify import verify_chain
from tests.unit.audit.helpers import append, delete_entry, edit_column, execute, forge_entry

EDITS = {
    "actor": "mallory",
    "action": "approve",
    "object_type": "model_version",
    "object_id": "tampered",
    "timestamp_us": 1,
    "before": {"forged": True},
    "after": {"forged": True},
    "prev_hash": "e" * 64,
    "hash": "d" * 64,
}


@dataclass(frozen=True)
class Tamper:
    kind: str  # edit | delete | forge_end | forge_replace | none
    seq: int = 0
    column: str = ""

    def first_bad(self, length: int) -> int | None:
        """The reference: which entry verify must name in a chain of ``length`` entries."""
        if self.kind == "none":
            return None
        if self.kind == "forge_end":
            return length + 1
        if self.kind == "forge_replace":
            # The forged entry links and hashes right; the entry after it no longer links to it, and
            # when it was the last one, the head hash no longer matches.
            return self.seq + 1 if self.seq < length else length
        return self.seq  # edit or delete


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[str, bool]], Tamper]:
    appends = draw(
        st.lists(st.tuples(st.sampled_from(["alice", "bob", "ci"]), st.booleans()), min_size=1, max_size=8)
    )
    kind = draw(st.sampled_from(["edit", "delete", "forge_end", "forge_replace", "none"]))
    seq = draw(st.integers(1, len(appends)))
    column = draw(st.sampled_from(sorted(EDITS))) if kind == "edit" else ""
    return appends, Tamper(kind, seq, column)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_verify_names_the_first_bad_entry(
    engine: Engine, sessions: sessionmaker[Session], scenario: tuple[list[tuple[str, bool]], Tamper]
) -> None:
    appends, tamper = scenario
    # One database per test, reset per example.
    execute(engine, "DELETE FROM audit_log")
    execute(engine, "UPDATE audit_head SET seq = 0, hash = :genesis", genesis=GENESIS_HASH)
    entries = [
        append(sessions, index, actor=actor, before={"previous": index} if is_update else None)
        for index, (actor, is_update) in enumerate(appends)
    ]
    if tamper.kind == "edit":
        edit_column(engine, tamper.seq, tamper.column, EDITS[tamper.column])
    elif tamper.kind == "delete":
        delete_entry(engine, tamper.seq)
    elif tamper.kind == "forge_end":
        forge_entry(engine, len(entries) + 1, entries[-1].hash)
    elif tamper.kind == "forge_replace":
        delete_entry(engine, tamper.seq)
        previous = entries[tamper.seq - 2].hash if tamper.seq > 1 else GENESIS_HASH
        forge_entry(engine, tamper.seq, previous)

    result = verify_chain(sessions)
    expected = tamper.first_bad(len(entries))
    assert result.ok == (expected is None), result.reason
    assert result.first_bad_seq == expected, result.reason
    if expected is not None:
        assert result.entries_checked == expected - 1
        assert f"{expected}" in result.reason
