"""Stops the model registry from deleting a challenger version that a retraining promotion in progress is
moving through approval, shadow or canary, and names that promotion in the refusal and in the version's
lineage and usages (``promotions``, beside the deployments serving it: a version still awaiting approval
is served nowhere yet, and looked unused there).

Without it the delete went through and the promotion never ended: each tick asked the registry for the
version (NOT_FOUND, logged and retried for ever) or waited on a canary of a version that was gone."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.model_registry.guards import PROMOTION, ModelUser
from control_plane.retraining.promotion import IN_PROGRESS
from control_plane.retraining.tables import RetrainingEvaluationRow, RetrainingPromotionRow


class PromotionModelGuard:
    """A :class:`~control_plane.model_registry.guards.ModelReferenceGuard` over the promotions in progress;
    it reads inside the registry's transaction, as the deployments' guard does."""

    def references(self, session: Session, model: str, version: int | None) -> list[ModelUser]:
        query = (
            select(RetrainingEvaluationRow, RetrainingPromotionRow.status)
            .join(RetrainingPromotionRow, RetrainingPromotionRow.evaluation_id == RetrainingEvaluationRow.id)
            .where(RetrainingEvaluationRow.model_name == model)
            .where(RetrainingPromotionRow.status.in_(IN_PROGRESS))
            .order_by(RetrainingEvaluationRow.id)
        )
        if version is not None:
            query = query.where(RetrainingEvaluationRow.challenger_version == version)
        users = []
        for evaluation, status in session.execute(query):
            detail = f"challenger of deployment {evaluation.deployment!r}, promotion {status}"
            if version is None:
                detail = f"version {evaluation.challenger_version}: {detail}"
            users.append(ModelUser(PROMOTION, f"evaluation {evaluation.id}", detail))
        return users
