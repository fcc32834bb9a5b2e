"""The model registry's answer to the feature registry's retire/delete check: a feature-view version
that a registered model version reads cannot be retired, nor its view deleted."""

from __future__ import annotations

from sqlalchemy.orm import Session

from control_plane.model_registry.lineage import usages_query


class ModelFeatureGuard:
    """A :class:`control_plane.features.guards.ReferenceGuard` listing the model versions that read a
    feature view (at one version, or at any)."""

    def references(self, session: Session, view: str, version: int | None) -> list[str]:
        holders: list[str] = []
        for model, model_version, _status, _ref in session.execute(usages_query(view, version)):
            holder = f"model {model!r} version {model_version}"
            if not holders or holders[-1] != holder:  # rows come ordered by model and version
                holders.append(holder)
        return holders
