"""The deployments core: create, update, read and delete deployments, change their traffic, and run the
canary's lifecycle (start, advance, promote, roll back). Transport-free and synchronous (the gRPC
servicer calls it from worker threads); ``clients.errors`` exceptions for every refusal. Every mutation
commits together with its audit entry and moves the deployments revision on, which wakes the plan watch
streams (listeners in this process at once, other processes through polling)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as pb
from clients.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument
from control_plane.audit.log import record
from control_plane.db import keyset, pages, strings
from control_plane.db.engine import read_session, write_session
from control_plane.db.strings import byte_order
from control_plane.deployments import store, traffic
from control_plane.deployments.canary import Action, Decision
from control_plane.deployments.messages import (
    audit_state,
    canary_of,
    defaults_must_fit,
    deployment_message,
    policy_from_proto,
    policy_of,
    policy_to_proto,
    serving_of,
    serving_with_defaults,
    to_json,
    variant_from_proto,
)
from control_plane.deployments.plans import PlanBuilder
from control_plane.deployments.tables import SALT_LENGTH, DeploymentRow
from control_plane.deployments.traffic import Role, VariantRecord
from control_plane.model_registry.queries import find_model
from control_plane.model_registry.registry import ModelRegistry

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: The longest reason a caller may give a rollback (as a model version's review reason): it is kept in the
#: deployment's canary state, which every read returns, and one of megabytes made a deployment no read
#: could return within gRPC's 4 MiB.
MAX_REASON_LENGTH = 6000
#: Deployments are listed by name, which is unique.
_ORDER = [keyset.KeyColumn(byte_order(DeploymentRow.name), str)]
Listener = Callable[[int], None]


class DeploymentManager:
    def __init__(self, sessions: sessionmaker[Session], models: ModelRegistry) -> None:
        self._sessions = sessions
        self._models = models
        self._plans = PlanBuilder(sessions, models)
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()

    # -- change notification -------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _changed(self, message: pb.Deployment) -> pb.Deployment:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(message.plan_revision)
        return message

    # -- reads ---------------------------------------------------------------------------------------

    def revision(self) -> int:
        with read_session(self._sessions) as session:
            return store.current_revision(session)

    def snapshot(self) -> pb.DeploymentPlanSnapshot:
        return self._plans.snapshot()

    def get(self, name: str) -> pb.Deployment:
        with read_session(self._sessions) as session:
            row, variants = store.load(session, name)
            return deployment_message(row, variants)

    def list_deployments(
        self, name_prefix: str = "", page_size: int = 0, page_token: str = ""
    ) -> tuple[list[pb.Deployment], str]:
        """Deployments by name, ``page_size`` at a time, and the next page's token (empty on the last).
        A page also ends where its deployments fill :data:`pages.MAX_PAGE_BYTES`, always after one: a
        description has no bound, and three of 1.5 MB made a reply over gRPC's 4 MiB (failing for good)."""
        if page_size < 0:
            raise InvalidArgument(f"page_size must be >= 0, not {page_size}")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = keyset.scope_digest(name_prefix)
        last = keyset.decode(page_token, "ListDeployments", scope, _ORDER, scope_name="name prefix")
        query = select(DeploymentRow).order_by(byte_order(DeploymentRow.name))
        if name_prefix:
            query = query.where(strings.starts_with(DeploymentRow.name, name_prefix))
        if last is not None:
            query = query.where(byte_order(DeploymentRow.name) > last[0])
        with read_session(self._sessions) as session:
            rows = list(session.scalars(query.limit(size + 1)))
            variants = store.variants_of(session, [r.id for r in rows[:size]])
            built = (deployment_message(r, variants[r.id]) for r in rows[:size])
            deployments = list(pages.fitting(built))
        if len(rows) <= len(deployments):
            return deployments, ""
        return deployments, keyset.encode("ListDeployments", scope, [deployments[-1].name])

    def progressing(self) -> list[pb.Deployment]:
        """Deployments whose canary is running (for the canary loop)."""
        deployments, token = self.list_deployments(page_size=MAX_PAGE_SIZE)
        while token:
            more, token = self.list_deployments(page_size=MAX_PAGE_SIZE, page_token=token)
            deployments.extend(more)
        return [d for d in deployments if d.canary.status == pb.CANARY_STATUS_PROGRESSING]

    # -- writes --------------------------------------------------------------------------------------

    def _require_deployable(
        self, session: Session, variants: Sequence[VariantRecord], serving: pb.ServingConfig
    ) -> None:
        """Every model version must be Approved, and the serving config's feature defaults must fit it. The
        model's row is locked first, so the registry cannot delete the version between this check and the
        commit (its delete takes the same lock and then asks the deployment guard, which by then sees
        these variants)."""
        for model_name, version in sorted({(v.model_name, v.version) for v in variants}):
            find_model(session, model_name, lock=True)
            # In this transaction: asking in a session of its own would wait for a second connection
            # while holding this one, and writers queued behind our lock can hold every other one.
            defaults_must_fit(self._models.deployable_in(session, model_name, version), serving)

    def _require_defaults_fit(
        self, session: Session, variants: Sequence[VariantRecord], serving: pb.ServingConfig
    ) -> None:
        for model_name, version in sorted({(v.model_name, v.version) for v in variants}):
            defaults_must_fit(self._models.version_in(session, model_name, version), serving)

    def create(self, request: pb.CreateDeploymentRequest, *, actor: str) -> pb.Deployment:
        name = traffic.check_name(request.name, "deployment name")
        variants = traffic.validate([variant_from_proto(v) for v in request.variants], name)
        serving = serving_with_defaults(request.serving)
        policy = policy_from_proto(request.canary_policy)
        salt = check_salt(request.routing_salt)
        try:
            with write_session(self._sessions) as session:
                store.lock_revision(session)
                if store.find_deployment(session, name) is not None:
                    raise AlreadyExists(f"deployment {name!r} already exists")
                self._require_deployable(session, variants, serving)
                now = store.now_us()
                row = DeploymentRow(
                    name=name,
                    description=request.description,
                    routing_salt=salt or name,
                    serving=to_json(serving),
                    canary_policy=to_json(policy_to_proto(policy)),
                    canary_state={},
                    plan_revision=0,
                    created_by=actor,
                    created_at_us=now,
                    updated_at_us=now,
                )
                session.add(row)
                session.flush()
                store.replace_variants(session, row, variants)
                message = store.commit_change(
                    session, row, variants, action="create", actor=actor, before=None
                )
                pages.check_item(message, f"deployment {name!r}")  # raised: rolled back
        except IntegrityError:  # created concurrently between the check and the insert
            raise AlreadyExists(f"deployment {name!r} already exists") from None
        return self._changed(message)

    def update(self, request: pb.UpdateDeploymentRequest, *, actor: str) -> pb.Deployment:
        salt = check_salt(request.routing_salt)
        with write_session(self._sessions) as session:
            store.lock_revision(session)
            row, variants = store.load(session, request.name, lock=True)
            before = deployment_message(row, variants)
            if request.HasField("description"):
                row.description = request.description
            if request.HasField("routing_salt") and (salt or row.name) != row.routing_salt:
                # Another salt moves every routing key to other buckets: mid-canary, users would cross
                # between the primary and the canary, and the canary's metrics mix both populations.
                self._refuse_while_canary(row, "change its routing salt, which would move its users")
                row.routing_salt = salt or row.name
            if request.HasField("serving"):
                serving = serving_with_defaults(request.serving)
                if not request.replace_variants:  # else checked with the new variants below
                    self._require_defaults_fit(session, variants, serving)
                row.serving = to_json(serving)
            if request.HasField("canary_policy"):
                policy = policy_from_proto(request.canary_policy)
                if policy != policy_of(row):
                    # Re-sending the policy in force is harmless; another one is refused while a canary
                    # runs: its step_index points into the policy's steps (fewer steps would leave it on
                    # one that does not exist) and the thresholds judge the step it is in.
                    self._refuse_while_canary(
                        row, "change its canary policy, which steps and judges the running canary"
                    )
                    row.canary_policy = to_json(policy_to_proto(policy))
            if request.replace_variants:
                self._refuse_while_canary(row, "replace its variants")
                variants = traffic.validate([variant_from_proto(v) for v in request.variants], row.name)
                self._require_deployable(session, variants, serving_of(row))
                store.replace_variants(session, row, variants)
            message = store.commit_change(session, row, variants, action="update", actor=actor, before=before)
            pages.check_item(message, f"deployment {row.name!r}")  # raised: rolled back
        return self._changed(message)

    def delete(self, name: str, *, actor: str) -> None:
        with write_session(self._sessions) as session:
            store.lock_revision(session)
            row, variants = store.load(session, name, lock=True)
            before = deployment_message(row, variants)
            revision = store.bump_revision(session)
            store.replace_variants(session, row, [])
            session.delete(row)
            record(
                session,
                actor=actor,
                action="delete",
                object_type="deployment",
                object_id=name,
                before=audit_state(before),
                after=None,
            )
        self._changed(pb.Deployment(name=name, plan_revision=revision))

    def set_traffic(self, name: str, variant: str, percent: float, *, actor: str) -> pb.Deployment:
        with write_session(self._sessions) as session:
            store.lock_revision(session)
            row, variants = store.load(session, name, lock=True)
            self._refuse_while_canary(row, "change its traffic by hand")
            before = deployment_message(row, variants)
            variants = traffic.set_traffic(variants, variant, percent, name)
            store.replace_variants(session, row, variants)
            message = store.commit_change(
                session, row, variants, action="set_traffic", actor=actor, before=before
            )
        return self._changed(message)

    @staticmethod
    def _refuse_while_canary(row: DeploymentRow, what: str) -> None:
        state = json_format.ParseDict(row.canary_state, pb.CanaryState())
        if state.status == pb.CANARY_STATUS_PROGRESSING:
            raise FailedPrecondition(
                f"deployment {row.name!r} has canary {state.variant!r} running: promote or roll it back"
                f" before you {what}"
            )

    # -- the canary ----------------------------------------------------------------------------------

    def start_canary(self, request: pb.StartCanaryRequest, *, actor: str) -> pb.Deployment:
        version = int(request.version)
        # Checked before the default variant name is built from it (see traffic.check_model_name).
        model_name = traffic.check_model_name(request.model_name)
        variant_name = request.variant or traffic.default_variant_name(model_name, version)
        with write_session(self._sessions) as session:
            store.lock_revision(session)
            row, variants = store.load(session, request.name, lock=True)
            expected = request.expected_plan_revision
            if request.HasField("expected_plan_revision") and expected < 0:
                raise InvalidArgument(
                    f"expected_plan_revision must be 0 or more (a plan revision read), not {expected}"
                )
            if request.HasField("expected_plan_revision") and row.plan_revision != expected:
                raise Aborted(
                    f"deployment {row.name!r} changed since it was read (read at plan revision {expected},"
                    f" now at {row.plan_revision}); no canary was started: read it again and re-apply"
                    " the policy"
                )
            self._refuse_while_canary(row, "start another")
            # A canary beside another live canary (the B of an A/B test) could never be promoted: the
            # controller's promotion would be refused on every tick and the canary would run for ever.
            holding = traffic.canaries_holding_traffic(variants)
            if holding:
                names = ", ".join(repr(n) for n in holding)
                raise FailedPrecondition(
                    f"deployment {row.name!r} has canary variants holding traffic ({names}), so a new"
                    f" canary could never be promoted: set their traffic to 0 or roll them back first"
                )
            before = deployment_message(row, variants)
            if request.HasField("policy"):
                row.canary_policy = to_json(policy_to_proto(policy_from_proto(request.policy)))
            policy = policy_of(row)
            first = policy.steps_percent[0]
            if first >= 100.0:  # stored before policy_from_proto refused such a policy
                raise FailedPrecondition(
                    f"deployment {row.name!r} has canary steps {list(policy.steps_percent)}, none below 100%"
                    " (where a canary starts): send a policy with the canary, or update the deployment's"
                )
            new = VariantRecord(variant_name, request.model_name, version, Role.CANARY, first)
            traffic.check_name(new.name, "variant name")
            self._require_deployable(session, [new], serving_of(row))
            variants = traffic.add_variant(variants, new, row.name)
            now = store.now_us()
            row.canary_state = to_json(
                pb.CanaryState(
                    status=pb.CANARY_STATUS_PROGRESSING,
                    variant=new.name,
                    model_name=new.model_name,
                    version=version,
                    step_index=0,
                    traffic_percent=first,
                    step_started_at_us=now,
                    reason=f"started at {first:g}%",
                    updated_at_us=now,
                )
            )
            store.replace_variants(session, row, variants)
            message = store.commit_change(
                session, row, variants, action="start_canary", actor=actor, before=before
            )
        return self._changed(message)

    def promote(self, name: str, variant: str = "", reason: str = "", *, actor: str) -> pb.Deployment:
        """Blue/green swap of ``variant`` (default: the running canary) into the primary's place."""
        with write_session(self._sessions) as session:
            store.lock_revision(session)
            row, variants = store.load(session, name, lock=True)
            before = deployment_message(row, variants)
            state = before.canary
            target = variant or self._running_canary(row, state)
            variants = traffic.promote(variants, target, name)
            if state.variant == target:
                self._finish_canary(
                    row, state, pb.CANARY_STATUS_PROMOTED, 100.0, reason or "promoted by hand"
                )
            store.replace_variants(session, row, variants)
            message = store.commit_change(
                session, row, variants, action="promote", actor=actor, before=before
            )
        return self._changed(message)

    def rollback(self, name: str, variant: str = "", reason: str = "", *, actor: str) -> pb.Deployment:
        """Takes ``variant`` (default: the running canary) to 0 %: it leaves the plan, and the others get
        its share back in their proportions."""
        if len(reason) > MAX_REASON_LENGTH:
            raise InvalidArgument(
                f"rollback reason is {len(reason):,} characters long; at most {MAX_REASON_LENGTH:,} are"
                " allowed (it is kept with the deployment's canary)"
            )
        with write_session(self._sessions) as session:
            store.lock_revision(session)
            row, variants = store.load(session, name, lock=True)
            before = deployment_message(row, variants)
            state = before.canary
            target = variant or self._running_canary(row, state)
            found = traffic.find(variants, target, name)
            if found.name != state.variant and found.role is Role.CANARY and found.traffic_percent > 0.0:
                # Its share would go to every other live variant, the running canary's included: the
                # canary's traffic would change behind the controller's back, off its policy's steps.
                # A shadow or a live variant at 0% gives no share back, so either may go.
                self._refuse_while_canary(row, f"roll back live variant {target!r}")
            variants = traffic.remove_variant(variants, target, name)
            if state.variant == target and state.status == pb.CANARY_STATUS_PROGRESSING:
                self._finish_canary(
                    row, state, pb.CANARY_STATUS_ROLLED_BACK, 0.0, reason or "rolled back by hand"
                )
            store.replace_variants(session, row, variants)
            message = store.commit_change(
                session, row, variants, action="rollback", actor=actor, before=before
            )
        return self._changed(message)

    def note_hold(self, name: str, observed: pb.CanaryState, reason: str) -> str | None:
        """Records why the canary step ``observed`` holds (``CanaryState.reason``, which
        GetDeployment and ``aetherctl deploy get`` show: "waiting for requests at 5%: 12/100"), and returns
        the reason it replaced; None when nothing was written (the canary has moved on, or the reason is
        the same). Not a plan change: the revision stays, so data planes reload nothing, and it is not
        audited (the controller's decisions that change traffic are)."""
        with write_session(self._sessions) as session:
            row = store.find_deployment(session, name, lock=True)
            if row is None:
                return None
            state = canary_of(row)
            if not _still_as_observed(state, observed) or state.reason == reason:
                return None
            replaced, state.reason = state.reason, reason
            row.canary_state = to_json(state)
        return replaced

    def apply_decision(
        self, name: str, observed: pb.CanaryState, decision: Decision, *, actor: str
    ) -> pb.Deployment | None:
        """Applies the canary controller's ``decision`` about the canary step ``observed`` (the
        deployment's ``canary`` as the controller read it); None (nothing done) when the canary has moved
        on since (a person promoted or rolled it back, started it again, or another controller acted) or
        the decision is to hold."""
        if decision.action is Action.HOLD:
            return None
        with write_session(self._sessions) as session:
            store.lock_revision(session)
            if store.find_deployment(session, name) is None:
                return None
            row, variants = store.load(session, name, lock=True)
            before = deployment_message(row, variants)
            state = before.canary
            if not _still_as_observed(state, observed):
                return None
            variant = state.variant
            if decision.action is Action.ROLLBACK:
                variants = traffic.remove_variant(variants, variant, name)
                self._finish_canary(row, state, pb.CANARY_STATUS_ROLLED_BACK, 0.0, decision.reason)
                action = "canary_rollback"
            elif decision.action is Action.PROMOTE:
                variants = traffic.promote(variants, variant, name)
                self._finish_canary(row, state, pb.CANARY_STATUS_PROMOTED, 100.0, decision.reason)
                action = "canary_promote"
            else:
                assert decision.next_step is not None and decision.next_percent is not None
                variants = traffic.set_traffic(variants, variant, decision.next_percent, name)
                now = store.now_us()
                state.step_index = decision.next_step
                state.traffic_percent = decision.next_percent
                state.step_started_at_us = now
                state.reason = decision.reason
                state.updated_at_us = now
                row.canary_state = to_json(state)
                action = "canary_advance"
            store.replace_variants(session, row, variants)
            message = store.commit_change(session, row, variants, action=action, actor=actor, before=before)
        return self._changed(message)

    @staticmethod
    def _running_canary(row: DeploymentRow, state: pb.CanaryState) -> str:
        if state.status != pb.CANARY_STATUS_PROGRESSING:
            raise FailedPrecondition(f"deployment {row.name!r} has no canary running: name the variant")
        return state.variant

    @staticmethod
    def _finish_canary(
        row: DeploymentRow,
        state: pb.CanaryState,
        status: pb.CanaryStatus,
        percent: float,
        reason: str,
    ) -> None:
        finished = pb.CanaryState()
        finished.CopyFrom(state)
        finished.status = status
        finished.traffic_percent = percent
        finished.reason = reason
        finished.updated_at_us = store.now_us()
        row.canary_state = to_json(finished)


def _still_as_observed(state: pb.CanaryState, observed: pb.CanaryState) -> bool:
    """Whether the canary is still at the step the controller observed. The step's start time tells a
    canary rolled back and started again under the same variant name (same step 0) from the one observed:
    without it, a decision taken on the old run's evidence moved the new one on minutes early."""
    return (
        state.status == pb.CANARY_STATUS_PROGRESSING
        and state.variant == observed.variant
        and state.step_index == observed.step_index
        and state.step_started_at_us == observed.step_started_at_us
    )


def check_salt(salt: str) -> str:
    """The routing salt's column holds SALT_LENGTH characters: PostgreSQL refused a longer one only at
    the insert (INTERNAL) and SQLite stored it, so it is refused up front on both."""
    if len(salt) > SALT_LENGTH:
        raise InvalidArgument(
            f"routing_salt is {len(salt)} characters long; at most {SALT_LENGTH} are allowed"
        )
    return salt
