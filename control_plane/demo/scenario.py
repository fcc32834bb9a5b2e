"""The demo scenario: a mobility operator forecasting demand per zone and hour, through the whole loop,
against a real local stack (redis-server, control plane and data plane as separate processes, on
embedded defaults: a SQLite file and local folders), driven only through the public SDKs over gRPC.

Stages (one module each):

1. ``register``: the zone entity and feature views (weather, calendar, bookings stream aggregations);
2. ``ingest``: batch weather/calendar rows and streamed booking events through validation into both
   stores, some deliberately bad and quarantined;
3. ``training_set``: a point-in-time training set with its dataset hash;
4. ``train``: the built-in trainer as a job through the Jobs service (tracked, registered with lineage
   and a drift reference profile);
5. ``serve``: approval, a deployment with two variants (A/B), Predict traffic, split and latency;
6. ``shift``: the world changes; serving goes on with delayed labels; the monitor's verdicts;
7. ``retrain``: triggers, a retraining job, the challenger's evaluation and gated promotion;
8. ``lineage``: the final model's lineage; the results table is printed by ``aetherctl demo``.

``traffic`` is the Predict load (with delayed labels) used by stages 5 to 7; ``world`` the synthetic
city; ``stack`` the demo's own stack settings.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from control_plane.cli.local_stack import start_stack, stop_stack
from control_plane.cli.settings import CliSettings
from control_plane.demo import world
from control_plane.demo.cleanup import cancel_jobs, kill_leftovers
from control_plane.demo.ingest import ingest_history
from control_plane.demo.lineage import FinalLineage, final_lineage
from control_plane.demo.progress import Say
from control_plane.demo.register import register_features
from control_plane.demo.retrain import Retrained, retrain
from control_plane.demo.serve import deploy_and_serve
from control_plane.demo.shift import Shifted, shift_the_world
from control_plane.demo.stack import STACK_ENV, demo_settings, remove_scratch, stack_environ
from control_plane.demo.train import train_model
from control_plane.demo.training_set import history_training_set, pinned

SIZES = world.SIZES


@dataclass(frozen=True)
class DemoOptions:
    size: str = "small"
    home: Path | None = None
    #: Make the challenger's gates impossible to pass (a latency budget no model meets): it must be
    #: rejected and the champion must keep serving.
    fail_gates: bool = False


@dataclass
class DemoReport:
    settings: CliSettings
    rows: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: What the demo had to work around, stated plainly.
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, value: object) -> None:
        self.rows.append((key, str(value)))


def run_demo(options: DemoOptions, say: Say) -> DemoReport:
    """Runs the scenario on a stack of its own. Without ``options.home`` the scratch home is removed once
    the stack is down, unless the demo failed or was interrupted: then it is kept and its path said."""
    settings = demo_settings(options.home)
    report = DemoReport(settings)
    ended_well = False
    survivors: list[str] = []
    try:
        say(f"[0/8] starting redis-server, control plane and data plane in {settings.home}")
        # Its own stack on its own home: none of the user's AETHER_* settings but the credentials (the
        # user's datasets root, jobs folder or alert webhook got the demo's rows, jobs and alerts).
        start_stack(settings, extra_env=STACK_ENV, environ=stack_environ(os.environ))
        completed = False
        try:
            _scenario(options, report, say)
            completed = True
        finally:
            survivors = _stop(settings, say, end_jobs=not (completed and not report.problems))
        ended_well = not report.problems
    finally:
        _say_what_is_kept(options, settings, ended_well, survivors, report, say)
    return report


def _stop(settings: CliSettings, say: Say, end_jobs: bool) -> list[str]:
    """Stops the stack; after a failure or an interrupt, its jobs first (they run in sessions of their
    own: nothing else stops them). Returns the jobs that outlived even the kill."""
    if end_jobs:
        say("      cancelling the demo's unfinished jobs")
        cancel_jobs(settings.control_plane_addr)
    say("      stopping the stack")
    stop_stack(settings)
    return kill_leftovers(settings.home / "jobs") if end_jobs else []


def _say_what_is_kept(
    options: DemoOptions,
    settings: CliSettings,
    ended_well: bool,
    survivors: list[str],
    report: DemoReport,
    say: Say,
) -> None:
    notes = [f"still running after the demo: {'; '.join(survivors)}"] if survivors else []
    if options.home is None:
        notes.append(
            remove_scratch(settings.home)
            if ended_well
            else f"scratch state kept for inspection in {settings.home} (remove it when done)"
        )
    for note in filter(None, notes):
        say(f"      {note}")
        report.notes.append(note)


def _scenario(options: DemoOptions, report: DemoReport, say: Say) -> None:
    size = SIZES[options.size]
    settings = report.settings
    rng = np.random.default_rng(7)
    now = dt.datetime.now(dt.UTC)

    registered = register_features(settings.control_plane_addr, say)
    report.add("views registered", len(registered.views))
    report.add("second apply changes", registered.second_apply_changes)

    ingested = ingest_history(settings, size, now, rng, say)
    report.add("events in", ingested.records_in)
    report.add("accepted", ingested.accepted)
    report.add("quarantined", ingested.quarantined)
    report.add("quarantine reasons", "; ".join(ingested.quarantine_reasons) or "-")

    versions = {name: int(view.version) for name, view in registered.views.items()}
    refs = pinned(versions)
    training = history_training_set(settings.control_plane_addr, settings.home, size, refs, now, rng, say)
    report.add("training rows", training.rows)
    report.add("dataset hash", training.dataset_hash)

    champion = train_model(settings.control_plane_addr, training, versions, size.epochs, say)
    report.add("model", f"{champion.version.model_name} v{champion.version.version}")
    report.add("champion dataset hash matches", champion.version.dataset.hash == training.dataset_hash)
    for key, value in sorted(champion.version.metrics.items()):
        report.add(f"champion {key} (its training holdout)", f"{value:.4f}")

    mae = float(champion.version.metrics.get("mae", 1.0))
    served = deploy_and_serve(
        settings, champion.version.model_name, int(champion.version.version), mae, size, rng, say
    )
    report.add("A/B split", ", ".join(f"{k} {v:.1f}%" for k, v in served.stats.split().items()))
    for key, value in served.stats.percentiles().items():
        report.add(f"Predict latency {key}", f"{value:.2f} ms")
    report.add("Predict errors", served.stats.errors)

    shifted = shift_the_world(settings, size, refs, rng, say)
    try:
        _record_shift(report, shifted)
        retrained = retrain(
            settings, shifted.window, served.alert_threshold, shifted.shift_us, options.fail_gates, say
        )
    finally:
        stats = shifted.traffic.stop()
    _record_retraining(report, retrained, int(champion.version.version), options.fail_gates)
    report.add("Predict calls after shift", f"{sum(stats.variants.values())} ({stats.errors} errors)")
    _record_lineage(report, final_lineage(settings.control_plane_addr, say))


def _record_shift(report: DemoReport, shifted: Shifted) -> None:
    for when, verdict in (("before shift", shifted.before), ("after shift", shifted.after)):
        report.add(f"drift windows {when}", f"{verdict.drift_reports} ({verdict.drifted_windows} drifted)")
        report.add(f"max drifted share {when}", f"{verdict.max_drifted_share:.2f}")
        report.add(
            f"quality windows {when}", f"{verdict.quality_windows} ({verdict.degraded_windows} degraded)"
        )
        report.add(f"worst MAE {when}", f"{verdict.worst_mae:.3f}")
    if shifted.before.drifted_windows or shifted.before.degraded_windows:
        report.problems.append("the monitor flagged drift or degradation before the shift")
    if not shifted.after.drifted_windows:
        report.problems.append("the monitor reported no data drift after the shift")
    if not shifted.after.degraded_windows:
        report.problems.append("the monitor reported no degraded quality window after the shift")


def _record_retraining(report: DemoReport, retrained: Retrained, first: int, fail_gates: bool) -> None:
    report.add("retraining rules", ", ".join(retrained.decision.rules))
    report.add("retraining outcome", retrained.decision.outcome)
    evaluation = retrained.evaluation
    if evaluation is not None:
        report.add("challenger version", evaluation.challenger_version)
        report.add("gates passed", evaluation.passed)
        report.add("gate reasons", "; ".join(evaluation.reasons) or "-")
        report.add("champion MAE on holdout", f"{evaluation.champion_metrics.get('mae', float('nan')):.3f}")
        report.add(
            "challenger MAE on holdout", f"{evaluation.challenger_metrics.get('mae', float('nan')):.3f}"
        )
        report.add("promotion", evaluation.promotion_status)
    for key, value in sorted(retrained.challenger_metrics.items()):
        report.add(f"challenger {key} (its training holdout)", f"{value:.4f}")
    report.add("champion version", retrained.champion_version)
    report.add("primary version", retrained.primary_version)
    promoted = retrained.champion_version != first
    if fail_gates and promoted:
        report.problems.append("the challenger was promoted although its gates were made to fail")
    if not fail_gates and not promoted:
        report.problems.append("the retrained challenger was not promoted")


def _record_lineage(report: DemoReport, lineage: FinalLineage) -> None:
    report.add("final model lineage", f"v{lineage.version} <- run {lineage.run_id[:8]} <- dataset "
               f"{lineage.dataset_hash[:12]} <- {', '.join(lineage.feature_views)}")  # fmt: skip
    report.add("final model deployments", ", ".join(lineage.deployments) or "-")
    if not (lineage.run_id and lineage.dataset_hash and lineage.feature_views):
        report.problems.append("the final model's lineage is incomplete")
