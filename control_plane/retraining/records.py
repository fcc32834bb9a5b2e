"""Stored trigger decisions, each write audited in its transaction; the evaluations and promotion states
that follow a decision are in :mod:`control_plane.retraining.evaluation_records`."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf import json_format
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import InvalidArgument, NotFound
from control_plane.audit.log import record
from control_plane.db import read_session, write_session
from control_plane.retraining.tables import (
    RetrainingDecisionRow,
    RetrainingEvaluationRow,
    RetrainingPromotionRow,
)
from control_plane.retraining.triggers import STILL_RUNNING, running_elsewhere, still_promoting

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Outcomes of a decision that submitted a job still to be followed up.
SUBMITTED = "submitted"
#: Stored before its job is submitted; ``submitted`` (with the job id) once the job is.
SUBMITTING = "submitting"
NOT_TRIGGERED = "not_triggered"
#: Triggered, but a challenger could not be judged (no monitor task or gate metric): no job submitted.
BLOCKED_NO_METRIC = "blocked_no_metric"
#: Outcomes of a decision whose retraining is in flight: while one is stored, nothing triggers.
IN_FLIGHT = (SUBMITTING, SUBMITTED)


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Draft:
    """A decision's fields known before its outcome."""

    deployment: str
    at_us: int
    triggered: bool
    rules: tuple[str, ...]
    actor: str
    model_name: str = ""
    champion_version: int = 0
    #: An automatic trigger's last trigger as its step saw it (:func:`last_triggered_us`); None for a
    #: person's. Stored triggered only if no other decision triggered since: see :func:`_triggered_since`.
    seen_last_triggered_us: int | None = None
    #: Where this tick's label-volume period ended (the database's clock; :func:`.observe.label_volume`):
    #: stored with a trigger, the next period starts there (:func:`last_label_period_end`).
    labels_until_us: int | None = None


def decision_message(row: RetrainingDecisionRow) -> pb.TriggerDecision:
    return pb.TriggerDecision(
        id=row.id,
        deployment=row.deployment,
        at_us=row.at_us,
        triggered=row.triggered,
        rules=list(row.rules),
        reasons=list(row.reasons),
        outcome=row.outcome,
        job_id=row.job_id,
        actor=row.actor,
    )


def add_decision(
    sessions: sessionmaker[Session], draft: Draft, reasons: Sequence[str], outcome: str, job_id: str = ""
) -> pb.TriggerDecision:
    """Stores a decision. A decision that did not trigger is stored (and audited) only when its reasons
    differ from the deployment's previous decision, so a quiet deployment does not grow the table."""
    with write_session(sessions) as session:
        if draft.triggered and draft.seen_last_triggered_us is not None:
            _lock_deployment(session, draft.deployment)
            refused = _triggered_since(session, draft)
            if refused is not None:
                return refused
        return _add_decision(session, draft, reasons, outcome, now_us(), job_id)


def _triggered_since(session: Session, draft: Draft) -> pb.TriggerDecision | None:
    """For an automatic trigger, under the deployment's lock: when another decision triggered since its
    step read the last trigger (another control plane's tick for the same signal, racing this one), a
    ``not_triggered`` decision saying so, stored in place of the trigger; else None. Both passed the
    cooldown before either stored its decision, and a blocked retraining was stored, and alerted, twice."""
    assert draft.seen_last_triggered_us is not None
    latest = session.execute(
        select(func.max(RetrainingDecisionRow.at_us)).where(
            RetrainingDecisionRow.deployment == draft.deployment, RetrainingDecisionRow.triggered.is_(True)
        )
    ).scalar_one()
    if int(latest or 0) <= draft.seen_last_triggered_us:
        return None
    refused = Draft(
        draft.deployment, draft.at_us, False, (), draft.actor, draft.model_name, draft.champion_version
    )
    return _add_decision(session, refused, [TRIGGERED_MEANWHILE], NOT_TRIGGERED, now_us())


#: Why an automatic trigger is refused by :func:`_triggered_since` (stable, so stored once in a row).
TRIGGERED_MEANWHILE = "another control plane triggered a retraining of this deployment meanwhile"


