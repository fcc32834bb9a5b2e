"""``bounded``: an entry's before and after are stored whole while they fit, else with their largest
strings, or whole states, replaced by markers that pin them (sha256 and length); the log records and
verifies such entries like any other."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.bound import MAX_STATES_BYTES, bounded, json_bytes, omitted
from control_plane.audit.chain import canonical_json
from control_plane.audit.query import iter_entries
from control_plane.audit.verify import verify_chain
from tests.unit.audit.helpers import append


def marker(text: str) -> dict[str, Any]:
    return {"omitted_sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": len(text.encode())}


def test_states_that_fit_are_kept_whole() -> None:
    before, after = {"description": "x" * 500}, {"description": "y" * 500}
    assert bounded(before, after, limit=1100) == (before, after)
    assert bounded(None, after, limit=1100) == (None, after)


def test_the_largest_strings_are_omitted_first_and_no_more_than_needed() -> None:
    before = {"description": "a" * 3000, "owner": "team-a", "tags": ["b" * 2000, "c" * 200]}
    after = {"description": "é" * 3000, "owner": "team-b", "tags": ["b" * 2000, "c" * 200]}
    stored_before, stored_after = bounded(before, after, limit=6000)
    # The two 3,000-character descriptions go (the larger, é, takes two bytes each); the rest stays.
    assert stored_before == {**before, "description": marker("a" * 3000)}
    assert stored_after == {**after, "description": marker("é" * 3000)}
    assert stored_after["description"]["bytes"] == 6000
    assert json_bytes(stored_before) + json_bytes(stored_after) <= 6000


def test_many_small_values_omit_the_larger_whole_state() -> None:
    metrics = {f"metric_{index}": float(index) for index in range(2000)}
    stored_before, stored_after = bounded({"status": "RUNNING"}, {"metrics": metrics}, limit=10_000)
    assert stored_before == {"status": "RUNNING"}
    digest = hashlib.sha256(canonical_json({"metrics": metrics}).encode()).hexdigest()
    assert stored_after == {"omitted_sha256": digest, "bytes": json_bytes({"metrics": metrics})}
    assert stored_after == omitted({"metrics": metrics})


def test_a_recorded_entry_is_bounded_and_verifies(sessions: sessionmaker[Session]) -> None:
    description = 'a "quoted" line\n' * 100_000  # 1.6 MB of text, more as escaped JSON
    append(sessions, 1)
    entry = append(sessions, 2, before={"description": description}, after={"description": "short"})
    assert entry.before == {"description": marker(description)}
    assert entry.after == {"description": "short"}
    assert json_bytes(entry.before) + json_bytes(entry.after) <= MAX_STATES_BYTES
    assert [stored.before for stored in iter_entries(sessions)] == [None, entry.before]
    assert verify_chain(sessions).ok
