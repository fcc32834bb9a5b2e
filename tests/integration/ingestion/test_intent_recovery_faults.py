"""The intent recovery (``ingestion/intents.py``) against intents it must not trust or must not confuse,
with real SQLite files and PostgreSQL and real Parquet files:

* an intent's identity is never reused: on SQLite a deleted newest row's id goes to the next row, and a
  run whose intent the recovery took then passed its commit by deleting another run's intent;
* an intent naming a path that is not a data file of its own offline store (outside the root, climbing
  out with ``..``, not of the store's layout) is marked ``invalid``, logged once and kept, and nothing is
  removed; before, the recovery deleted whatever path a row named (local and S3-style stores);
* one intent whose paths cannot be read no longer fails every pass (the other intents' files stayed for
  good): it is marked ``invalid`` and the others are settled;
* with the store refusing deletes (the named fault :class:`DeletesFail`), a pass logs one line, not a
  traceback per intent, and the intents that keep failing go to the back, so a full batch of them no
  longer starves the others; with the database out of reach a pass logs one warning line;
* the lease is read from the database's clock: a recovering process whose clock runs six minutes ahead
  of the writer's (the named fault :func:`skewed_clock`: another host, an NTP step) no longer reclaims
  a live chunk's intent, and one whose clock runs behind still reclaims a dead one;
* compaction given the open intents' files (``intents.open_paths``) merges none of them, so the
  recovery can still remove an uncounted file's rows; with the database out of reach it merges nothing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pyarrow.fs as pafs
import pytest
from sqlalchemy.exc import OperationalError

from control_plane.db import create_db_engine, create_session_factory, write_session
from control_plane.ingestion import intents
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.intent_recovery import IntentRecoveryLoop
from control_plane.ingestion.intents import IntentLost
from control_plane.ingestion.tables import IngestionIntentRow
from control_plane.offline.compaction import CompactionPolicy, compact_view
from control_plane.offline.compaction_loop import CompactionLoop
from tests.integration.ingestion.conftest import Stand
from tests.integration.ingestion.test_chunk_commit_failure import chunk
from tests.integration.ingestion.test_chunk_intents import remove_files


def lapsed(stand: Stand, run_id: str, paths: Sequence[str]) -> None:
    """An intent older than any lease, naming ``paths`` (as a corrupt or tampered row would)."""
    with write_session(stand.db.sessions) as session:
        session.add(
            IngestionIntentRow(
                token=uuid.uuid4().hex, run_id=run_id, chunk=0, view="climate", version=1,
                paths=json.dumps(list(paths)), state=intents.WRITING, created_at_us=0, updated_at_us=0,
            )
        )  # fmt: skip


def states(stand: Stand) -> dict[str, str]:
    return {row.run_id: row.state for row in stand.intents()}


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


def test_the_recovery_removes_nothing_an_intent_names_outside_its_stores_data_files(
    any_stand: Stand, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stand = any_stand
    filesystem, base = stand.offline.filesystem, stand.offline.base_path
    precious = f"{base}/precious.txt"  # inside the root, not a data file
    stand.offline.write("climate", 1, chunk(0).append_column("ingested_ts", chunk(0).column("event_ts")))
    (kept,) = stand.offline.files("climate", 1)  # a counted chunk's file
    partition, name = kept.rsplit("/", 1)
    with filesystem.open_output_stream(precious) as sink:
        sink.write(b"precious")
    foreign = {
        "inside-root": [precious],
        "climbing-out": [f"{partition}/../../../precious.txt"],
        "other-version": [f"{base}/climate/v2/{partition.rsplit('/', 1)[1]}/{name}"],
        "mixed": [f"{partition}/{name}.tmp", kept],
    }
    if filesystem.type_name == "local":
        outside = tmp_path / "outside.txt"
        outside.write_text("precious")
        foreign["outside-root"] = [str(outside)]
    for run_id, paths in foreign.items():
        lapsed(stand, run_id, paths)
    dead = written(stand, "dead-run", 1)  # a genuine intent beside them, lapsed at lease 0

    with caplog.at_level(logging.ERROR, logger="aether.ingestion.intents"):
        recovery = stand.batch.recover_intents(lease_s=0.0)
        assert stand.batch.recover_intents(lease_s=0.0).invalid == 0  # logged and marked once
    assert recovery.invalid == len(foreign)
    assert recovery.removed == {"dead-run": list(dead.paths)}
    assert filesystem.get_file_info(precious).type == pafs.FileType.File
    assert filesystem.get_file_info(kept).type == pafs.FileType.File
    assert filesystem.get_file_info(dead.paths[0]).type == pafs.FileType.NotFound
    if "outside-root" in foreign:
        assert (tmp_path / "outside.txt").read_text() == "precious"
    assert states(stand) == dict.fromkeys(foreign, intents.INVALID)
    invalid_lines = [record for record in caplog.records if "invalid" in record.getMessage()]
    assert len(invalid_lines) == len(foreign)


def test_an_intent_whose_paths_cannot_be_read_is_marked_invalid_and_the_others_are_settled(
    stand: Stand, caplog: pytest.LogCaptureFixture
) -> None:
    for run_id, paths in {"not-json": "[not json", "not-a-list": '{"a": 1}', "not-strings": "[1]"}.items():
        with write_session(stand.db.sessions) as session:
            session.add(
                IngestionIntentRow(
                    token=uuid.uuid4().hex, run_id=run_id, chunk=0, view="climate", version=1, paths=paths,
                    state=intents.WRITING, created_at_us=0, updated_at_us=0,
                )
            )  # fmt: skip
    dead = written(stand, "dead-run")
    with caplog.at_level(logging.ERROR, logger="aether.ingestion.intents"):
        recovery = stand.batch.recover_intents(lease_s=0.0)
        assert stand.batch.recover_intents(lease_s=0.0) == intents.Recovery()
    assert (recovery.invalid, recovery.removed) == (3, {"dead-run": list(dead.paths)})
    assert not Path(dead.paths[0]).exists()
    assert states(stand) == dict.fromkeys(["not-json", "not-a-list", "not-strings"], intents.INVALID)
    assert len(caplog.records) == 3 and all(record.exc_info is None for record in caplog.records)


class DeletesFail:
    """The named fault: the offline store's filesystem, whose deletes of ``failing`` paths raise as an
    unreachable object store's do (OSError)."""

    def __init__(self, filesystem: pafs.FileSystem, failing: set[str]) -> None:
        self._filesystem = filesystem
        self.failing = failing

    def delete_file(self, path: str) -> None:
        if path in self.failing:
            raise OSError(f"When deleting key '{path}': AWS Error NETWORK_CONNECTION (fault)")
        self._filesystem.delete_file(path)

    def __getattr__(self, name: str) -> object:
        return getattr(self._filesystem, name)