def add_submitting(
    sessions: sessionmaker[Session],
    draft: Draft,
    reasons: Sequence[str],
    clock: Callable[[], int] = now_us,
    *,
    promoting: Sequence[str],
) -> pb.TriggerDecision:
    """Stores a triggered decision as ``submitting``; or, when another retraining of the deployment is in
    flight by then, or a promotion of its challengers is in progress (see :func:`promotion_in_progress`;
    ``promoting``: the statuses of a promotion in progress, :data:`.promotion.IN_PROGRESS`, which this
    module cannot import), a ``not_triggered`` one with that guard's reason. The guards read before the
    trigger step cannot do that alone: two control planes on one database (or a request retried through
    a load balancer) both passed them, and both submitted a job; and a promotion may start between that
    read and this write (another control plane's tick evaluated its job meanwhile). Checked again here,
    in the write's transaction and under the deployment's lock, the second finds the first's decision.
    The same holds across the deployments serving the draft's model (:func:`retraining_elsewhere`, under
    the model's lock too): a job of another deployment in flight, or its challenger's promotion in
    progress, refuses this one with that reason.
    ``clock`` (µs) stamps the row's ``stored_at_us`` once the lock is held: the moment of the write,
    which the submit grace runs from, in the clock the loop measures that grace with."""
    with write_session(sessions) as session:
        _lock_deployment(session, draft.deployment)
        _lock_model(session, draft.model_name)  # always after the deployment's: one order, no deadlock
        stored_at = clock()
        running = session.execute(
            select(RetrainingDecisionRow.id)
            .where(RetrainingDecisionRow.deployment == draft.deployment)
            .where(RetrainingDecisionRow.outcome.in_(IN_FLIGHT))
            .limit(1)
        ).scalar_one_or_none()
        promotion = _promotion_in_progress(session, draft.deployment, promoting)
        elsewhere = _retraining_elsewhere(session, draft.deployment, draft.model_name, promoting)
        meanwhile = _triggered_since(session, draft) if draft.seen_last_triggered_us is not None else None
        if meanwhile is not None:
            return meanwhile
        if running is None and promotion is None and elsewhere is None:
            return _add_decision(session, draft, reasons, SUBMITTING, stored_at)
        refused = Draft(
            draft.deployment, draft.at_us, False, (), draft.actor, draft.model_name, draft.champion_version
        )
        if running is not None:
            why = STILL_RUNNING
        elif promotion is not None:
            why = still_promoting(promotion)
        else:
            why = elsewhere or ""
        return _add_decision(session, refused, [why], NOT_TRIGGERED, stored_at)


def retraining_elsewhere(
    sessions: sessionmaker[Session], deployment: str, model: str, statuses: Sequence[str]
) -> str | None:
    """Why ``deployment``, serving ``model``, must not retrain now because another deployment serving
    ``model`` retrains it: a job of that deployment's retraining of the model in flight
    (:func:`.triggers.running_elsewhere`), or the promotion of its challenger of the model in progress
    (``statuses``: :data:`.promotion.IN_PROGRESS`; :func:`.triggers.still_promoting` naming it); None when
    neither. The ``challenger`` alias is the model's, not a deployment's: a second deployment's challenger
    took it from the first's while that one waited for its reviewer, and a reviewer going by the alias
    approved the wrong version."""
    with read_session(sessions) as session:
        return _retraining_elsewhere(session, deployment, model, statuses)


def _retraining_elsewhere(
    session: Session, deployment: str, model: str, statuses: Sequence[str]
) -> str | None:
    if not model:
        return None
    running = session.execute(
        select(RetrainingDecisionRow.deployment)
        .where(RetrainingDecisionRow.model_name == model, RetrainingDecisionRow.deployment != deployment)
        .where(RetrainingDecisionRow.outcome.in_(IN_FLIGHT))
        .order_by(RetrainingDecisionRow.id)
        .limit(1)
    ).scalar_one_or_none()
    if running is not None:
        return running_elsewhere(model, running)
    found = _promotions_in_progress(statuses).where(
        RetrainingEvaluationRow.model_name == model, RetrainingEvaluationRow.deployment != deployment
    )
    promoting = session.execute(found.limit(1)).first()
    if promoting is None:
        return None
    evaluation, status = promoting
    return still_promoting(_described(evaluation, status), deployment=evaluation.deployment)


#: How :func:`promotion_in_progress` names an evaluation whose promotion has no state yet.
NOT_STARTED = "not started"


