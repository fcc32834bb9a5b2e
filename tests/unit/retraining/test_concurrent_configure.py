"""A trigger config written by another transaction while this one writes the same on PostgreSQL,
interleaved by hand (tests/support/pg_interleave.py): the other's row is uncommitted when this one looks
for it and commits while this one waits for it. A deployment's first config failed with INTERNAL
(UniqueViolation on the primary key) instead of replacing the other's; a replacement read the row
without a lock and audited the row as it was before the other's change as its "before"."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import retraining_pb2 as pb
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_session_factory, read_session
from control_plane.retraining.config import get_config, put_config
from control_plane.retraining.tables import RetrainingConfigRow
from tests.support.pg_interleave import HeldTransaction, race_against


def last_audit(sessions: sessionmaker[Session]) -> tuple[str, Any]:
    with read_session(sessions) as session:
        query = select(AuditEntryRow.action, AuditEntryRow.before).where(AuditEntryRow.object_id == "churn")
        action, before = session.execute(query.order_by(AuditEntryRow.seq.desc()).limit(1)).one()
        return action, before


def theirs(cooldown_seconds: float) -> dict[str, Any]:
    config = {"deployment": "churn", "cooldown_seconds": cooldown_seconds}
    return {"deployment": "churn", "config": config, "updated_by": "other", "updated_at_us": 1}


@pytest.mark.parametrize("first", [True, False], ids=["first", "replaced"])
def test_a_trigger_config_written_concurrently_is_replaced_and_audited_on_postgresql(
    pg_engine: Engine, first: bool
) -> None:
    sessions = create_session_factory(pg_engine)
    if not first:
        put_config(sessions, pb.TriggerConfig(deployment="churn", cooldown_seconds=60), actor="t")

    def hold(held: HeldTransaction) -> None:
        if first:
            held.execute(insert(RetrainingConfigRow), theirs(90))
        else:
            where = RetrainingConfigRow.deployment == "churn"
            held.execute(update(RetrainingConfigRow).where(where).values(theirs(90)))

    ours = pb.TriggerConfig(deployment="churn", cooldown_seconds=120)
    race_against(pg_engine, hold, lambda: put_config(sessions, ours, actor="t"))
    assert get_config(sessions, "churn").cooldown_seconds == 120  # the last writer's
    action, before = last_audit(sessions)
    assert action == "configure" and before["cooldown_seconds"] == 90  # not 60: the row it replaced