def test_a_store_refusing_deletes_logs_one_line_a_pass_and_starves_no_intent(
    stand: Stand, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intents, "RECOVERY_BATCH", 2)
    failing, settled = (
        [written(stand, "failing-0", 0), written(stand, "failing-1", 1)],
        written(stand, "ok", 2),
    )
    fault = DeletesFail(stand.offline.filesystem, {path for intent in failing for path in intent.paths})
    stand.offline.filesystem = cast(pafs.FileSystem, fault)
    with caplog.at_level(logging.INFO, logger="aether.ingestion.intents"):
        first = stand.batch.recover_intents(lease_s=0.0)
    assert (first.failed, first.intents) == (2, 0)
    (line,) = caplog.records
    assert (
        line.exc_info is None
        and "2 uncounted" in line.getMessage()
        and "NETWORK_CONNECTION" in line.getMessage()
    )
    # The two that keep failing go behind the third, which the next pass settles.
    second = stand.batch.recover_intents(lease_s=0.0)
    assert second.removed == {"ok": list(settled.paths)} and not Path(settled.paths[0]).exists()
    fault.failing.clear()  # the store is back
    third = stand.batch.recover_intents(lease_s=0.0)
    assert sorted(third.removed) == ["failing-0", "failing-1"] and stand.intents() == []