def promotion_in_progress(
    sessions: sessionmaker[Session], deployment: str, statuses: Sequence[str]
) -> str | None:
    """The challenger of ``deployment`` whose promotion is in progress, as ``"<model> v<N> (<status>)"``
    (the oldest, should there be several), or None. In progress: its promotion's status is in
    ``statuses`` (:data:`.promotion.IN_PROGRESS`), or it has none yet (evaluated, and its start was cut
    short: the loop starts it again, and its ``challenger`` alias may already be set). While there is one,
    the deployment does not retrain: a second challenger would take the ``challenger`` alias from it."""
    with read_session(sessions) as session:
        return _promotion_in_progress(session, deployment, statuses)


def _promotions_in_progress(statuses: Sequence[str]) -> Select[RetrainingEvaluationRow, str | None]:
    """(evaluation, promotion status or None) of the evaluations whose promotion is in progress or not
    started yet, oldest first."""
    return (
        select(RetrainingEvaluationRow, RetrainingPromotionRow.status)
        .outerjoin(RetrainingPromotionRow, RetrainingPromotionRow.evaluation_id == RetrainingEvaluationRow.id)
        .where(
            or_(
                RetrainingPromotionRow.evaluation_id.is_(None),
                RetrainingPromotionRow.status.in_(list(statuses)),
            )
        )
        .order_by(RetrainingEvaluationRow.id)
    )


def _described(evaluation: RetrainingEvaluationRow, status: str | None) -> str:
    return f"{evaluation.model_name} v{evaluation.challenger_version} ({status or NOT_STARTED})"


def _promotion_in_progress(session: Session, deployment: str, statuses: Sequence[str]) -> str | None:
    found = session.execute(
        _promotions_in_progress(statuses).where(RetrainingEvaluationRow.deployment == deployment).limit(1)
    ).first()
    if found is None:
        return None
    evaluation, status = found
    return _described(evaluation, status)


def _lock_deployment(session: Session, deployment: str) -> None:
    """Serializes the decisions of one deployment. SQLite's write transactions already hold the whole
    database's lock; PostgreSQL gets a transaction-scoped advisory lock keyed by the deployment's name,
    since no row of the deployment need exist to be locked (a manual trigger needs no stored config)."""
    _advisory_lock(session, f"aether.retraining:{deployment}")


def _lock_model(session: Session, model: str) -> None:
    """Serializes the submissions of the deployments serving one model (:func:`add_submitting`), as
    :func:`_lock_deployment` does one deployment's; taken after it, never before."""
    _advisory_lock(session, f"aether.retraining-model:{model}")


def _advisory_lock(session: Session, key: str) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    session.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))


