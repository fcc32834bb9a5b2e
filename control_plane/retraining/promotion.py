"""Gated promotion of an evaluated challenger, as a small state machine advanced by the retraining loop.

``start`` (right after the evaluation):

* failed gates → the version is **Rejected** in the registry with the reasons (status ``rejected``); the
  deployment and the ``champion`` alias are not touched;
* passed, manual approval configured → alias ``challenger`` → the version, which stays
  PendingManualApproval (``awaiting_approval``); once a reviewer approves it, ``advance`` goes on;
* passed → **Approved**, alias ``challenger``, then the shadow phase (when ``shadow_seconds > 0``: the
  version joins the deployment as a shadow variant mirroring all requests) or straight to the canary.

Handing the challenger to the deployment (the shadow variant, the canary) is recorded before the
deployment is touched: the promotion is ``pending_shadow`` / ``pending_canary`` first, then the deployment
changes, then the phase is recorded. The deployments core may refuse the change: it runs one canary at a
time and changes no variants while one runs. The promotion then stays pending with the refusal as its
reason, and every ``advance`` tries again until the deployment takes it (a crash in between is retried
the same way; the changes are idempotent). Only a busy or unreachable deployment is waited for
(``FAILED_PRECONDITION``, ``UNAVAILABLE``); any other refusal (an invalid canary policy) ``failed`` the
promotion, since every retry would be refused alike. The challenger only enters while the champion it was
evaluated against is still the deployment's primary: when another version took its place meanwhile, the
promotion ``failed`` as superseded, since its evaluation no longer says anything about the new champion.

``advance`` (every tick): a pending promotion tries the deployment again; a shadow phase that has run its
time ends with its measured agreement rate (below ``min_agreement`` → ``failed``, the shadow removed,
champion untouched; else on to the canary), or ``failed`` when there was nothing to measure: no mirrored
request the primary answered, so nothing shows the challenger works. The canary is started through the
deployments core and driven by the canary controller; once it is PROMOTED the ``champion`` alias moves to
the version (``promoted``); ROLLED_BACK → ``rolled_back``. When the deployment shows another canary by
the next ``advance`` (its canary ended and an operator started another in between), its primary decides:
the challenger → ``promoted``, the champion → ``rolled_back``, another version → ``failed`` (superseded).
A promotion still ``pending_canary`` whose canary the deployment shows already ended (the control plane
stopped after the canary started and before ``canary`` was recorded, and the controller finished it
meanwhile) ends as that canary did. A deleted deployment ends its promotion ``failed``: nothing will take
the challenger any more. Every step is audited (the registry, the
deployments core and :mod:`.records` each record their own).

The ``challenger`` alias names the version whose promotion is in progress: set when it passes its gates,
and removed when the promotion ends, whichever way (:data:`ENDED`: rejected by the gates or a reviewer,
failed, rolled back, or promoted, when the ``champion`` alias names it instead). Left in place, it showed
a challenger that would never be promoted. It is removed only while it still names this version (a later
challenger keeps it), and before the end is recorded, so a crash in between leaves the promotion in
progress and the next ``advance`` ends it again. The history stays in the evaluation and promotion
records and the audit log (the registry audits the removal as an alias ``delete``). While a promotion is
in progress its deployment does not retrain (the trigger guard of :mod:`.loop`), nor does any other
deployment serving the same model (the alias is the model's), so no later challenger takes the alias from
it: one did, and a reviewer approving the version the alias named approved the wrong one. Nothing times
a promotion out: one waiting for a reviewer who never decides ends when its version is rejected in the
registry (``rejected``, at the next ``advance``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import AetherError, FailedPrecondition, NotFound
from control_plane.deployments.core import DeploymentManager
from control_plane.model_registry.registry import ModelRegistry
from control_plane.retraining import evaluation_records

ACTOR = "retraining"
#: The refusals of a deployment that is busy (another canary runs, its state is being changed) or out of
#: reach for now: a pending promotion waits them out. Any other refusal is final.
WAIT_ON = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE})
CHAMPION = "champion"
CHALLENGER = "challenger"

REJECTED = "rejected"
AWAITING_APPROVAL = "awaiting_approval"
PENDING_SHADOW = "pending_shadow"
PENDING_CANARY = "pending_canary"
SHADOW = "shadow"
CANARY = "canary"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
#: Passed (and approved), the deployment still to take the challenger in: ``advance`` retries.
PENDING = (PENDING_SHADOW, PENDING_CANARY)
IN_PROGRESS = (AWAITING_APPROVAL, *PENDING, SHADOW, CANARY)
#: The promotion is over: the ``challenger`` alias no longer names its version.
ENDED = (REJECTED, PROMOTED, ROLLED_BACK, FAILED)


class _DeploymentGone(Exception):
    """The promotion's deployment was deleted. Not an :class:`AetherError`, so that the hand-off does not
    take it for a refusal to wait out: raised as NOT_FOUND, the loop logged it every tick and the
    promotion stayed in progress for ever."""


@dataclass(frozen=True)
class Promoter:
    sessions: sessionmaker[Session]
    registry: ModelRegistry
    deployments: DeploymentManager

    def start(self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy) -> str:
        """First step after an evaluation; returns the promotion status. A refusal of the registry (the
        version was deleted, or a reviewer decided otherwise meanwhile) is final, so it is recorded rather
        than retried; anything else propagates and the loop starts the promotion again."""
        name, version = evaluation.model_name, evaluation.challenger_version
        if not evaluation.passed:
            reason = "failed gates: " + "; ".join(evaluation.reasons[:3])
            try:
                self._review(name, version, mpb.REJECTED, reason[:1000])
            except AetherError as exc:
                reason += f" (the registry refused to reject it: {exc})"
            return self._set(evaluation, REJECTED, reason)
        try:
            self.registry.set_alias(name, CHALLENGER, version, actor=ACTOR)
            if policy.manual_approval:
                return self._set(
                    evaluation, AWAITING_APPROVAL, "passed gates; waiting for a reviewer's approval"
                )
            passed = "passed gates: " + "; ".join(evaluation.reasons[:3])
            self._review(name, version, mpb.APPROVED, passed[:1000])
        except AetherError as exc:
            return self._set(evaluation, FAILED, f"passed gates, but the registry refused it: {exc}")
        try:
            return self._next_phase(evaluation, policy, "approved")
        except _DeploymentGone as gone:
            return self._set(evaluation, FAILED, str(gone))

    def _review(self, name: str, version: int, decision: mpb.ApprovalStatus, reason: str) -> None:
        """Approves or rejects the challenger as its evaluation decided. A version a reviewer already
        decided the same way keeps their review: the registry refuses any review of a decided version but
        an exact repeat (FAILED_PRECONDITION), and the decision the promotion wanted is there already,
        so it goes on (it used to, when the registry answered such a review OK and kept the first)."""
        try:
            self.registry.review(name, version, decision, reason, actor=ACTOR)
        except FailedPrecondition:
            try:
                held = self.registry.get_version(name, version).approval.status
            except NotFound:
                held = mpb.APPROVAL_STATUS_UNSPECIFIED
            if held != decision:
                raise

    def advance(
        self,
        evaluation: pb.Evaluation,
        policy: pb.PromotionPolicy,
        now_us: int,
        agreement: float | None = None,
        *,
        not_comparable: str = "",
    ) -> str:
        """Moves an in-progress promotion on when it can; returns its (possibly new) status.
        ``agreement``: the shadow's agreement rate, measured by the caller over the phase (None: no
        comparable request was found). ``not_comparable``: why the shadow's answers cannot be compared
        with the primary's at all (their classes differ, or one's columns carry no labels)."""
        try:
            return self._advance(evaluation, policy, now_us, agreement, not_comparable)
        except _DeploymentGone as gone:
            return self._set(evaluation, FAILED, str(gone))

    def _advance(
        self,
        evaluation: pb.Evaluation,
        policy: pb.PromotionPolicy,
        now_us: int,
        agreement: float | None,
        not_comparable: str,
    ) -> str:
        status = evaluation.promotion_status
        if status == AWAITING_APPROVAL:
            try:
                found = self.registry.get_version(evaluation.model_name, evaluation.challenger_version)
            except NotFound as exc:  # deleted before the registry refused that (``model_guard``)
                return self._set(evaluation, FAILED, f"the challenger is gone: {exc}")
            if found.approval.status == mpb.APPROVED:
                return self._next_phase(evaluation, policy, "approved")
            if found.approval.status == mpb.REJECTED:
                return self._set(evaluation, REJECTED, f"rejected by a reviewer: {found.approval.reason}")
            return status
        if status == PENDING_SHADOW:
            return self._next_phase(evaluation, policy, "approved; the deployment took it once free")
        if status == PENDING_CANARY:
            ended = self._ended_before_recorded(evaluation)
            if ended is not None:
                return ended
            return self._start_canary(evaluation, policy, "the deployment took it once free")
        if status == SHADOW:
            if now_us - evaluation.updated_at_us < policy.shadow_seconds * 1e6:
                return status
            self._remove_shadow(evaluation)
            if not_comparable:
                # No number rather than a wrong one: the gate cannot be judged, so only a phase that
                # measures without a gate (min_agreement 0) goes on to the canary.
                reason = f"shadow agreement not comparable: {not_comparable}"
                if policy.min_agreement > 0:
                    return self._set(
                        evaluation, FAILED, f"{reason}; min_agreement {policy.min_agreement:.1%}"
                    )
                return self._start_canary(evaluation, policy, reason)
            if agreement is None:
                reason = (
                    f"shadow phase of {policy.shadow_seconds:g} s over with nothing to compare: no mirrored "
                    "request was answered by the primary"
                )
                return self._set(evaluation, FAILED, reason)
            if agreement < policy.min_agreement:
                reason = f"shadow agreement {agreement:.1%} below {policy.min_agreement:.1%}"
                return self._set(evaluation, FAILED, reason, agreement)
            measured = f"shadow agreement {agreement:.1%}"
            if policy.min_agreement <= 0:  # no gate: a reader must not take the figure for one passed
                measured += " (measured only: min_agreement is 0)"
            return self._start_canary(evaluation, policy, measured, agreement)
        if status == CANARY:
            deployment = self._deployment(evaluation)
            canary = deployment.canary
            if canary.model_name != evaluation.model_name or canary.version != evaluation.challenger_version:
                return self._canary_replaced(evaluation, deployment)
            return self._canary_ended(evaluation, canary) or status
        return status

    def _canary_ended(self, evaluation: pb.Evaluation, canary: dpb.CanaryState, note: str = "") -> str | None:
        """The promotion's end when the challenger's ``canary`` has ended; None while it runs."""
        if canary.status == dpb.CANARY_STATUS_PROMOTED:
            return self._promoted(evaluation, f"canary promoted{note}: {canary.reason}; now the champion")
        if canary.status == dpb.CANARY_STATUS_ROLLED_BACK:
            return self._set(evaluation, ROLLED_BACK, f"canary rolled back{note}: {canary.reason}")
        return None

    def _ended_before_recorded(self, evaluation: pb.Evaluation) -> str | None:
        """A ``pending_canary`` promotion whose canary the deployments core started but whose ``canary``
        phase was never recorded (the control plane was killed in between), and which the canary
        controller finished meanwhile, ends as that canary did. Looking only for a running canary, the
        promotion took a promoted one for a superseded champion (``failed``, the ``champion`` alias left
        on the old version) and started a rolled-back one a second time.

        The canary is this promotion's when it is of the challenger and its current step started at or
        after the pending state's last write: that write precedes the start (see :meth:`_enter`), and a
        step starts no earlier than its canary, so a canary of the same version that ran before this
        promotion was pending (one a person started by hand) is not taken for it."""
        canary = self._deployment(evaluation).canary
        ours = (canary.model_name, canary.version) == (evaluation.model_name, evaluation.challenger_version)
        if not ours or canary.step_started_at_us < evaluation.updated_at_us:
            return None
        return self._canary_ended(evaluation, canary, " (started before the control plane stopped)")

    def _deployment(self, evaluation: pb.Evaluation) -> dpb.Deployment:
        try:
            return self.deployments.get(evaluation.deployment)
        except NotFound as exc:
            raise _DeploymentGone(f"deployment {evaluation.deployment!r} was deleted") from exc

    def _promoted(self, evaluation: pb.Evaluation, reason: str) -> str:
        self.registry.set_alias(evaluation.model_name, CHAMPION, evaluation.challenger_version, actor=ACTOR)
        return self._set(evaluation, PROMOTED, reason)

    def _canary_replaced(self, evaluation: pb.Evaluation, deployment: dpb.Deployment) -> str:
        """The deployment shows another canary (or none) than this challenger's: its canary ended and a
        later one took its place before the loop saw the end. Only one canary runs at a time, so this one
        will not come back; waiting for it kept the promotion ``canary`` for ever and the ``champion`` alias
        on the old version. What the deployment serves now says how it ended."""
        serving = next((v for v in deployment.variants if v.role == dpb.VARIANT_ROLE_PRIMARY), None)
        serves = "no primary" if serving is None else f"{serving.model_name} v{serving.version}"
        later = deployment.canary
        replaced = f"its canary was replaced ({later.model_name} v{later.version}) before the loop saw it end"
        if later.model_name == "" and later.version == 0:
            replaced = "its canary is no longer on the deployment"
        if serving is not None and (serving.model_name, serving.version) == (
            evaluation.model_name,
            evaluation.challenger_version,
        ):
            return self._promoted(evaluation, f"{replaced}; it serves as the primary: now the champion")
        if serving is not None and (serving.model_name, serving.version) == (
            evaluation.model_name,
            evaluation.champion_version,
        ):
            why = (
                f"{replaced}; the champion v{evaluation.champion_version} still serves: taken as rolled back"
            )
            return self._set(evaluation, ROLLED_BACK, why)
        return self._set(
            evaluation,
            FAILED,
            f"superseded: {replaced}; deployment {evaluation.deployment!r} now serves {serves}",
        )

    def shadow_variant(self, evaluation: pb.Evaluation) -> str:
        return f"{evaluation.model_name}-v{evaluation.challenger_version}-shadow"

    def _next_phase(self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy, why: str) -> str:
        if policy.shadow_seconds > 0:
            return self._enter(
                evaluation,
                PENDING_SHADOW,
                why,
                lambda current: self._add_shadow(evaluation, current),
                SHADOW,
                f"shadowing all requests for {policy.shadow_seconds:g} s",
            )
        return self._start_canary(evaluation, policy, why)

    def _start_canary(
        self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy, why: str, agreement: float | None = None
    ) -> str:
        return self._enter(
            evaluation,
            PENDING_CANARY,
            why,
            lambda current: self._add_canary(evaluation, policy, current),
            CANARY,
            f"{why}; canary started",
            agreement,
        )

    def _enter(
        self,
        evaluation: pb.Evaluation,
        pending: str,
        why: str,
        change: Callable[[dpb.Deployment], None],
        phase: str,
        reason: str,
        agreement: float | None = None,
    ) -> str:
        """Hands the challenger to the deployment for ``phase`` (see the module doc): ``pending`` is
        stored before ``change`` touches the deployment, and stays, with the refusal as its reason, when
        the deployment refuses as busy (:data:`WAIT_ON`); the reason is rewritten only when it changes, so
        a promotion waiting for a long canary does not write (and audit) a row every tick. Any other
        refusal fails the promotion: taken for a busy deployment, it kept the challenger pending for ever."""
        if evaluation.promotion_status != pending:
            self._set(
                evaluation, pending, f"{why}; handing it to deployment {evaluation.deployment!r}", agreement
            )
        try:
            current = self._deployment(evaluation)
            serving = next((v for v in current.variants if v.role == dpb.VARIANT_ROLE_PRIMARY), None)
            if serving is None or (serving.model_name, serving.version) != (
                evaluation.model_name,
                evaluation.champion_version,
            ):
                serves = "no primary" if serving is None else f"{serving.model_name} v{serving.version}"
                return self._set(
                    evaluation,
                    FAILED,
                    f"superseded: deployment {evaluation.deployment!r} now serves {serves}, not the champion "
                    f"v{evaluation.champion_version} this challenger was evaluated against",
                )
            change(current)
        except AetherError as exc:
            if exc.code not in WAIT_ON:
                # Not a busy deployment: the request itself is refused (an invalid canary policy, a
                # version gone), and it would be refused the same way on every tick.
                return self._set(
                    evaluation, FAILED, f"deployment {evaluation.deployment!r} refused it: {exc}"
                )
            waiting = f"waiting for deployment {evaluation.deployment!r}: {exc}"
            if waiting != evaluation.promotion_reason:
                self._set(evaluation, pending, waiting)
            return pending
        return self._set(evaluation, phase, reason)

    def _add_shadow(self, evaluation: pb.Evaluation, current: dpb.Deployment) -> None:
        shadow = dpb.Variant(
            name=self.shadow_variant(evaluation),
            model_name=evaluation.model_name,
            version=evaluation.challenger_version,
            role=dpb.VARIANT_ROLE_SHADOW,
            traffic_percent=100.0,
        )
        if any(v.name == shadow.name for v in current.variants):
            return  # added before a crash kept the phase from being recorded
        request = dpb.UpdateDeploymentRequest(
            name=evaluation.deployment, replace_variants=True, variants=[*current.variants, shadow]
        )
        self.deployments.update(request, actor=ACTOR)

    def _remove_shadow(self, evaluation: pb.Evaluation) -> None:
        current = self._deployment(evaluation)
        name = self.shadow_variant(evaluation)
        if any(v.name == name for v in current.variants):
            self.deployments.rollback(evaluation.deployment, name, "shadow phase over", actor=ACTOR)

    def _add_canary(
        self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy, current: dpb.Deployment
    ) -> None:
        canary = current.canary
        if (
            canary.status == dpb.CANARY_STATUS_PROGRESSING
            and canary.model_name == evaluation.model_name
            and canary.version == evaluation.challenger_version
        ):
            return  # started before a crash kept the phase from being recorded
        request = dpb.StartCanaryRequest(
            name=evaluation.deployment,
            model_name=evaluation.model_name,
            version=evaluation.challenger_version,
        )
        if policy.HasField("canary"):
            request.policy.CopyFrom(policy.canary)
        self.deployments.start_canary(request, actor=ACTOR)

    def _set(
        self, evaluation: pb.Evaluation, status: str, reason: str, agreement: float | None = None
    ) -> str:
        if status in ENDED:  # before the end is recorded: see the module doc
            self._clear_challenger(evaluation)
        evaluation_records.set_promotion(
            self.sessions, evaluation.id, status, reason, actor=ACTOR, agreement_rate=agreement
        )
        return status

    def _clear_challenger(self, evaluation: pb.Evaluation) -> None:
        """Removes the ``challenger`` alias while it names this evaluation's version (the registry audits
        it). A deleted model or version has no alias left to remove."""
        with contextlib.suppress(NotFound):
            self.registry.clear_alias(
                evaluation.model_name, CHALLENGER, evaluation.challenger_version, actor=ACTOR
            )
