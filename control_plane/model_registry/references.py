"""Checks of what a model version points at in other concerns' tables: its run (experiment tracking)
and its feature-view versions (feature registry). Plain queries in the caller's transaction: those
tables come from other migration branches, so there is no foreign key to rely on."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from clients.errors import NotFound
from control_plane.db.models import FeatureViewRow, FeatureViewVersionRow
from control_plane.features.store import Status
from control_plane.model_registry.validation import FeatureRef
from control_plane.tracking.tables import RunRow


def require_run(session: Session, run_id: str, *, lock: bool = False) -> str:
    """The status of run ``run_id`` (NotFound when there is none). With ``lock``, the run's row is held
    with a shared lock to the end of the transaction (PostgreSQL): a status change committed while this
    waited is what it returns, and none can commit before this transaction ends."""
    query = select(RunRow.status).where(RunRow.run_id == run_id)
    if lock:
        query = query.with_for_update(read=True)
    status = session.scalar(query)
    if status is None:
        raise NotFound(f"run {run_id!r} not found: register a version for a run that exists")
    return status


def check_feature_refs(session: Session, refs: list[FeatureRef]) -> None:
    """Every referenced view version exists, is not retired and defines the feature; ``NotFound``
    naming the first reference that fails.

    The version rows are read with a shared lock (PostgreSQL), and the caller holds the registry lock,
    so a concurrent retire or delete cannot slip between this check and the registration's commit."""
    by_view: dict[tuple[str, int], list[FeatureRef]] = defaultdict(list)
    for ref in refs:
        by_view[(ref.view, ref.version)].append(ref)
    for (view, version), view_refs in by_view.items():
        row = session.scalar(
            select(FeatureViewVersionRow)
            .join(FeatureViewRow, FeatureViewRow.id == FeatureViewVersionRow.view_id)
            .where(FeatureViewRow.name == view, FeatureViewVersionRow.version == version)
            .with_for_update(read=True)
        )
        if row is None:
            raise NotFound(
                f"feature view {view!r} version {version} not found (referenced as {view_refs[0]})"
            )
        if row.status == Status.RETIRED:
            raise NotFound(
                f"feature view {view!r} version {version} is retired (referenced as {view_refs[0]})"
            )
        defined = {feature["name"] for feature in row.spec.get("features", [])}
        for ref in view_refs:
            if ref.feature not in defined:
                raise NotFound(
                    f"feature {ref.feature!r} not found in feature view {view!r} version {version}"
                )
