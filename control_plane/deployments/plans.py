"""The plan snapshot the data plane watches: every deployment with, per variant, everything needed to
serve its model version (artifact checksum and location, signature, feature refs, serving knobs), so the
data plane never reads the metadata database. Built once per deployments revision and reused."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as pb
from clients.errors import AetherError
from control_plane.db.engine import read_session
from control_plane.db.strings import byte_order
from control_plane.deployments import store
from control_plane.deployments.messages import ROLE_TO_PROTO, serving_of
from control_plane.deployments.tables import DeploymentRow
from control_plane.model_registry.registry import ModelRegistry

_log = logging.getLogger("aether.control_plane.deployments.plans")


class PlanBuilder:
    def __init__(self, sessions: sessionmaker[Session], models: ModelRegistry) -> None:
        self._sessions = sessions
        self._models = models
        self._lock = threading.Lock()
        self._cached: pb.DeploymentPlanSnapshot | None = None

    def snapshot(self) -> pb.DeploymentPlanSnapshot:
        with self._lock:  # concurrent watchers build a new revision once
            with read_session(self._sessions) as session:
                revision = store.current_revision(session)
                if self._cached is not None and self._cached.revision == revision:
                    return self._cached
                rows = list(session.scalars(select(DeploymentRow).order_by(byte_order(DeploymentRow.name))))
                variants = store.variants_of(session, [r.id for r in rows])
            snapshot = pb.DeploymentPlanSnapshot(revision=revision)
            for row in rows:
                plan = snapshot.plans.add(
                    deployment=row.name, plan_revision=row.plan_revision, routing_salt=row.routing_salt
                )
                serving = serving_of(row)
                for variant in variants[row.id]:
                    planned = plan.variants.add(
                        name=variant.name,
                        role=ROLE_TO_PROTO[variant.role],
                        traffic_percent=variant.traffic_percent,
                    )
                    self._fill_model(planned.model, variant.model_name, variant.version, serving)
            self._cached = snapshot
            return snapshot

    def _fill_model(
        self, spec: pb.ModelServingSpec, model_name: str, version: int, serving: pb.ServingConfig
    ) -> None:
        spec.model_name = model_name
        spec.version = version
        spec.serving.CopyFrom(serving)
        try:
            found = self._models.get_version(model_name, version)
        except AetherError as exc:  # the guard keeps deployed versions; this would be a bug, not an outage
            _log.error("deployed model %s version %d cannot be read: %s", model_name, version, exc)
            return
        spec.artifact_sha256 = found.artifact.sha256
        spec.artifact_uri = found.artifact.uri
        spec.inputs.extend(found.signature.inputs)
        spec.outputs.extend(found.signature.outputs)
        if found.signature.imputes_missing:
            # The version says it takes NaN for "missing" and imputes it itself: NaN must reach it (else
            # ModelInfer refuses it and Predict feeds a missing feature as 0, which the model never saw).
            spec.serving.allow_non_finite = True
        spec.feature_refs.extend(found.feature_refs)
