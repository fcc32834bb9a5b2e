"""A monitor config or a reference profile written by another transaction while this one writes the
same on PostgreSQL, interleaved by hand (tests/support/pg_interleave.py): the other's row is uncommitted
when this one looks for it and commits while this one waits for it. The first write of a deployment's
config (or a version's profile) failed with INTERNAL (UniqueViolation on the primary key) instead of
replacing the other's; a replacement read the row without a lock and audited the row as it was before
the other's change as its "before"."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.artifacts.store import ArtifactStore
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_session_factory, read_session
from control_plane.monitoring.config import get_config, put_config
from control_plane.monitoring.profiles import register_reference_profile, resolve_reference
from control_plane.monitoring.tables import MonitorConfigRow, ReferenceProfileRow
from tests.support.pg_interleave import HeldTransaction, race_against
from tests.unit.monitoring.conftest import register_version


def last_audit_before(sessions: sessionmaker[Session], object_id: str) -> Any:
    with read_session(sessions) as session:
        query = select(AuditEntryRow.before).where(AuditEntryRow.object_id == object_id)
        return session.scalars(query.order_by(AuditEntryRow.seq.desc()).limit(1)).one()


def config_row(window_rows: int, actor: str) -> dict[str, Any]:
    config = {"deployment": "churn", "window_rows": window_rows}
    return {"deployment": "churn", "config": config, "updated_by": actor, "updated_at_us": 1}


def test_a_first_monitor_config_written_concurrently_is_replaced_on_postgresql(pg_engine: Engine) -> None:
    sessions = create_session_factory(pg_engine)

    def hold(held: HeldTransaction) -> None:
        held.execute(insert(MonitorConfigRow), config_row(100, "other"))

    ours = pb.MonitorConfig(deployment="churn", window_rows=200)
    race_against(pg_engine, hold, lambda: put_config(sessions, ours, actor="t"))
    assert get_config(sessions, "churn").window_rows == 200  # the last writer's
    assert last_audit_before(sessions, "churn")["window_rows"] == 100


def test_a_monitor_config_replaced_concurrently_is_audited_as_it_was_replaced_on_postgresql(
    pg_engine: Engine,
) -> None:
    sessions = create_session_factory(pg_engine)
    put_config(sessions, pb.MonitorConfig(deployment="churn", window_rows=100), actor="t")

    def hold(held: HeldTransaction) -> None:
        changed = config_row(150, "other")
        held.execute(update(MonitorConfigRow).where(MonitorConfigRow.deployment == "churn").values(changed))

    ours = pb.MonitorConfig(deployment="churn", window_rows=200)
    race_against(pg_engine, hold, lambda: put_config(sessions, ours, actor="t"))
    assert get_config(sessions, "churn").window_rows == 200
    assert last_audit_before(sessions, "churn")["window_rows"] == 150  # not 100: the row it replaced


@pytest.mark.parametrize("first", [True, False], ids=["first", "replaced"])
def test_a_reference_profile_linked_concurrently_is_replaced_on_postgresql(
    pg_engine: Engine, tmp_path: Any, first: bool
) -> None:
    sessions = create_session_factory(pg_engine)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    version = register_version(sessions, store, "churn")
    if not first:
        register_reference_profile(sessions, store, "churn", version, np.zeros((40, 1)), ["old"], actor="t")
    theirs = {
        "model_name": "churn",
        "version": version,
        "artifact_sha256": "a" * 64,
        "feature_names": ["theirs"],
        "output_artifact_sha256": "",
        "output_names": [],
        "n_rows": 40,
        "created_by": "other",
        "created_at_us": 1,
    }

    def hold(held: HeldTransaction) -> None:
        if first:
            held.execute(insert(ReferenceProfileRow), theirs)
        else:
            held.execute(update(ReferenceProfileRow).values(theirs))

    features = np.ones((40, 1))
    info = race_against(
        pg_engine,
        hold,
        lambda: register_reference_profile(sessions, store, "churn", version, features, ["ours"], actor="t"),
    )
    assert list(info.feature_names) == ["ours"]
    with read_session(sessions) as session:
        resolved = resolve_reference(session, "churn", version)
    assert resolved is not None and list(resolved.feature_names) == ["ours"]
    assert last_audit_before(sessions, f"churn/{version}")["feature_names"] == ["theirs"]
