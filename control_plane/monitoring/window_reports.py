"""Closed drift windows → stored reports, gauges and alerts: the queue of windows waiting for their report.

Each closed window is scored against the version's reference profile (:mod:`.scoring`), stored
(:mod:`.reports`), exported (:mod:`.gauges`) and, when it drifted, alerted (:mod:`.alerts`). The window
of a version whose reports no longer speak for its deployment (it left the plan, or holds no traffic:
:mod:`.served`; closed after the change, idle or filled by requests in flight) is stored as history
only: it sets none of the deployment's gauges, and its drift is logged (INFO), not alerted, as it calls
for no action on what the deployment serves now.

A closed window waits in the queue until its report is stored. One whose report fails
``MAX_REPORT_ATTEMPTS`` times in a row (a reference profile that cannot be loaded) is dropped, logged
and counted in ``aether_monitor_windows_total{outcome="dropped"}``, so that it cannot hold up the
windows behind it for good; a failure of an unreachable or busy database or Redis never counts towards
that.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.background import TRANSIENT_FAILURES
from control_plane.monitoring.alert_payloads import drift_alerts
from control_plane.monitoring.alerts import Alerter
from control_plane.monitoring.gauges import MonitorGauges, of_served_version
from control_plane.monitoring.profiles import ReferenceCache
from control_plane.monitoring.recall import Recall
from control_plane.monitoring.reports import store_report
from control_plane.monitoring.scoring import Key, Profile, score_window
from control_plane.monitoring.served import DeploymentLookup, Version, gauged_now
from control_plane.monitoring.versions import Versions
from control_plane.monitoring.widths import VersionWidths
from control_plane.monitoring.windows import Window

_log = logging.getLogger("aether.control_plane.monitoring")

#: Ticks in a row a closed window's report may fail before the window is dropped.
MAX_REPORT_ATTEMPTS = 5


@dataclass
class ClosedWindow:
    """A closed window waiting for its report."""

    key: Key
    window: Window
    failures: int = 0


@dataclass(frozen=True)
class ReportingParts:
    """What reporting a window reads and writes besides the window itself."""

    sessions: sessionmaker[Session]
    references: ReferenceCache
    versions: Versions
    widths: VersionWidths
    gauges: MonitorGauges
    alerter: Alerter
    recall: Recall
    config: Callable[[str], pb.MonitorConfig]  # a deployment's effective monitor config
    deployments: DeploymentLookup | None


class ReportQueue:
    """The closed windows waiting for their report, oldest first. ``release(closed)`` is called for each
    window once it is handled (reported or dropped), to acknowledge the log entries it counted."""

    def __init__(self, parts: ReportingParts, release: Callable[[ClosedWindow], Awaitable[None]]) -> None:
        self._parts = parts
        self._release = release
        self._closed: collections.deque[ClosedWindow] = collections.deque()

    def __iter__(self) -> Iterator[ClosedWindow]:
        return iter(self._closed)

    def queue(self, key: Key, windows: list[Window]) -> None:
        self._closed.extend(ClosedWindow(key, window) for window in windows)

    def queue_all(self, closed: list[tuple[Key, Window]]) -> None:
        self._closed.extend(ClosedWindow(key, window) for key, window in closed)

    def counts(self, key: Key, entry_id: bytes) -> bool:
        """Whether a queued window of ``key`` counts the entry (holds its rows or counts them dropped)."""
        return any(c.key == key and entry_id in c.window.entries for c in self._closed)

    async def report(self, reports: list[pb.DriftReport]) -> None:
        """Reports the queued windows, oldest first, each taken off the queue once its report is stored
        (then exported and alerted) and appended to ``reports``. A failure leaves the window first in line
        and fails the tick, so the next tick tries again; a window failing for another reason than an
        unreachable or busy database or Redis is dropped at its ``MAX_REPORT_ATTEMPTS``-th failure."""
        parts = self._parts
        while self._closed:
            closed = self._closed[0]
            try:
                stored, baseline, served = await self._store(closed.key, closed.window)
            except TRANSIENT_FAILURES:
                raise
            except Exception as exc:
                closed.failures += 1
                if closed.failures < MAX_REPORT_ATTEMPTS:
                    raise
                self._closed.popleft()
                parts.gauges.windows.labels("dropped").inc()
                await self._release(closed)
                _log.error(
                    "dropping the drift window %d..%d of %s after %d failed reports: %s",
                    closed.window.start_us,
                    closed.window.end_us,
                    "/".join(str(part) for part in closed.key),
                    closed.failures,
                    exc,
                    exc_info=exc,
                )
                continue
            self._closed.popleft()
            parts.gauges.windows.labels("reported").inc()
            await self._release(closed)
            stream = parts.versions.get(closed.key)
            # A baseline is made only where the stream had none of the window's output (see score_window).
            if baseline is not None and stream is not None:
                stream.output_baseline = baseline
            parts.gauges.observe_report(stored, served, await parts.recall.reports(stored, served))
            if of_served_version(stored, served):
                await self._alert_drift(stored, parts.config(closed.key[0]))
            elif drift_alerts(stored):
                # Drift of a version that serves nothing now calls for no action on the deployment (the
                # version serving reports its own windows): the report is kept, and said here.
                _log.info(
                    "deployment %r: drift report %d of %s v%d (drifted) is stored, not alerted: the"
                    " deployment no longer serves that version",
                    stored.deployment,
                    stored.id,
                    stored.model_name,
                    stored.version,
                )
            reports.append(stored)

    async def _store(
        self, key: Key, window: Window
    ) -> tuple[pb.DriftReport, Profile | None, frozenset[Version] | None]:
        """The window's report, stored, the prediction baseline it makes (see :func:`.score_window`) and
        the versions its deployment serves now (None: no lookup), read first: a failed read stores
        nothing."""
        parts = self._parts
        deployment, model, version = key
        config = parts.config(deployment)
        lookup = parts.deployments
        served = None if lookup is None else await asyncio.to_thread(gauged_now, lookup, deployment)
        references = await asyncio.to_thread(parts.references.get, model, version)
        stream = parts.versions.get(key)
        width = parts.widths.learned(model, version, references)
        if width is not None and stream is not None:
            # The version's feature count: a row of another is the mismatch from now on.
            stream.windows.expect_width(width)
        report, baseline = await asyncio.to_thread(
            score_window,
            key,
            window,
            config,
            references.features,
            references.outputs,
            stream.output_baseline if stream is not None else None,
            window.output_name or (stream.output_name if stream is not None else ""),
            references.feature_dtype,
            references.output_dtype,
            references.logged_names,
        )
        stored = await asyncio.to_thread(store_report, parts.sessions, report)
        not_compared = [f.name for f in stored.features if f.not_compared]
        if not_compared:
            _log.warning(
                "drift report %d of %s v%d: %d features or logged columns not compared, their names"
                " unpaired between the reference profile and the version's feature_refs: %s",
                stored.id,
                model,
                version,
                len(not_compared),
                ", ".join(not_compared[:10]) + (", ..." if len(not_compared) > 10 else ""),
            )
        return stored, baseline, served

    async def _alert_drift(self, report: pb.DriftReport, config: pb.MonitorConfig) -> None:
        for payload in drift_alerts(report):
            await self._parts.alerter.alert(payload, config.webhook_url)
