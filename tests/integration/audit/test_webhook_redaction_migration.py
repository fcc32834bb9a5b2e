"""Migration 0026: audit entries written before webhook URLs were redacted held them whole, readable by
the read-only token through QueryAudit/ExportAudit. The migration redacts them and re-hashes the chain,
which records the rewrite (an ``audit.redact`` entry naming the head before it) and still verifies."""

from __future__ import annotations

import json

import pytest
from alembic import command

from control_plane.audit.export import export_lines
from control_plane.audit.log import record
from control_plane.audit.verify import verify_chain
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head, write_session
from control_plane.db.migrate import alembic_config
from control_plane.monitoring.webhooks import redact_webhook

pytestmark = pytest.mark.integration

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXXXXXXXXXX"
BASIC = "https://alert:hunter2-long-password@receiver.example:8443/hook"


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
