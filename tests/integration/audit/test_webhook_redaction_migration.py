"""Migration 0026: audit entries written before webhook URLs were redacted held them whole, readable by
the read-only token through QueryAudit/ExportAudit. The migration redacts them and re-hashes the chain,
which records the rewrite (an ``audit.redact`` entry naming the head before it) and still verifies."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.chain import entry_hash
from control_plane.audit.export import export_lines
from control_plane.audit.log import record
from control_plane.audit.verify import verify_chain
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head, write_session
from control_plane.db.migrate import alembic_config
from control_plane.monitoring.webhooks import redact_webhook

pytestmark = pytest.mark.integration

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXXXXXXXXXX"
BASIC = "https://alert:hunter2-long-password@receiver.example:8443/hook"
#: Stored as JSON on both backends (PostgreSQL's json type takes it) and too deep for Python's json.loads:
#: a row that ``aetherctl audit verify`` reports as damaged and that a plain read through sa.JSON raised on.
TOO_DEEP = "[" * 5000 + "]" * 5000


def _migration() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "control_plane/db/migrations/versions"
    spec = importlib.util.spec_from_file_location("m0026", path / "0026_redact_audit_webhooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MIGRATION = _migration()


def test_old_entries_lose_their_webhook_urls_and_the_chain_still_verifies(db_url: str) -> None:
    command.upgrade(alembic_config(db_url), "0025_byte_ordered_names")
    engine = create_db_engine(db_url)
    sessions = create_session_factory(engine)
    try:
        with write_session(sessions) as session:
            record(session, actor="admin", action="feature_view.create", object_type="feature_view",
                   object_id="stats", before=None, after={"name": "stats"})  # fmt: skip
            config = {"deployment": "d", "webhook_url": SLACK, "drift_threshold": 0.3}
            record(session, actor="admin", action="monitoring.configure", object_type="deployment",
                   object_id="d", before=None, after=config)  # fmt: skip
            record(session, actor="admin", action="monitoring.configure", object_type="deployment",
                   object_id="d", before=config, after={**config, "webhook_url": BASIC})  # fmt: skip
            record(session, actor="readonly", action="model.delete", object_type="model", object_id="m",
                   before=None, after=None, outcome="refused: PERMISSION_DENIED: no")  # fmt: skip
        old = verify_chain(sessions)
        assert old.ok and old.head_seq == 4
        old_entries = [json.loads(line) for line in export_lines(sessions)]

        upgrade_to_head(engine)

        result = verify_chain(sessions)
        assert result.ok, result.reason
        entries = [json.loads(line) for line in export_lines(sessions)]
        text = json.dumps(entries)
        assert "XXXXsecret" not in text and "hunter2" not in text
        assert entries[1]["after"]["webhook_url"] == redact_webhook(SLACK)
        assert entries[2]["before"]["webhook_url"] == redact_webhook(SLACK)
        assert entries[2]["after"]["webhook_url"] == redact_webhook(BASIC)
        assert entries[2]["after"]["drift_threshold"] == 0.3
        assert entries[0] == old_entries[0]  # before the first rewritten entry: untouched
        assert entries[1]["prev_hash"] == old_entries[1]["prev_hash"]
        assert [entry["actor"] for entry in entries[:4]] == ["admin", "admin", "admin", "readonly"]
        assert entries[3]["outcome"] == "refused: PERMISSION_DENIED: no"
        note = entries[4]
        assert (note["seq"], note["action"], note["actor"]) == (
            5,
            "audit.redact",
            "migration 0026_redact_audit_webhooks",
        )
        assert note["after"]["redacted_seqs"] == [2, 3]
        assert note["after"]["previous_head"] == {"seq": 4, "hash": old.head_hash}
        assert result.head_seq == 5
    finally:
        engine.dispose()


def _old_log_with_a_webhook(db_url: str) -> tuple[Engine, sessionmaker[Session]]:
    """A database at 0025 whose log holds a whole webhook URL (seq 1) and an entry after it (seq 2)."""
    command.upgrade(alembic_config(db_url), "0025_byte_ordered_names")
    engine = create_db_engine(db_url)
    sessions = create_session_factory(engine)
    with write_session(sessions) as session:
        record(session, actor="admin", action="monitoring.configure", object_type="deployment",
               object_id="d", before=None, after={"deployment": "d", "webhook_url": SLACK})  # fmt: skip
        record(session, actor="admin", action="model.delete", object_type="model", object_id="fraud",
               before={"name": "fraud"}, after=None)  # fmt: skip
    return engine, sessions


def _note(sessions: sessionmaker[Session]) -> dict[str, Any]:
    note = [json.loads(line) for line in export_lines(sessions)][-1]
    assert (note["action"], note["actor"]) == ("audit.redact", "migration 0026_redact_audit_webhooks")
    after: dict[str, Any] = note["after"]
    return after


def test_an_entry_tampered_with_before_the_upgrade_does_not_verify_after_it(db_url: str) -> None:
    engine, sessions = _old_log_with_a_webhook(db_url)
    try:
        with engine.begin() as connection:  # an insider rewrites who deleted the model
            connection.execute(text("UPDATE audit_log SET actor = 'alice' WHERE seq = 2"))
        assert verify_chain(sessions).first_bad_seq == 2

        upgrade_to_head(engine)

        result = verify_chain(sessions)
        assert not result.ok and result.first_bad_seq is not None and result.first_bad_seq <= 2
        assert "XXXXsecret" not in "".join(export_lines(sessions))  # redacted all the same
        note = _note(sessions)
        assert note["already_broken"]["seq"] == 2 and "modified" in note["already_broken"]["reason"]
        assert note["redacted_seqs"] == [1] and "rehashed_from_seq" not in note
        with write_session(sessions) as session:  # the control plane still appends after it
            record(session, actor="admin", action="model.create", object_type="model", object_id="m",
                   before=None, after={"name": "m"})  # fmt: skip
    finally:
        engine.dispose()


def test_a_replaced_newest_entry_is_not_mended_by_the_upgrade(db_url: str) -> None:
    engine, sessions = _old_log_with_a_webhook(db_url)
    try:
        # The newest entry rewritten with a hash that matches it, the head row left alone.
        forged = entry_hash(seq=2, timestamp_us=1, actor="alice", action="model.delete", object_type="model",
                            object_id="fraud", before={"name": "fraud"}, after=None,
                            prev_hash=_hash_of(sessions, 1))  # fmt: skip
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE audit_log SET actor = 'alice', timestamp_us = 1, hash = :h WHERE seq = 2"),
                {"h": forged},
            )
        assert verify_chain(sessions).first_bad_seq == 2

        upgrade_to_head(engine)

        assert not verify_chain(sessions).ok
        assert _note(sessions)["already_broken"]["seq"] == 2
    finally:
        engine.dispose()


def _hash_of(sessions: sessionmaker[Session], seq: int) -> str:
    entry = json.loads(list(export_lines(sessions))[seq - 1])
    value: str = entry["hash"]
    return value


def test_a_damaged_row_neither_stops_the_upgrade_nor_is_rewritten(db_url: str) -> None:
    engine, sessions = _old_log_with_a_webhook(db_url)
    try:
        with write_session(sessions) as session:
            record(session, actor="admin", action="monitoring.configure", object_type="deployment",
                   object_id="e", before=None, after={"webhook_url": BASIC})  # fmt: skip
        damaged = "[" * 5000 + json.dumps({"webhook_url": BASIC}) + "]" * 5000
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET before = :d WHERE seq = 2"), {"d": TOO_DEEP})
            connection.execute(text("UPDATE audit_log SET after = :d WHERE seq = 3"), {"d": damaged})
        assert verify_chain(sessions).first_bad_seq == 2

        upgrade_to_head(engine)  # raised before: the control plane could not start

        assert verify_chain(sessions).first_bad_seq == 1  # the redacted entry no longer matches its hash
        note = _note(sessions)
        assert note["already_broken"]["seq"] == 2
        assert note["redacted_seqs"] == [1] and note["unreadable_seqs"] == [3]
        with engine.connect() as connection:
            stored = connection.scalar(text("SELECT CAST(after AS TEXT) FROM audit_log WHERE seq = 3"))
        assert stored == damaged
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    [SLACK, BASIC, "redis://default:ab/cd@host:6379/0", "s3://KEY:/SECRET@bucket/x", "abfs://c:k@acct/p",
     "hdfs://namenode:8020/data@v2", "http://u:s3cr#t@host", "not a url", "https://h?token=x"],
)  # fmt: skip
def test_the_migrations_frozen_redaction_is_todays(url: str) -> None:
    assert MIGRATION.redact_webhook(url) == redact_webhook(url)
    assert MIGRATION.is_redacted(redact_webhook(url))
