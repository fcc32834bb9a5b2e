"""The monitor loop (control plane): prediction log → prediction index, drift windows, reports, gauges
and alerts; and, on a slower beat, quality windows → degradation alerts.

Each tick reads the log through the consumer group (:mod:`.stream`), decodes and indexes a batch of
entries before it applies any of them (:mod:`.entry_batch`), and per served entry:

1. indexes its prediction rows for the label join (:mod:`.index_rows`, :mod:`.feedback`), whatever the
   config says; rows under a request id another prediction of the deployment was indexed under are not
   indexed (the first keeps the label), and are counted and logged (:mod:`.duplicate_ids`);
2. unless the deployment's monitor is disabled, adds its feature rows (with the prediction output) to
   the tumbling windows of its (deployment, model, version) (:mod:`.windows`), which expect the
   version's feature count once known (:mod:`.widths`). Rows the windows drop (late for a time window,
   or another feature count than the window's) are counted in
   ``aether_monitor_rows_dropped_total{deployment,reason}`` and in the next report of those windows
   (``DriftReport.late_rows``, ``mismatched_rows``); the entry is still counted ``monitored``, as its
   rows were indexed for the label join.

The windows of a version that stopped serving are closed as they are once it got no row for
``window_idle_s`` (a count window would otherwise never fill), reported, and the version forgotten
(:mod:`.versions`). A period already reported stays closed: across a forgotten version's return, and
across a restart (the end of its newest stored period read back, :mod:`.stored_periods`).

Each closed window waits in a queue until its report is stored, exported and alerted
(:mod:`.window_reports`). Prediction drift compares the prediction output with the output profile
registered with the reference; without one, the version's first window with enough rows becomes the
baseline (kept in memory: it is learned again after a restart) and that window reports ``NO_REFERENCE``
for predictions.

An entry is acknowledged once every window that counts it has its report stored or was dropped, an
entry no window counts at once (:mod:`.acks`): after a restart the pending entries build the window
open at the stop again.

Entries the data plane's cap on the stream trimmed before the monitor read them (it fell behind, or was
stopped) are in no window and no index: the reader sees the gap (:mod:`.stream`), and they are counted
``trimmed`` in ``aether_monitor_entries_total`` and logged with their number.

One entry's bytes never stop the loop: an entry that cannot be decoded (or whose index rows the database
refuses) is counted ``malformed`` in ``aether_monitor_entries_total``, logged, acknowledged and
skipped. A tick that fails part-way (Redis or the database down, the database locked) leaves nothing half
done for the next one:

* the reader rewinds, so the entries it read and did not acknowledge are read again, from this
  consumer's pending entries (otherwise they would be skipped until a restart);
* an entry is applied to the windows, and counted, once: the monitor remembers the newest entry id it
  applied (ids of a stream only grow) and applies only newer ones, while the prediction index ignores
  rows it already has (an entry applied before is not indexed again). After a restart the windows start
  empty, so entries re-read then apply again;
* a closed window stays queued until its report is stored; one whose report keeps failing is dropped
  after ``MAX_REPORT_ATTEMPTS`` (:mod:`.window_reports`), so that it cannot hold up the windows behind it.

Every ``performance_interval_s`` (timed on the monotonic clock, as the prune every ``prune_interval_s``
is: a wall clock stepped back held both until it caught up) the quality windows of deployments with an
alert threshold are computed over the label horizon; each completed window found degraded alerts once
(recorded in ``performance_alerts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio
import redis.exceptions
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.background import BackgroundLoop
from control_plane.monitoring import config as configs
from control_plane.monitoring import entry_batch
from control_plane.monitoring.acks import HeldEntries
from control_plane.monitoring.alerts import Alerter
from control_plane.monitoring.duplicate_ids import DuplicateRequestIds
from control_plane.monitoring.entries import LoggedPrediction, MalformedEntry
from control_plane.monitoring.entry_batch import DecodedEntry
from control_plane.monitoring.feedback_prune import label_horizons, prune
from control_plane.monitoring.gauges import MonitorGauges, gauges_for
from control_plane.monitoring.index_rows import logged_output
from control_plane.monitoring.model_outputs import UnscoredPredictions
from control_plane.monitoring.profiles import ReferenceCache
from control_plane.monitoring.quality import QualityCheck
from control_plane.monitoring.recall import Recall
from control_plane.monitoring.scoring import Key
from control_plane.monitoring.served import DeploymentLookup
from control_plane.monitoring.settings import MonitoringSettings
from control_plane.monitoring.stored_periods import StoredPeriods
from control_plane.monitoring.stream import StreamReader, entry_order
from control_plane.monitoring.versions import Versions
from control_plane.monitoring.widths import VersionWidths
from control_plane.monitoring.window_reports import ClosedWindow, ReportingParts, ReportQueue
from control_plane.monitoring.windows import Batch, Window

#: What a monitor tick fails with when Redis is down or hung (a reply that timed out is no ConnectionError
#: in redis-py): logged as an outage, without the traceback of a bug.
_REDIS_OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_log = logging.getLogger("aether.control_plane.monitoring")


@dataclass
class TickResult:
    entries: int = 0
    reports: list[pb.DriftReport] = field(default_factory=list)


class Monitor:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        references: ReferenceCache,
        client: redis.asyncio.Redis,
        settings: MonitoringSettings,
        alerter: Alerter | None = None,
        gauges: MonitorGauges | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        deployments: DeploymentLookup | None = None,
    ) -> None:
        """``deployments`` looks up what a deployment serves now, for the per-feature gauges
        (:meth:`.MonitorGauges.observe_report`); without it every version that reported counts."""
        self._sessions = sessions
        self._client = client
        self._settings = settings
        self.alerter = alerter or Alerter(settings.webhook_url, settings.webhook_timeout_s)
        self.gauges = gauges or gauges_for()
        self._reader = StreamReader(
            client, settings.stream, settings.group, settings.consumer, on_trimmed=self._count_trimmed
        )
        self._clock = clock
        self._versions = Versions(
            settings.time_window_grace_s, settings.window_idle_s, self.gauges.rows_dropped, monotonic
        )
        self._applied_through: tuple[int, int] | None = None  # the newest entry id applied to windows
        self._widths = VersionWidths(references, monotonic)
        self._stored_periods = StoredPeriods(sessions, self._versions, self._config)
        self._configs: dict[str, pb.MonitorConfig] = {}
        self._unscored = UnscoredPredictions(self.gauges.predictions_unscored, _log)
        self._duplicates = DuplicateRequestIds(self.gauges.duplicate_request_ids, _log)
        self._background = BackgroundLoop("drift-monitor")
        # Intervals are timed on the monotonic clock: on the wall clock, a step back (NTP) held the
        # quality checks, their alerts and the prune until it caught up with the last run again.
        self._monotonic = monotonic
        self._last_performance: float | None = None  # None: never ran, due at once
        self._last_prune: float | None = None
        self._quality = QualityCheck(sessions, settings, self.gauges, self.alerter, clock)
        recall = Recall(self.gauges, sessions, deployments, _log)  # stored reports, after a start
        self._held = HeldEntries(self._counts, self._reader.ack)
        parts = ReportingParts(
            sessions,
            references,
            self._versions,
            self._widths,
            self.gauges,
            self.alerter,
            recall,
            self._config,
            deployments,
        )
        self._report_queue = ReportQueue(parts, self._release)

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        """Ends the loop and waits for it (it closes its Redis client on the way out)."""
        await self._background.stop()

    async def _run(self) -> None:
        failures = 0
        try:
            while self._background.running:
                try:
                    await self.tick()
                    await self.run_due()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bad tick (Redis or the database down) must not end monitoring
                    failures += 1
                    if failures == 1 or failures % 100 == 0:  # the first of a run of failures, then rarely
                        unreachable = isinstance(exc, _REDIS_OUTAGES)  # an outage, not a bug: no traceback
                        _log.log(
                            logging.WARNING if unreachable else logging.ERROR,
                            "monitor tick failed (%d in a row), retrying: %s",
                            failures,
                            exc,
                            exc_info=not unreachable,
                        )
                await self._background.pause(self._settings.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    async def run_due(self) -> None:
        """The slower beat: the quality check every ``performance_interval_s`` and the prune every
        ``prune_interval_s`` (monotonic clock); the wall clock only dates the prune's horizon for prediction
        times (the labels' horizons are dated by the database's clock, which stamps them)."""
        now = self._monotonic()
        if (
            self._last_performance is None
            or now - self._last_performance >= self._settings.performance_interval_s
        ):
            self._last_performance = now
            await self.check_performance()
        if self._last_prune is None or now - self._last_prune >= self._settings.prune_interval_s:
            self._last_prune = now
            # Prediction times are the data planes' clocks, dated by this host's; labels are stamped by
            # the database's clock, and their horizons are dated by it.
            horizon = int((self._clock() - self._settings.index_retention_s) * 1e6)
            orphan_horizon, joined_horizon = await asyncio.to_thread(
                label_horizons,
                self._sessions,
                int(self._settings.index_retention_s * 1e6),
                int(self._settings.joined_label_retention_s * 1e6),
            )
            pruned = await asyncio.to_thread(
                prune,
                self._sessions,
                horizon,
                joined_before_us=joined_horizon,
                orphans_before_us=orphan_horizon,
            )
            if pruned.orphans:
                _log.info(
                    "deleted %d orphaned labels recorded before the index retention: their predictions"
                    " were never indexed (counted in aether_feedback_orphans_expired)",
                    pruned.orphans,
                )
            if pruned.joined_labels:
                _log.info(
                    "deleted %d joined labels no indexed prediction joins any more", pruned.joined_labels
                )

    async def tick(self) -> TickResult:
        """Reads what the log holds now (up to ``max_read_per_tick`` entries) and handles it. When it
        raises, the next tick picks up where it failed (see the module doc)."""
        try:
            return await self._tick()
        except BaseException:
            self._reader.rewind()
            raise

    async def _tick(self) -> TickResult:
        self._configs = await asyncio.to_thread(configs.configured, self._sessions)
        result = TickResult()
        await self._held.ack_released()
        for key in self._versions:  # windows re-configured since the last tick take their new shape
            self._report_queue.queue(key, self._versions.windows_for(key, self._config(key[0]))[1])
        await self._report_queue.report(result.reports)
        while result.entries < self._settings.max_read_per_tick:
            entries = await self._reader.read(self._settings.read_batch)
            if not entries:
                break
            # Decode all, index all, and only then touch the windows: a failure before this point
            # leaves nothing applied, and one after it finds every entry applied when the batch is
            # read again.
            batch = [entry_batch.decode(entry_id, fields, self._config) for entry_id, fields in entries]
            await entry_batch.index(
                self._sessions, [decoded for decoded in batch if not self._applied(decoded.entry_id)]
            )
            await self._widths.learn(
                (decoded.logged.model, decoded.logged.version)
                for decoded in batch
                if decoded.logged is not None and decoded.logged.features is not None
            )
            await self._stored_periods.recall(
                (decoded.logged.deployment, decoded.logged.model, decoded.logged.version)
                for decoded in batch
                if decoded.logged is not None and not self._applied(decoded.entry_id)
            )
            for decoded in batch:
                self._apply(decoded)
            free = self._held.hold(batch)
            await self._report_queue.report(result.reports)
            await self._reader.ack(free)
            result.entries += len(entries)
        reporting = {closed.key for closed in self._report_queue}
        self._report_queue.queue_all(self._versions.due(int(self._clock() * 1e6), reporting))
        await self._report_queue.report(result.reports)
        return result

    def _count_trimmed(self, entries: int | None) -> None:
        """Entries the stream lost before the monitor read them: in no index, window or report."""
        if entries is not None:
            self.gauges.entries.labels("trimmed").inc(entries)
        _log.warning(
            "the prediction log %s was trimmed past %s entries the monitor had not read: they are in no "
            "drift window and cannot be joined to labels (the monitor fell behind the data plane's cap "
            "on the stream, or was stopped)",
            self._settings.stream,
            "an unknown number of" if entries is None else entries,
        )

    # ------------------------------------------------------------------ entries → windows

    def _config(self, deployment: str) -> pb.MonitorConfig:
        found = self._configs.get(deployment)
        if found is None:
            found = self._configs[deployment] = configs.default_config(deployment)
        return found

    def _applied(self, entry_id: bytes) -> bool:
        """Whether the entry was applied before (read again after a failed tick): ids only grow."""
        return self._applied_through is not None and entry_order(entry_id) <= self._applied_through

    def _apply(self, decoded: DecodedEntry) -> None:
        """Counts the entry and adds its rows to the windows — once: an entry read again after a failed
        tick is not newer than the newest one applied, and is left alone."""
        if self._applied(decoded.entry_id):
            return
        self._applied_through = entry_order(decoded.entry_id)
        if decoded.logged is not None:
            try:
                self._report_queue.queue_all(self._add(decoded.logged, decoded.entry_id))
            except Exception as exc:  # a bug on this entry's data must not stop the reader either
                decoded.refuse(exc)
        self.gauges.entries.labels(decoded.outcome).inc()
        if (
            decoded.missing_output is not None
            and decoded.logged is not None
            and decoded.outcome == "monitored"
        ):
            self._unscored.count(decoded.logged, decoded.missing_output, len(decoded.index_rows))
        if decoded.duplicate_rows and decoded.logged is not None:
            self._duplicates.count(decoded.logged, decoded.duplicate_rows)
        if decoded.problem is not None:
            _log.warning(
                "skipping a malformed prediction-log entry %s: %s",
                decoded.entry_id.decode(errors="replace"),
                decoded.problem,
                exc_info=None if isinstance(decoded.problem, MalformedEntry) else decoded.problem,
            )

    def _add(self, logged: LoggedPrediction, entry_id: bytes) -> list[tuple[Key, Window]]:
        config = self._config(logged.deployment)
        if config.disabled or logged.features is None:
            return []
        output_name, output = logged_output(config, logged)
        key = (logged.deployment, logged.model, logged.version)
        batch = Batch(
            logged.ts_us, logged.features, output, entry_id, output_name if output is not None else ""
        )
        width = self._widths.get(logged.model, logged.version)
        closed = self._versions.add(key, config, batch, output_name if output is not None else "", width)
        return [(key, window) for window in closed]

    # ------------------------------------------------------------------ acknowledging entries

    def _counts(self, key: Key, entry_id: bytes) -> bool:
        """Whether a window of ``key`` not yet reported (the open one, or one queued) counts the entry."""
        stream = self._versions.get(key)
        if stream is not None and stream.windows.holds(entry_id):
            return True
        return self._report_queue.counts(key, entry_id)

    async def _release(self, closed: ClosedWindow) -> None:
        """Acknowledges the entries of a window just handled that no other window counts."""
        await self._held.release(closed.key, closed.window.entries)

    async def check_performance(self) -> list[pb.PerformanceWindow]:
        """Alerts (once each) on completed quality windows found degraded; returns those alerted now
        (:class:`~control_plane.monitoring.quality.QualityCheck`)."""
        return await self._quality.run()
