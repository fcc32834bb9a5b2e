"""Gated promotion of an evaluated challenger, as a small state machine advanced by the retraining loop.

``start`` (right after the evaluation):

* failed gates → the version is **Rejected** in the registry with the reasons (status ``rejected``); the
  deployment and the ``champion`` alias are not touched;
* passed, manual approval configured → alias ``challenger`` → the version, which stays
  PendingManualApproval (``awaiting_approval``); once a reviewer approves it, ``advance`` goes on;
* passed → **Approved**, alias ``challenger``, then the shadow phase (when ``shadow_seconds > 0``: the
  version joins the deployment as a shadow variant mirroring all requests) or straight to the canary.

``advance`` (every tick): a shadow phase that has run its time ends with its measured agreement rate
(below ``min_agreement`` → ``failed``, the shadow removed, champion untouched; else on to the canary).
The canary is started through the deployments core and driven by the canary controller; once it is
PROMOTED the ``champion`` alias moves to the version (``promoted``); ROLLED_BACK → ``rolled_back``.
Every step is audited (the registry, the deployments core and :mod:`.records` each record their own).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from control_plane.deployments.core import DeploymentManager
from control_plane.model_registry.registry import ModelRegistry
from control_plane.retraining import records

ACTOR = "retraining"
CHAMPION = "champion"
CHALLENGER = "challenger"

REJECTED = "rejected"
AWAITING_APPROVAL = "awaiting_approval"
SHADOW = "shadow"
CANARY = "canary"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
IN_PROGRESS = (AWAITING_APPROVAL, SHADOW, CANARY)


@dataclass(frozen=True)
class Promoter:
    sessions: sessionmaker[Session]
    registry: ModelRegistry
    deployments: DeploymentManager

    def start(self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy) -> str:
        """First step after an evaluation; returns the promotion status."""
        name, version = evaluation.model_name, evaluation.challenger_version
        if not evaluation.passed:
            reason = "failed gates: " + "; ".join(evaluation.reasons[:3])
            self.registry.review(name, version, mpb.REJECTED, reason[:1000], actor=ACTOR)
            return self._set(evaluation, REJECTED, reason)
        self.registry.set_alias(name, CHALLENGER, version, actor=ACTOR)
        if policy.manual_approval:
            return self._set(evaluation, AWAITING_APPROVAL, "passed gates; waiting for a reviewer's approval")
        passed = "passed gates: " + "; ".join(evaluation.reasons[:3])
        self.registry.review(name, version, mpb.APPROVED, passed[:1000], actor=ACTOR)
        return self._next_phase(evaluation, policy)

    def advance(
        self,
        evaluation: pb.Evaluation,
        policy: pb.PromotionPolicy,
        now_us: int,
        agreement: float | None = None,
    ) -> str:
        """Moves an in-progress promotion on when it can; returns its (possibly new) status.
        ``agreement``: the shadow's agreement rate, measured by the caller once the phase has run."""
        status = evaluation.promotion_status
        if status == AWAITING_APPROVAL:
            found = self.registry.get_version(evaluation.model_name, evaluation.challenger_version)
            if found.approval.status == mpb.APPROVED:
                return self._next_phase(evaluation, policy)
            if found.approval.status == mpb.REJECTED:
                return self._set(evaluation, REJECTED, f"rejected by a reviewer: {found.approval.reason}")
            return status
        if status == SHADOW:
            if now_us - evaluation.updated_at_us < policy.shadow_seconds * 1e6 or agreement is None:
                return status
            self._remove_shadow(evaluation)
            if agreement < policy.min_agreement:
                reason = f"shadow agreement {agreement:.1%} below {policy.min_agreement:.1%}"
                return self._set(evaluation, FAILED, reason, agreement)
            self.sessions_note_agreement(evaluation, agreement)
            return self._start_canary(evaluation, policy, f"shadow agreement {agreement:.1%}")
        if status == CANARY:
            canary = self.deployments.get(evaluation.deployment).canary
            if canary.model_name != evaluation.model_name or canary.version != evaluation.challenger_version:
                return status
            if canary.status == dpb.CANARY_STATUS_PROMOTED:
                self.registry.set_alias(
                    evaluation.model_name, CHAMPION, evaluation.challenger_version, actor=ACTOR
                )
                return self._set(evaluation, PROMOTED, f"canary promoted: {canary.reason}; now the champion")
            if canary.status == dpb.CANARY_STATUS_ROLLED_BACK:
                return self._set(evaluation, ROLLED_BACK, f"canary rolled back: {canary.reason}")
        return status

    def sessions_note_agreement(self, evaluation: pb.Evaluation, agreement: float) -> None:
        records.set_promotion(
            self.sessions,
            evaluation.id,
            SHADOW,
            f"shadow agreement {agreement:.1%}",
            actor=ACTOR,
            agreement_rate=agreement,
        )

    def shadow_variant(self, evaluation: pb.Evaluation) -> str:
        return f"{evaluation.model_name}-v{evaluation.challenger_version}-shadow"

    def _next_phase(self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy) -> str:
        if policy.shadow_seconds > 0:
            current = self.deployments.get(evaluation.deployment)
            shadow = dpb.Variant(
                name=self.shadow_variant(evaluation),
                model_name=evaluation.model_name,
                version=evaluation.challenger_version,
                role=dpb.VARIANT_ROLE_SHADOW,
                traffic_percent=100.0,
            )
            request = dpb.UpdateDeploymentRequest(
                name=evaluation.deployment, replace_variants=True, variants=[*current.variants, shadow]
            )
            self.deployments.update(request, actor=ACTOR)
            return self._set(evaluation, SHADOW, f"shadowing all requests for {policy.shadow_seconds:g} s")
        return self._start_canary(evaluation, policy, "approved")

    def _remove_shadow(self, evaluation: pb.Evaluation) -> None:
        current = self.deployments.get(evaluation.deployment)
        name = self.shadow_variant(evaluation)
        if any(v.name == name for v in current.variants):
            self.deployments.rollback(evaluation.deployment, name, "shadow phase over", actor=ACTOR)

    def _start_canary(self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy, why: str) -> str:
        request = dpb.StartCanaryRequest(
            name=evaluation.deployment,
            model_name=evaluation.model_name,
            version=evaluation.challenger_version,
        )
        if policy.HasField("canary"):
            request.policy.CopyFrom(policy.canary)
        self.deployments.start_canary(request, actor=ACTOR)
        return self._set(evaluation, CANARY, f"{why}; canary started")

    def _set(
        self, evaluation: pb.Evaluation, status: str, reason: str, agreement: float | None = None
    ) -> str:
        records.set_promotion(
            self.sessions, evaluation.id, status, reason, actor=ACTOR, agreement_rate=agreement
        )
        return status
