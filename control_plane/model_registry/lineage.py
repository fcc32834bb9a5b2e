"""Lineage queries over the metadata database, read in one transaction so the chain is consistent:

* :func:`lineage` walks back from a model version: the deployments using it ← the version ← its run
  (experiment, parameters, status) ← its training dataset (hash and the point-in-time query that built
  it) ← the feature views at the versions it reads, each with the data the training set was built
  from (:func:`add_materialized`: the dataset's record in the offline store, its written copy, and per
  view the offline-store folder and data files read) and, labelled apart, the view's registered source
  (what the feature registry declares; ingestion reads it, the training set does not);
* :func:`usages` walks forward from a feature view (at one or any version) to the model versions
  reading it, their deployments and the retraining promotions in progress about to deploy them.

Deployments, and the retraining promotions in progress that are about to deploy a version, come from the
registry's :class:`~control_plane.model_registry.guards.ModelReferenceGuard` plug-ins (the users each
reports, told apart by kind)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from clients.aether.v1 import model_registry_pb2 as pb
from control_plane.db.models import FeatureViewRow, FeatureViewVersionRow
from control_plane.db.strings import byte_order
from control_plane.features.store import require_version as require_view_version
from control_plane.features.store import require_view, spec_from_json
from control_plane.model_registry import messages
from control_plane.model_registry.approval import to_proto
from control_plane.model_registry.guards import DEPLOYMENT, PROMOTION, ModelUser
from control_plane.model_registry.tables import ModelVersionFeatureRow, ModelVersionRow, RegisteredModelRow
from control_plane.model_registry.validation import parse_feature_ref
from control_plane.tracking.tables import ExperimentRow, ParamRow, RunRow

#: ``users_of(session, model, version)``: who uses a model version (the registry's guards).
UsersOf = Callable[[Session, str, int | None], list[ModelUser]]


def _deployments(users: list[ModelUser]) -> list[pb.DeploymentRef]:
    return [pb.DeploymentRef(name=user.name, detail=user.detail) for user in users if user.kind == DEPLOYMENT]


def _promotions(users: list[ModelUser]) -> list[pb.PromotionRef]:
    return [pb.PromotionRef(name=user.name, detail=user.detail) for user in users if user.kind == PROMOTION]


def run_lineage(session: Session, run_id: str) -> pb.RunLineage | None:
    """The run with its experiment and parameters; None when it no longer exists."""
    found = session.execute(
        select(RunRow, ExperimentRow.name)
        .join(ExperimentRow, ExperimentRow.id == RunRow.experiment_pk)
        .where(RunRow.run_id == run_id)
    ).first()
    if found is None:
        return None
    run, experiment = found
    params = session.execute(select(ParamRow.key, ParamRow.value).where(ParamRow.run_pk == run.id))
    return pb.RunLineage(
        run_id=run.run_id,
        experiment=experiment,
        status=run.status,
        params={key: value for key, value in params},
        start_time_us=run.start_time_us,
        end_time_us=run.end_time_us,
    )


def feature_view_lineage(session: Session, view: str, version: int, used: list[str]) -> pb.FeatureViewLineage:
    """One feature view at one version with its source; only the name and version when it is gone
    (possible only if the feature registry ran without the model registry's guard)."""
    found = session.execute(
        select(FeatureViewRow, FeatureViewVersionRow)
        .join(FeatureViewVersionRow, FeatureViewVersionRow.view_id == FeatureViewRow.id)
        .where(FeatureViewRow.name == view, FeatureViewVersionRow.version == version)
    ).first()
    if found is None:
        return pb.FeatureViewLineage(name=view, version=version, features_used=used)
    view_row, version_row = found
    spec = spec_from_json(version_row.spec)
    return pb.FeatureViewLineage(
        name=view,
        version=version,
        status=version_row.status,
        entity=spec.entity,
        features_used=used,
        feature_count=len(spec.features),
        ttl_seconds=spec.ttl_seconds,
        source=spec.source,
        owner=view_row.owner,
    )


def lineage(
    session: Session, users_of: UsersOf, model: RegisteredModelRow, row: ModelVersionRow
) -> pb.Lineage:
    version = messages.version_messages(session, model.name, [row])[0]
    used: dict[tuple[str, int], list[str]] = {}  # insertion-ordered: views in the model's input order
    for text in version.feature_refs:
        ref = parse_feature_ref(text)
        used.setdefault((ref.view, ref.version), []).append(ref.feature)
    run = run_lineage(session, row.run_id) if row.run_id else None
    users = users_of(session, model.name, row.version)
    return pb.Lineage(
        deployments=_deployments(users),
        promotions=_promotions(users),
        model_version=version,
        run=run,
        dataset=version.dataset,
        feature_views=[
            feature_view_lineage(session, view, view_version, features)
            for (view, view_version), features in used.items()
        ],
    )


def add_materialized(lineage: pb.Lineage, record: Mapping[str, Any] | None) -> None:
    """Fills in what the training set was built from, from its record in the offline store (written by
    ``control_plane.offline.historical``); ``record`` None: the store holds none for the dataset hash
    (built with ``record=False``, or against another offline root), which the lineage says rather than
    leaving it blank."""
    if not lineage.dataset.hash:
        return
    if record is None:
        lineage.materialized.CopyFrom(pb.MaterializedDataset(recorded=False))
        return
    entity_rows = record.get("entity_rows") or {}
    lineage.materialized.CopyFrom(
        pb.MaterializedDataset(
            recorded=True,
            output_path=str(record.get("output_path") or ""),
            row_count=int(record.get("row_count") or 0),
            created_at=str(record.get("created_at") or ""),
            entity_rows_sha256=str(entity_rows.get("sha256") or ""),
        )
    )
    read = {(str(v.get("view")), int(v.get("version") or 0)): v for v in record.get("views", ())}
    for view in lineage.feature_views:
        found = read.get((view.name, view.version))
        if found is None or "location" not in found:  # a record from before locations were kept
            continue
        files = [str(f) for f in found.get("files", ())]
        view.offline_location = str(found["location"])
        view.offline_files = len(files)
        view.offline_files_sha256 = hashlib.sha256("".join(f"{f}\n" for f in files).encode()).hexdigest()


def usages_query(view: str, version: int | None) -> Select[str, int, str, ModelVersionFeatureRow]:
    """(model name, model version, approval status, feature reference row) of every reference to
    ``view`` (at ``version``; any when None), ordered by model and version."""
    query = (
        select(
            RegisteredModelRow.name,
            ModelVersionRow.version,
            ModelVersionRow.approval_status,
            ModelVersionFeatureRow,
        )
        .join(ModelVersionRow, ModelVersionRow.id == ModelVersionFeatureRow.model_version_id)
        .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
        .where(ModelVersionFeatureRow.view_name == view)
        .order_by(
            byte_order(RegisteredModelRow.name), ModelVersionRow.version, ModelVersionFeatureRow.position
        )
    )
    if version is not None:
        query = query.where(ModelVersionFeatureRow.view_version == version)
    return query


def usages(session: Session, users_of: UsersOf, view: str, version: int | None) -> list[pb.FeatureUsage]:
    """Model versions reading ``view`` (at ``version``; any when None); ``NotFound`` for an unknown
    view or version, so a typo does not look like "unused"."""
    view_row = require_view(session, view)
    if version is not None:
        require_view_version(session, view_row, version)
    found: dict[tuple[str, int], pb.FeatureUsage] = {}
    for model, model_version, status, ref in session.execute(usages_query(view, version)):
        usage = found.get((model, model_version))
        if usage is None:
            users = users_of(session, model, model_version)
            usage = found[(model, model_version)] = pb.FeatureUsage(
                model_name=model,
                version=model_version,
                approval_status=to_proto(status),
                deployments=_deployments(users),
                promotions=_promotions(users),
            )
        usage.feature_refs.append(f"{ref.view_name}@{ref.view_version}:{ref.feature}")
    return list(found.values())