def test_a_pass_with_the_database_out_of_reach_logs_one_warning_line(
    stand: Stand, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_db_engine("postgresql+psycopg://aether:secret@127.0.0.1:1/none")
    try:
        batch = BatchMaterializer(create_session_factory(engine), stand.offline, stand.client)
        with caplog.at_level(logging.INFO, logger="aether.ingestion.intents"):
            assert IntentRecoveryLoop(batch).run_once() is None
    finally:
        engine.dispose()
    (line,) = caplog.records
    assert (line.levelname, line.exc_info) == ("WARNING", None)


_TRUE_TIME_NS = time.time_ns


def skewed_clock(monkeypatch: pytest.MonkeyPatch, skew_s: float) -> None:
    """The named fault: this process's wall clock (``time.time_ns``, what every µs stamp of ours reads:
    ``now_us``, the database clock's fallback) off by ``skew_s`` from the true one."""
    monkeypatch.setattr(time, "time_ns", lambda: _TRUE_TIME_NS() + int(skew_s * 1_000_000_000))


def test_the_lease_is_read_from_the_databases_clock_not_the_hosts(
    stand: Stand, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = written(stand, "live-run")  # announced by a writer whose clock is right
    skewed_clock(monkeypatch, 6 * 60)  # the recovering control plane runs six minutes ahead
    assert stand.batch.recover_intents().intents == 0  # the 5-minute lease has not lapsed
    assert Path(live.paths[0]).exists()
    with write_session(stand.db.sessions) as session:
        intents.settle_in(session, live)  # the live chunk commits
    dead = written(stand, "dead-run")  # announced under the skewed clock, then its writer died
    skewed_clock(monkeypatch, -6 * 60)  # a recovering host behind: a lease of 0 has lapsed all the same
    assert stand.batch.recover_intents(lease_s=0.0).removed == {"dead-run": list(dead.paths)}


def test_compaction_merges_no_file_an_open_intent_names(stand: Stand) -> None:
    def write(k: int) -> str:
        (path,) = stand.offline.write(
            "climate", 1, chunk(k).append_column("ingested_ts", chunk(k).column("event_ts"))
        )
        return path

    counted = [write(0)]
    uncounted = written(stand, "dead-run", 1)  # its run died before counting it
    counted += [write(2), write(3)]
    policy = CompactionPolicy(min_files=1, min_age_s=0.0, lateness_s=0.0)
    engine = create_db_engine("postgresql+psycopg://aether:secret@127.0.0.1:1/none")
    try:
        down = create_session_factory(engine)
        with pytest.raises(OperationalError):  # the intents cannot be read: nothing is merged
            compact_view(stand.offline, "climate", policy=policy, pending=lambda: intents.open_paths(down))
    finally:
        engine.dispose()
    assert sorted(stand.offline.files("climate", 1)) == sorted([*counted, *uncounted.paths])

    report = compact_view(
        stand.offline, "climate", policy=policy, pending=lambda: intents.open_paths(stand.db.sessions)
    )
    (run,) = report.merged
    assert run.files_in == tuple(path.rsplit("/", 1)[1] for path in counted[1:])
    assert stand.batch.recover_intents(lease_s=0.0).removed == {"dead-run": list(uncounted.paths)}
    rows = sum(chunk(k).num_rows for k in (0, 2, 3))
    assert stand.stored_rows() == rows  # the uncounted rows are gone from every file


def test_a_compaction_pass_with_the_database_down_logs_one_line_and_merges_nothing(
    stand: Stand, caplog: pytest.LogCaptureFixture
) -> None:
    # The open intents cannot be read: every view's compaction would fail the same way, each with a
    # traceback, every pass. The pass stops with one warning and merges nothing.
    for k in range(3):
        stand.offline.write("climate", 1, chunk(k).append_column("ingested_ts", chunk(k).column("event_ts")))
    before = sorted(stand.offline.files("climate", 1))
    policy = CompactionPolicy(min_files=1, min_age_s=0.0, lateness_s=0.0)
    engine = create_db_engine("postgresql+psycopg://aether:secret@127.0.0.1:1/none")
    try:
        down = create_session_factory(engine)
        loop = CompactionLoop(stand.offline, policy, 60.0, pending=lambda: intents.open_paths(down))
        with caplog.at_level(logging.WARNING, logger="aether.offline"):
            assert loop.run_once() == {}
    finally:
        engine.dispose()
    assert sorted(stand.offline.files("climate", 1)) == before
    logged = [
        (r.levelno, r.exc_info is not None) for r in caplog.records if r.name.startswith("aether.offline")
    ]
    assert logged == [(logging.WARNING, False)], caplog.text
    assert "offline compaction pass stopped: metadata database unavailable" in caplog.text
