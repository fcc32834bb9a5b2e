"""Stage 5: the model goes live. The version is approved (only Approved versions deploy) and becomes the
``champion``; monitoring is configured; a deployment with two variants of it (``a`` primary, ``b`` canary
role, 50/50: an A/B split of identical models, so any difference is routing, not the model) serves
Predict traffic; the observed split and the latency percentiles are measured. The A/B test then ends
with ``a`` taking all the traffic, so the retrainer's canary has the deployment to itself later."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import monitoring_pb2 as monpb
from clients.sdk.deployments import DeploymentsClient, variant
from clients.sdk.models import ModelRegistryClient
from clients.sdk.monitoring import MonitoringClient
from control_plane.cli.settings import CliSettings
from control_plane.demo import world
from control_plane.demo.progress import Say
from control_plane.demo.traffic import DEPLOYMENT, Traffic, TrafficStats, wait_until_serving, zone_labels

#: Monitor windows: drift over every 200 sampled rows (as many as small's zones: see Traffic); quality
#: over 90 s of predictions once 30 labels are in. Not shorter: the retrainer looks two days back for
#: quality windows when a deployment has never been retrained, and the monitor refuses a range of more
#: than 2000 windows (2 d / 2000 = 86.4 s), so a narrower window makes every retraining tick fail
#: (control_plane/retraining/observe.py).
DRIFT_WINDOW_ROWS = 200
QUALITY_WINDOW_S = 90.0
MIN_LABELS = 30


@dataclass(frozen=True)
class Served:
    stats: TrafficStats
    alert_threshold: float


def deploy_and_serve(
    settings: CliSettings, model: str, version: int, champion_mae: float, size: world.Size,
    rng: np.random.Generator, say: Say,
) -> Served:  # fmt: skip
    with ModelRegistryClient(settings.control_plane_addr) as models:
        models.approve(model, version, "demo: held-out metrics reviewed")
        models.set_alias(model, "champion", version)
    with DeploymentsClient(settings.control_plane_addr) as deployments:
        deployments.create(
            DEPLOYMENT,
            [
                variant(model, version, "primary", 50.0, name="a"),
                variant(model, version, "canary", 50.0, name="b"),
            ],
            description="demand per zone and hour",
        )
    # Configured once the deployment exists (monitoring refuses an unknown one), before any traffic.
    # A window is degraded when its MAE is well above what the model showed on its held-out split.
    threshold = max(3.0 * champion_mae, 1.0)
    with MonitoringClient(settings.control_plane_addr) as monitoring:
        monitoring.configure(
            DEPLOYMENT, task=monpb.TASK_TYPE_REGRESSION, window_kind=monpb.WINDOW_KIND_COUNT,
            window_rows=DRIFT_WINDOW_ROWS, performance_window_seconds=QUALITY_WINDOW_S,
            min_labels=MIN_LABELS, alert_metric="mae", alert_threshold=threshold,
        )  # fmt: skip
    wait_until_serving(settings.data_plane_addr)
    labels = zone_labels(settings.data_plane_addr, size.zones, world.BEFORE, rng)
    traffic = Traffic(settings.data_plane_addr, settings.control_plane_addr, labels, 0.01, seed=11)
    stats = traffic.serve(size.requests_per_phase)
    with DeploymentsClient(settings.control_plane_addr) as deployments:
        deployments.update(
            dpb.UpdateDeploymentRequest(
                name=DEPLOYMENT,
                replace_variants=True,
                variants=[variant(model, version, "primary", 100.0, "a")],
            )
        )
    split = ", ".join(f"{k} {v:.1f}%" for k, v in stats.split().items())
    latency = ", ".join(f"{k} {v:.2f} ms" for k, v in stats.percentiles().items())
    say(
        f"[5/8] approved and deployed {model} v{version} as variants a/b (50/50); served "
        f"{sum(stats.variants.values())} Predict calls, {stats.errors} errors, {stats.labelled} labelled: "
        f"split {split}; latency {latency}"
    )
    return Served(stats, threshold)
