"""Stage 6: the world shifts. Before it, the monitor's verdicts on the traffic so far are collected (no
drift, no degradation expected). Then a heat wave with storms arrives (new weather rows through batch
ingestion, far from the training distribution) and riders' demand now follows a different relationship.
Serving goes on in the background with delayed labels from the new relationship, until the monitor
reports data drift and a degraded quality window, both after the shift."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clients.aether.v1 import monitoring_pb2 as monpb
from clients.sdk.monitoring import MonitoringClient
from control_plane.cli.settings import CliSettings
from control_plane.demo import world
from control_plane.demo.ingest import ingest_batch
from control_plane.demo.progress import Say
from control_plane.demo.traffic import DEPLOYMENT, Traffic, zone_labels
from control_plane.demo.training_set import TrainingSet, build_training_set, label_times

#: Snapshots of post-shift weather, seconds apart: the rows the retraining job learns the new world from.
SNAPSHOTS = 4


@dataclass(frozen=True)
class Verdicts:
    drift_reports: int
    drifted_windows: int
    max_drifted_share: float
    quality_windows: int
    degraded_windows: int
    worst_mae: float
    drifted_features: tuple[str, ...]


@dataclass(frozen=True)
class Shifted:
    before: Verdicts
    after: Verdicts
    shift_us: int
    window: TrainingSet
    traffic: Traffic


def verdicts(monitoring: MonitoringClient, since_us: int, until_us: int) -> Verdicts:
    """The monitor's drift windows inside [since, until], and its quality windows overlapping it as
    scored now (a quality window is scored over the labels in so far, so one still open at the shift
    is judged on pre-shift labels only when asked before the shift)."""
    reports = [
        r for r in monitoring.drift_reports(DEPLOYMENT, limit=1000)
        if since_us <= r.window_start_us and r.window_end_us <= until_us
    ]  # fmt: skip
    windows = [
        w for w in monitoring.performance(DEPLOYMENT, since_us=since_us, until_us=until_us).windows
        if w.status in (monpb.PERFORMANCE_STATUS_OK, monpb.PERFORMANCE_STATUS_DEGRADED)
        and w.end_us > since_us and w.start_us < until_us
    ]  # fmt: skip
    drifted = [r for r in reports if r.status == monpb.DRIFT_STATUS_DRIFT]
    return Verdicts(
        drift_reports=len(reports),
        drifted_windows=len(drifted),
        max_drifted_share=max((r.drifted_share for r in reports), default=0.0),
        quality_windows=len(windows),
        degraded_windows=sum(w.status == monpb.PERFORMANCE_STATUS_DEGRADED for w in windows),
        worst_mae=max((w.metrics.get("mae", 0.0) for w in windows), default=0.0),
        drifted_features=tuple(sorted({f.name for r in drifted for f in r.features if f.drifted})),
    )


def _now_us() -> int:
    return time.time_ns() // 1000


def wait_for_verdicts(
    monitoring: MonitoringClient, since_us: int, until_us: int, done: Callable[[Verdicts], bool],
    timeout_s: float,
) -> Verdicts:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        found = verdicts(monitoring, since_us, until_us or _now_us())
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def shift_the_world(
    settings: CliSettings, size: world.Size, refs: list[str], rng: np.random.Generator, say: Say,
    timeout_s: float = 90.0,
) -> Shifted:  # fmt: skip
    address = settings.control_plane_addr
    with MonitoringClient(address) as monitoring:
        # The monitor has seen the pre-shift traffic: its drift and quality windows are the baseline.
        shift_us = _now_us()
        before = wait_for_verdicts(
            monitoring,
            shift_us - 600_000_000,
            shift_us,
            lambda v: v.drift_reports >= 2 and v.quality_windows >= 1,
            20.0,
        )
        say(
            f"[6/8] before the shift: {before.drift_reports} drift windows "
            f"({before.drifted_windows} drifted), "
            f"{before.quality_windows} quality windows ({before.degraded_windows} degraded, "
            f"worst MAE {before.worst_mae:.2f})"
        )
        shift_us = _now_us()
        now = dt.datetime.now(dt.UTC)
        times = [now - dt.timedelta(seconds=SNAPSHOTS - i) for i in range(SNAPSHOTS)]
        records_in, accepted, quarantined = ingest_batch(address, size.zones, times, rng, shifted=True)
        window = build_training_set(
            address, settings.home / "datasets", "after-shift",
            label_times(size.zones, [t + dt.timedelta(milliseconds=500) for t in times]), refs, world.AFTER,
            rng,
        )  # fmt: skip
        labels = zone_labels(settings.data_plane_addr, size.zones, world.AFTER, rng)
        traffic = Traffic(settings.data_plane_addr, address, labels, 0.01, seed=12)
        traffic.start()
        say(
            f"      shift: heat wave and storms ({accepted}/{records_in} weather rows accepted, "
            f"{quarantined} quarantined); demand now follows the weather; serving goes on with labels"
        )
        after = wait_for_verdicts(
            monitoring, shift_us, 0, lambda v: v.drifted_windows >= 1 and v.degraded_windows >= 1, timeout_s
        )
    say(
        f"      after the shift: {after.drift_reports} drift windows ({after.drifted_windows} drifted, "
        f"share up to {after.max_drifted_share:.0%}: {', '.join(after.drifted_features) or '-'}), "
        f"{after.quality_windows} quality windows ({after.degraded_windows} degraded, "
        f"worst MAE {after.worst_mae:.2f})"
    )
    return Shifted(before, after, shift_us, window, traffic)
