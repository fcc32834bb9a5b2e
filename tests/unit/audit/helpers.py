"""Appending entries and tampering with the stored rows the way someone with database access would:
raw SQL, bypassing the ORM."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.chain import AuditEntry, canonical_json, entry_hash
from control_plane.audit.log import record
from control_plane.db.engine import write_session


def append(
    sessions: sessionmaker[Session],
    index: int,
    *,
    actor: str = "alice",
    object_type: str = "feature_view",
    object_id: str | None = None,
    before: Mapping[Any, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    with write_session(sessions) as session:
        return record(
            session,
            actor=actor,
            action="update" if before else "create",
            object_type=object_type,
            object_id=object_id if object_id is not None else f"view{index}",
            before=before,
            after=after if after is not None else {"index": index, "tags": {"team": "risk"}},
        )


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), params)


def edit_column(engine: Engine, seq: int, column: str, value: Any) -> None:
    if column in ("before", "after"):
        value = canonical_json(value)
    execute(engine, f"UPDATE audit_log SET {column} = :value WHERE seq = :seq", value=value, seq=seq)


def delete_entry(engine: Engine, seq: int) -> None:
    execute(engine, "DELETE FROM audit_log WHERE seq = :seq", seq=seq)


def forge_entry(engine: Engine, seq: int, prev_hash: str, *, correct_hash: bool = True) -> None:
    """Inserts an entry that links to ``prev_hash`` and, with ``correct_hash``, hashes right: all a
    forger can do without also rewriting the head row."""
    fields: dict[str, Any] = {
        "seq": seq,
        "timestamp_us": 1_700_000_000_000_000,
        "actor": "mallory",
        "action": "approve",
        "object_type": "model_version",
        "object_id": "fraud/1",
        "before": None,
        "after": {"status": "APPROVED"},
        "prev_hash": prev_hash,
    }
    digest = entry_hash(**fields) if correct_hash else "f" * 64
    execute(
        engine,
        "INSERT INTO audit_log (seq, timestamp_us, actor, action, object_type, object_id, before, after,"
        " prev_hash, hash) VALUES (:seq, :timestamp_us, :actor, :action, :object_type, :object_id, NULL,"
        " :after, :prev_hash, :hash)",
        **{**fields, "after": canonical_json(fields["after"]), "hash": digest},
    )
