"""Stored evaluations of challengers and their promotion states, each write audited in its transaction
(the trigger decisions they follow are in :mod:`control_plane.retraining.records`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import NotFound
from control_plane.audit.log import record
from control_plane.db import read_session, write_session
from control_plane.retraining.evaluation import EvaluationResult
from control_plane.retraining.records import (
    audit_state,
    deployment_name,
    now_us,
    page_limit,
    set_outcome_in,
)
from control_plane.retraining.tables import (
    RetrainingDecisionRow,
    RetrainingEvaluationRow,
    RetrainingPromotionRow,
)


def add_evaluation(
    sessions: sessionmaker[Session],
    deployment: str,
    decision: RetrainingDecisionRow,
    challenger_version: int,
    metric: str,
    result: EvaluationResult,
    *,
    actor: str,
    champion_version: int | None = None,
) -> pb.Evaluation:
    """Stores the evaluation of ``decision``'s challenger against ``champion_version`` (default: the
    decision's champion, which served when it triggered) and the decision's ``evaluated`` outcome in one
    transaction, once per decision. Written apart, a failed second write (a locked database) left the
    decision ``submitted`` with its evaluation stored, and the next tick evaluated it again and stored a
    second one. A decision that already has an evaluation gets it back, with nothing written."""
    at = now_us()
    verdict = "passed" if result.passed else "failed"
    reason = f"v{challenger_version} {verdict} the gates ({result.n_rows} holdout rows)"
    with write_session(sessions) as session:
        # The decision's row lock (PostgreSQL; SQLite's write lock is the whole database) serializes two
        # evaluations of one decision, so the second finds the first's.
        if session.get(RetrainingDecisionRow, decision.id, with_for_update=True) is None:
            raise NotFound(f"retraining decision {decision.id} not found")
        stored = session.execute(
            select(RetrainingEvaluationRow)
            .where(RetrainingEvaluationRow.decision_id == decision.id)
            .order_by(RetrainingEvaluationRow.id)
            .limit(1)
        ).scalar_one_or_none()
        if stored is not None:
            return evaluation_message(stored, session.get(RetrainingPromotionRow, stored.id))
        row = RetrainingEvaluationRow(
            deployment=deployment,
            decision_id=decision.id,
            job_id=decision.job_id,
            model_name=decision.model_name,
            champion_version=decision.champion_version if champion_version is None else champion_version,
            challenger_version=challenger_version,
            passed=result.passed,
            reasons=list(result.reasons),
            metric=metric,
            champion_metrics=dict(result.champion.metrics),
            challenger_metrics=dict(result.challenger.metrics),
            champion_p95_ms=result.champion.p95_ms,
            challenger_p95_ms=result.challenger.p95_ms,
            holdout_rows=result.n_rows,
            holdout_source=result.source,
            created_at_us=at,
        )
        session.add(row)
        session.flush()
        message = evaluation_message(row, None)
        record(
            session,
            actor=actor,
            action="evaluate",
            object_type="model_version",
            object_id=f"{decision.model_name}/{challenger_version}",
            before=None,
            after=audit_state(message),
        )
        set_outcome_in(session, decision.id, "evaluated", reason, actor=actor)
        return message


def set_promotion(
    sessions: sessionmaker[Session],
    evaluation_id: int,
    status: str,
    reason: str,
    *,
    actor: str,
    agreement_rate: float | None = None,
) -> None:
    at = now_us()
    with write_session(sessions) as session:
        evaluation = session.get(RetrainingEvaluationRow, evaluation_id)
        if evaluation is None:
            raise NotFound(f"evaluation {evaluation_id} not found")
        row = session.get(RetrainingPromotionRow, evaluation_id)
        before = None if row is None else {"status": row.status, "reason": row.reason}
        if row is None:
            row = RetrainingPromotionRow(
                evaluation_id=evaluation_id,
                deployment=evaluation.deployment,
                status=status,
                reason=reason,
                agreement_rate=agreement_rate,
                phase_started_at_us=at,
                updated_at_us=at,
            )
            session.add(row)
        else:
            if row.status != status:
                row.phase_started_at_us = at
            row.status, row.reason, row.updated_at_us = status, reason, at
            if agreement_rate is not None:
                row.agreement_rate = agreement_rate
        record(
            session,
            actor=actor,
            action=f"promotion_{status}",
            object_type="model_version",
            object_id=f"{evaluation.model_name}/{evaluation.challenger_version}",
            before=before,
            after={
                "status": status,
                "reason": reason,
                "deployment": evaluation.deployment,
                "agreement_rate": row.agreement_rate,
            },
        )


def promotions_in(sessions: sessionmaker[Session], statuses: Sequence[str]) -> list[pb.Evaluation]:
    with read_session(sessions) as session:
        rows = session.execute(
            select(RetrainingEvaluationRow, RetrainingPromotionRow)
            .join(RetrainingPromotionRow, RetrainingPromotionRow.evaluation_id == RetrainingEvaluationRow.id)
            .where(RetrainingPromotionRow.status.in_(list(statuses)))
            .order_by(RetrainingEvaluationRow.id)
        ).all()
        return [evaluation_message(e, p) for e, p in rows]


def unstarted_promotions(sessions: sessionmaker[Session]) -> list[pb.Evaluation]:
    """Evaluations with no promotion state at all: the control plane stopped, or the promotion's start
    failed, between storing the evaluation and recording its first step. The loop starts them again."""
    with read_session(sessions) as session:
        rows = session.execute(
            select(RetrainingEvaluationRow)
            .outerjoin(
                RetrainingPromotionRow, RetrainingPromotionRow.evaluation_id == RetrainingEvaluationRow.id
            )
            .where(RetrainingPromotionRow.evaluation_id.is_(None))
            .order_by(RetrainingEvaluationRow.id)
        ).scalars()
        return [evaluation_message(row, None) for row in rows]


def get_evaluation(sessions: sessionmaker[Session], evaluation_id: int) -> pb.Evaluation:
    with read_session(sessions) as session:
        row = session.get(RetrainingEvaluationRow, evaluation_id)
        if row is None:
            raise NotFound(f"evaluation {evaluation_id} not found")
        return evaluation_message(row, session.get(RetrainingPromotionRow, evaluation_id))


def evaluations_query(deployment: str) -> Select[RetrainingEvaluationRow, RetrainingPromotionRow]:
    """The evaluations of ``deployment`` with their promotion states, newest first (by unique id)."""
    return (
        select(RetrainingEvaluationRow, RetrainingPromotionRow)
        .outerjoin(RetrainingPromotionRow, RetrainingPromotionRow.evaluation_id == RetrainingEvaluationRow.id)
        .where(RetrainingEvaluationRow.deployment == deployment_name(deployment))
        .order_by(RetrainingEvaluationRow.id.desc())
    )


def list_evaluations(sessions: sessionmaker[Session], deployment: str, limit: int = 0) -> list[pb.Evaluation]:
    with read_session(sessions) as session:
        rows = session.execute(evaluations_query(deployment).limit(page_limit(limit))).all()
        return [evaluation_message(e, p) for e, p in rows]


def evaluation_message(
    row: RetrainingEvaluationRow, promotion: RetrainingPromotionRow | None
) -> pb.Evaluation:
    message = pb.Evaluation(
        id=row.id,
        deployment=row.deployment,
        model_name=row.model_name,
        champion_version=row.champion_version,
        challenger_version=row.challenger_version,
        passed=row.passed,
        reasons=list(row.reasons),
        metric=row.metric,
        champion_metrics=dict(row.champion_metrics),
        challenger_metrics=dict(row.challenger_metrics),
        champion_p95_ms=row.champion_p95_ms,
        challenger_p95_ms=row.challenger_p95_ms,
        holdout_rows=row.holdout_rows,
        holdout_source=row.holdout_source,
        job_id=row.job_id,
        decision_id=row.decision_id,
        created_at_us=row.created_at_us,
        updated_at_us=row.created_at_us,
    )
    if promotion is not None:
        message.promotion_status = promotion.status
        message.promotion_reason = promotion.reason
        message.updated_at_us = promotion.updated_at_us
        if promotion.agreement_rate is not None:
            message.agreement_rate = promotion.agreement_rate
    return message
