"""Checks of what a model version points at in other concerns' tables: its run (experiment tracking)
and its feature-view versions (feature registry), plain queries in the caller's transaction (those
tables come from other migration branches, so there is no foreign key to rely on); and of its feature
references against what its training set was read from (the dataset's record in the offline store)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from clients.feature_refs import parse_ref
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


def check_trained_on(refs: list[FeatureRef], record: Mapping[str, Any], dataset_hash: str) -> None:
    """FAILED_PRECONDITION naming the first reference to a view version, or a feature of it, that the
    training set ``dataset_hash`` (whose offline-store ``record`` this is) was not read from. A version
    serves the view versions its references name, so they must be the ones it was trained on: one
    registered at a newer version than its training set read served that version's values (none yet, or
    values the model never saw). A record that does not list what it read checks nothing."""
    read: dict[tuple[str, int], frozenset[str] | None] = {}
    for view in record.get("views") or ():
        columns = view.get("columns")
        key = (str(view.get("view")), int(view.get("version") or 0))
        read[key] = None if columns is None else _features_of(columns)
    if not read:
        return
    for index, ref in enumerate(refs):
        key = (ref.view, ref.version)
        if key in read:
            columns = read[key]
            if columns is None or ref.feature in columns:
                continue
        what = "; ".join(
            f"{view}@{version}" + ("" if columns is None else f" ({', '.join(sorted(columns))})")
            for (view, version), columns in sorted(read.items())
        )
        raise FailedPrecondition(
            f"feature_refs[{index}]: {str(ref)!r} names feature view {ref.view!r} version {ref.version}"
            f" and feature {ref.feature!r}, which training set {dataset_hash} was not read from (it read"
            f" {what}); a version serves the feature versions it names: register those it was trained on"
        )


def _features_of(columns: list[Any]) -> frozenset[str] | None:
    """The features a record's training-set columns hold: each column is named by its reference with the
    feature spelled out (``rider_stats:trips``, ``rider_stats@1:trips``). None when one is not so named."""
    features: set[str] = set()
    for column in columns:
        try:
            feature = parse_ref(str(column)).feature
        except InvalidArgument:
            return None
        if feature is None:
            return None
        features.add(feature)
    return frozenset(features)
