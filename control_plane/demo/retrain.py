"""Stage 7: the loop closes. Retraining triggers are configured on the deployment (the monitor's quality
rule: MAE above the alert threshold; drift counts as a signal); the control plane's retrainer sees the
drift and the degraded windows by itself (a quality window once it has ended), re-validates the new data
window and resubmits the champion's own training job over it; the challenger is evaluated against the
champion on the labelled production holdout, and promoted through a short shadow phase and a canary only
when its gates pass. Traffic keeps flowing the whole time (the canary controller decides from it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import retraining_pb2 as rpb
from clients.sdk.deployments import DeploymentsClient
from clients.sdk.jobs import JobsClient
from clients.sdk.models import ModelRegistryClient
from clients.sdk.retraining import RetrainingClient
from control_plane.cli.settings import CliSettings
from control_plane.demo.progress import Say
from control_plane.demo.serve import QUALITY_WINDOW_S
from control_plane.demo.traffic import DEPLOYMENT
from control_plane.demo.train import MODEL, wait_for_job
from control_plane.demo.training_set import TrainingSet
from control_plane.retraining.records import SUBMITTING

T = TypeVar("T")

#: Where promotions end.
FINAL = ("promoted", "rolled_back", "failed", "rejected")
#: A p95 latency budget no model meets: the gate that ``--fail-gates`` makes fail.
IMPOSSIBLE_LATENCY_MS = 1e-6


@dataclass(frozen=True)
class Retrained:
    decision: rpb.TriggerDecision
    evaluation: rpb.Evaluation | None
    champion_version: int
    primary_version: int
    challenger_metrics: dict[str, float]


def trigger_config(
    window: TrainingSet, threshold: float, since_shift_s: float, fail_gates: bool
) -> rpb.TriggerConfig:
    """``since_shift_s``: seconds from the shift to now (the production holdout is the post-shift period)."""
    return rpb.TriggerConfig(
        enabled=True,
        performance_metric="mae",
        performance_threshold=threshold,
        drift=True,
        cooldown_seconds=600,
        entity_rows_path=str(window.entity_rows_path),
        data_window_seconds=86_400,
        max_rejected_fraction=0.01,
        min_rows=min(100, window.rows),
        gates=rpb.EvaluationGates(
            metric="mae",
            max_latency_ratio=3.0,
            min_holdout_rows=50,
            holdout_seconds=since_shift_s + 3.0,
            latency_budget_ms=IMPOSSIBLE_LATENCY_MS if fail_gates else 0.0,
        ),
        promotion=rpb.PromotionPolicy(
            shadow_seconds=2.0,
            canary=dpb.CanaryPolicy(
                steps_percent=[50.0, 100.0],
                bake_seconds=2,
                min_requests=20,
                max_error_rate=0.05,
                max_p99_ratio=10.0,
            ),
        ),
    )


def _poll(fetch: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = fetch()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout_s:g}s")
        time.sleep(0.5)


def _primary_version(deployments: DeploymentsClient) -> int:
    deployment = deployments.get(DEPLOYMENT)
    return next(int(v.version) for v in deployment.variants if v.role == dpb.VARIANT_ROLE_PRIMARY)


def retrain(
    settings: CliSettings, window: TrainingSet, threshold: float, shift_us: int, fail_gates: bool, say: Say,
    timeout_s: float = 180.0,
) -> Retrained:  # fmt: skip
    address = settings.control_plane_addr
    # The production holdout: labelled traffic since shortly after the shift (the evaluation runs at
    # least the training job's duration after this point, so the window never reaches back before it).
    since_shift_s = max(time.time() - shift_us / 1e6, 3.0)
    configured_us = time.time_ns() // 1000
    with RetrainingClient(address) as retraining:
        retraining.configure(DEPLOYMENT, trigger_config(window, threshold, since_shift_s, fail_gates))
        decision = _poll(
            lambda: next(
                (
                    d
                    for d in retraining.decisions(DEPLOYMENT, triggered_only=True)
                    # Not while its job is still being submitted: the decision is stored first, as
                    # "submitting", and gets its job (or the reason it has none) a moment later.
                    if d.at_us >= configured_us and d.outcome != SUBMITTING
                ),
                None,
            ),
            # A quality window counts once it has ended: the first one wholly after the shift ends up to
            # two windows later (data drift confirmed by prediction drift usually triggers before that).
            60.0 + 2 * QUALITY_WINDOW_S,
            "an automatic retraining trigger",
        )
        say(
            f"[7/8] retraining triggered automatically by {', '.join(decision.rules)}: {decision.outcome}"
            + (f", job {decision.job_id[:8]}" if decision.job_id else f" ({'; '.join(decision.reasons)})")
        )
        if not decision.job_id:
            raise RuntimeError(f"retraining was not submitted: {decision.outcome}: {list(decision.reasons)}")
        with JobsClient(address) as jobs:
            wait_for_job(jobs, decision.job_id, say, timeout_s)
        evaluation = _poll(
            lambda: next(
                (e for e in retraining.evaluations(DEPLOYMENT) if e.job_id == decision.job_id), None
            ),
            60.0,
            "the challenger's evaluation",
        )
        champion_mae = evaluation.champion_metrics.get("mae", float("nan"))
        challenger_mae = evaluation.challenger_metrics.get("mae", float("nan"))
        say(
            f"      challenger v{evaluation.challenger_version} vs champion "
            f"v{evaluation.champion_version} on {evaluation.holdout_rows} labelled production rows: "
            f"MAE {challenger_mae:.3f} vs {champion_mae:.3f}, "
            f"p95 {evaluation.challenger_p95_ms:.2f} vs {evaluation.champion_p95_ms:.2f} ms"
            f" -> {'gates passed' if evaluation.passed else 'gates FAILED: ' + '; '.join(evaluation.reasons)}"
        )
        last_status = ""

        def settled() -> rpb.Evaluation | None:
            nonlocal last_status
            current = next(e for e in retraining.evaluations(DEPLOYMENT) if e.id == evaluation.id)
            if current.promotion_status != last_status:
                last_status = current.promotion_status
                say(f"      promotion: {current.promotion_status} {current.promotion_reason}".rstrip())
            return current if current.promotion_status in FINAL else None

        final = _poll(settled, timeout_s, "the challenger's promotion")
    with ModelRegistryClient(address) as models, DeploymentsClient(address) as deployments:
        champion = int(models.get_by_alias(MODEL, "champion").version)
        challenger = models.get_version(MODEL, int(final.challenger_version))
        primary = _primary_version(deployments)
    say(f"      champion is now v{champion}; the deployment's primary serves v{primary}")
    return Retrained(decision, final, champion, primary, dict(challenger.metrics))