def _add_decision(
    session: Session, draft: Draft, reasons: Sequence[str], outcome: str, stored_at_us: int, job_id: str = ""
) -> pb.TriggerDecision:
    deployment, triggered = draft.deployment, draft.triggered
    if not triggered:
        previous = session.execute(
            select(RetrainingDecisionRow)
            .where(RetrainingDecisionRow.deployment == deployment)
            .order_by(RetrainingDecisionRow.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if previous is not None and not previous.triggered and list(previous.reasons) == list(reasons):
            return decision_message(previous)
    row = RetrainingDecisionRow(
        deployment=deployment,
        at_us=draft.at_us,
        stored_at_us=stored_at_us,
        triggered=triggered,
        rules=list(draft.rules),
        reasons=list(reasons),
        outcome=outcome,
        job_id=job_id,
        actor=draft.actor,
        model_name=draft.model_name,
        champion_version=draft.champion_version,
        labels_until_us=draft.labels_until_us if triggered else None,
    )
    session.add(row)
    session.flush()
    message = decision_message(row)
    record(
        session,
        actor=draft.actor,
        action="retrain_decision",
        object_type="deployment",
        object_id=deployment,
        before=None,
        after=audit_state(message),
    )
    return message


def set_outcome(
    sessions: sessionmaker[Session],
    decision_id: int,
    outcome: str,
    reason: str,
    *,
    actor: str,
    job_id: str = "",
) -> pb.TriggerDecision:
    with write_session(sessions) as session:
        return set_outcome_in(session, decision_id, outcome, reason, actor=actor, job_id=job_id)


def set_outcome_in(
    session: Session, decision_id: int, outcome: str, reason: str, *, actor: str, job_id: str = ""
) -> pb.TriggerDecision:
    row = session.get(RetrainingDecisionRow, decision_id, with_for_update=True)
    if row is None:
        raise NotFound(f"retraining decision {decision_id} not found")
    before = {"outcome": row.outcome, "job_id": row.job_id}
    row.outcome = outcome
    row.job_id = job_id or row.job_id
    row.reasons = [*row.reasons, reason] if reason else list(row.reasons)
    message = decision_message(row)
    record(
        session,
        actor=actor,
        action=f"retrain_{outcome}",
        object_type="deployment",
        object_id=row.deployment,
        before=before,
        after={"decision": decision_id, "outcome": outcome, "job_id": row.job_id, "reason": reason},
    )
    return message


def last_triggered_us(sessions: sessionmaker[Session], deployment: str) -> int:
    with read_session(sessions) as session:
        value = session.execute(
            select(func.max(RetrainingDecisionRow.at_us)).where(
                RetrainingDecisionRow.deployment == deployment, RetrainingDecisionRow.triggered.is_(True)
            )
        ).scalar_one()
    return int(value or 0)


def last_label_period_end(sessions: sessionmaker[Session], deployment: str) -> int:
    """Where the label-volume period of ``deployment``'s last trigger (:func:`last_triggered_us`) ended,
    which is where the next one starts: its ``labels_until_us`` (the database's clock, which labels are
    stamped by), or its time for a decision stored before that was kept; 0 = never triggered."""
    with read_session(sessions) as session:
        found = session.execute(
            select(RetrainingDecisionRow.labels_until_us, RetrainingDecisionRow.at_us)
            .where(RetrainingDecisionRow.deployment == deployment, RetrainingDecisionRow.triggered.is_(True))
            .order_by(RetrainingDecisionRow.at_us.desc(), RetrainingDecisionRow.id.desc())
            .limit(1)
        ).first()
    if found is None:
        return 0
    labels_until_us, at_us = found
    return int(labels_until_us if labels_until_us is not None else at_us)


def last_promoted_us(sessions: sessionmaker[Session], deployment: str, promoted: str) -> int:
    """When a retraining's promotion last ended ``promoted`` (:data:`.promotion.PROMOTED`, which this module
    cannot import) on ``deployment``, making its challenger the serving champion; 0 = never. The time its
    status became ``promoted`` (``phase_started_at_us``), not its row's last write: a second write of the
    same status (another control plane finishing the same promotion) moved the champion's start later."""
    with read_session(sessions) as session:
        found = session.execute(
            select(func.max(RetrainingPromotionRow.phase_started_at_us))
            .where(RetrainingPromotionRow.deployment == deployment)
            .where(RetrainingPromotionRow.status == promoted)
        ).scalar_one_or_none()
    return int(found or 0)


def submitted(
    sessions: sessionmaker[Session], deployment: str | None = None, outcomes: Sequence[str] = (SUBMITTED,)
) -> list[RetrainingDecisionRow]:
    """Decisions whose job is still to be followed up (or, with ``outcomes``, still to be submitted)."""
    query = select(RetrainingDecisionRow).where(RetrainingDecisionRow.outcome.in_(list(outcomes)))
    if deployment is not None:
        query = query.where(RetrainingDecisionRow.deployment == deployment)
    with read_session(sessions) as session:
        rows = list(session.execute(query.order_by(RetrainingDecisionRow.id)).scalars())
        session.expunge_all()
    return rows


def decisions_query(deployment: str, triggered_only: bool = False) -> Select[RetrainingDecisionRow]:
    """The decisions of ``deployment``, newest first (ids are unique: the order is total)."""
    query = select(RetrainingDecisionRow).where(
        RetrainingDecisionRow.deployment == deployment_name(deployment)
    )
    if triggered_only:
        query = query.where(RetrainingDecisionRow.triggered.is_(True))
    return query.order_by(RetrainingDecisionRow.id.desc())


def list_decisions(
    sessions: sessionmaker[Session], deployment: str, triggered_only: bool = False, limit: int = 0
) -> list[pb.TriggerDecision]:
    query = decisions_query(deployment, triggered_only).limit(page_limit(limit))
    with read_session(sessions) as session:
        return [decision_message(r) for r in session.execute(query).scalars()]


def audit_state(message: pb.TriggerDecision | pb.Evaluation) -> dict[str, object]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def deployment_name(deployment: str) -> str:
    if not deployment:
        raise InvalidArgument("a deployment name is required")
    return deployment


def page_limit(limit: int) -> int:
    """The count a listing's ``limit`` asks for (0: the default); ``InvalidArgument`` out of range."""
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidArgument(f"limit must lie in [0, {MAX_LIMIT}]")
    return limit or DEFAULT_LIMIT
