"""The intent recovery (``ingestion/intents.py``) against intents it must not trust or must not confuse,
with real SQLite files and PostgreSQL and real Parquet files:

* an intent's identity is never reused: on SQLite a deleted newest row's id goes to the next row, and a
  run whose intent the recovery took then passed its commit by deleting another run's intent;
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from control_plane.db import write_session
from control_plane.ingestion import intents
from control_plane.ingestion.intents import IntentLost
from tests.integration.ingestion.test_chunk_commit_failure import chunk
from tests.integration.ingestion.test_chunk_intents import Stand, make_stand, remove_files


@pytest.fixture
def stand(db_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stand]:
    """SQLite and PostgreSQL, a local offline store."""
    yield from make_stand(db_url, redis_url, str(tmp_path / "offline"))


def written(stand: Stand, run_id: str, k: int = 0) -> intents.Intent:
    """A chunk's real Parquet file, written under its intent (as a run's write before its commit)."""
    announced: list[intents.Intent] = []

    def announce(paths: Sequence[str]) -> None:
        announced.append(intents.announce(stand.db.sessions, run_id, "climate", 1, 0, paths))

    rows = chunk(k).append_column("ingested_ts", chunk(k).column("event_ts"))
    stand.offline.write("climate", 1, rows, announce=announce)
    return announced[0]


def test_a_run_whose_intent_was_recovered_cannot_take_a_later_runs_intent(stand: Stand) -> None:
    """Run A's intent lapses and the recovery removes its file and deletes it (the newest row); run B then
    announces. A's late commit is refused (IntentLost), and B's intent is untouched and B commits."""
    a = written(stand, "run-a")
    recovery = intents.recover(stand.db.sessions, remove_files, lease_s=0.0)
    assert recovery.removed == {"run-a": list(a.paths)} and not Path(a.paths[0]).exists()
    b = written(stand, "run-b", 1)
    with pytest.raises(IntentLost), write_session(stand.db.sessions) as session:
        intents.settle_in(session, a)
    intents.drop(stand.db.sessions, a)  # nor does A's drop delete B's intent
    assert [row.run_id for row in stand.intents()] == ["run-b"]
    with write_session(stand.db.sessions) as session:
        intents.settle_in(session, b)
    assert stand.intents() == []
