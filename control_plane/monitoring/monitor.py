"""The monitor loop (control plane): prediction log → prediction index, drift windows, reports, gauges
and alerts; and, on a slower beat, quality windows → degradation alerts.

Each tick reads the log through the consumer group (:mod:`.stream`) and, per served entry:

1. indexes its prediction rows for the label join (:mod:`.index_rows`, :mod:`.feedback`), whatever the
   config says;
2. unless the deployment's monitor is disabled, adds its feature rows (with the prediction output) to
   the tumbling windows of its (deployment, model, version) (:mod:`.windows`). Rows the windows drop (late
   for a time window, or another feature count than the window's) are counted in
   ``aether_monitor_rows_dropped_total{deployment,reason}`` and in the next report of those windows
   (``DriftReport.late_rows``, ``mismatched_rows``); the entry is still counted ``monitored``, as its
   rows were indexed for the label join.

The windows of a version that stopped serving are closed as they are once it got no row for
``window_idle_s`` (a count window would otherwise never fill), reported, and the version forgotten
(:mod:`.versions`).

Each closed window is scored against the version's reference profile (:mod:`.drift`), stored
(:mod:`.reports`), exported (:mod:`.gauges`) and, when it drifted, alerted (:mod:`.alerts`). The window
of a version whose reports no longer speak for its deployment (it left the plan, or holds no traffic:
:mod:`.served`; closed after the change, idle or filled by requests in flight) is stored as history
only: it sets none of the deployment's gauges, and its drift is logged (INFO), not alerted, as it calls
for no action on what the deployment serves now. Prediction drift compares the prediction output with
the output profile registered with the reference; without one, the version's first window with enough
rows becomes the baseline (kept in memory: it is learned again after a restart) and that window reports
``NO_REFERENCE`` for predictions.

An entry is acknowledged once every window that counts it (holds its rows, or counts them dropped) has
its report stored or was dropped (below); an entry no window counts (skipped, malformed, of a disabled
monitor) at once. Acknowledged as soon as applied, the rows of the window open when the control plane
stopped were lost: in no report, not counted dropped. Pending, those entries are read again after a
restart (the consumer's pending entries come first, :mod:`.stream`) and build that window again. This is
at least once: an entry whose rows straddle a reported count window and the open one, or whose rows
were late for a time window already reported, counts again after a restart.

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
* a closed window waits in a queue until its report is stored. One whose report fails
  ``MAX_REPORT_ATTEMPTS`` times in a row (a reference profile that cannot be loaded) is dropped, logged
  and counted in ``aether_monitor_windows_total{outcome="dropped"}``, so that it cannot hold up the
  windows behind it for good.

Every ``performance_interval_s`` (timed on the monotonic clock, as the prune every ``prune_interval_s``
is: a wall clock stepped back held both until it caught up) the quality windows of deployments with an
alert threshold are computed over the label horizon; each completed window found degraded alerts once
(recorded in ``performance_alerts``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import redis.asyncio
import redis.exceptions
import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.background import TRANSIENT_FAILURES, BackgroundLoop
from control_plane.monitoring import config as configs
from control_plane.monitoring.alert_payloads import drift_alerts
from control_plane.monitoring.alerts import Alerter
from control_plane.monitoring.entries import LoggedPrediction, MalformedEntry, decode_entry
from control_plane.monitoring.feedback import (
    IndexedPrediction,
    index_predictions,
    prune,
)
from control_plane.monitoring.gauges import MonitorGauges, gauges_for, of_served_version
from control_plane.monitoring.index_rows import index_rows, logged_output
from control_plane.monitoring.model_outputs import UnscoredPredictions
from control_plane.monitoring.profiles import LoadedReference, ReferenceCache
from control_plane.monitoring.quality import QualityCheck
from control_plane.monitoring.recall import Recall
from control_plane.monitoring.reports import store_report
from control_plane.monitoring.scoring import Key, Profile, score_window
from control_plane.monitoring.served import DeploymentLookup, Version, gauged_now
from control_plane.monitoring.settings import MonitoringSettings
from control_plane.monitoring.stream import StreamReader, entry_order
from control_plane.monitoring.versions import Versions
from control_plane.monitoring.windows import Batch, Window

#: What a monitor tick fails with when Redis is down or hung (a reply that timed out is no ConnectionError
#: in redis-py): logged as an outage, without the traceback of a bug.
_REDIS_OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
#: How often a version with no reference is looked up again for its feature count.
_WIDTH_RECHECK_S = 30.0
_log = logging.getLogger("aether.control_plane.monitoring")

Outcome = Literal["monitored", "skipped", "malformed"]

#: Ticks in a row a closed window's report may fail before the window is dropped.
MAX_REPORT_ATTEMPTS = 5


def expected_width(references: LoadedReference) -> int | None:
    """The feature count every logged row of a version with ``references`` must have, once it has a
    reference profile: its ``feature_refs``' (the columns the data plane logs for it; the profile's
    features are paired with them by name, and may be fewer or more), else, where it lists none, the
    profile's (paired by position). None without a profile: each window takes its first row's."""
    if references.features is None:
        return None
    return len(references.logged_names) or references.features[0].n_features


@dataclass
class _Decoded:
    """One entry of a batch, decoded (nothing applied yet): its monitored content and index rows."""

    entry_id: bytes
    outcome: Outcome
    logged: LoggedPrediction | None = None
    index_rows: list[IndexedPrediction] = field(default_factory=list)
    problem: BaseException | None = None
    #: The output the config names, when the entry's answer lacks it (its rows are indexed valueless).
    missing_output: str | None = None

    def refuse(self, problem: BaseException) -> None:
        self.outcome, self.logged, self.index_rows, self.problem = "malformed", None, [], problem


@dataclass
class _Closed:
    """A closed window waiting for its report."""

    key: Key
    window: Window
    failures: int = 0


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
        self._deployments = deployments
        self._references = references
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
        self._closed: collections.deque[_Closed] = collections.deque()
        self._applied_through: tuple[int, int] | None = None  # the newest entry id applied to windows
        self._held: dict[bytes, Key] = {}  # applied entries some window still counts: not acknowledged
        # The version's feature count (expected_width) by (model, version) (None: no reference) and when it
        # was looked up.
        self._widths: dict[tuple[str, int], tuple[int | None, float]] = {}
        self._configs: dict[str, pb.MonitorConfig] = {}
        self._unscored = UnscoredPredictions(self.gauges.predictions_unscored, _log)
        self._background = BackgroundLoop("drift-monitor")
        # Intervals are timed on the monotonic clock: on the wall clock, a step back (NTP) held the
        # quality checks, their alerts and the prune until it caught up with the last run again.
        self._monotonic = monotonic
        self._last_performance: float | None = None  # None: never ran, due at once
        self._last_prune: float | None = None
        self._quality = QualityCheck(sessions, settings, self.gauges, self.alerter, clock)
        self._recall = Recall(self.gauges, sessions, deployments, _log)  # stored reports, after a start

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
        ``prune_interval_s`` (monotonic clock); the wall clock only dates the prune's horizon."""
        now = self._monotonic()
        if (
            self._last_performance is None
            or now - self._last_performance >= self._settings.performance_interval_s
        ):
            self._last_performance = now
            await self.check_performance()
        if self._last_prune is None or now - self._last_prune >= self._settings.prune_interval_s:
            self._last_prune = now
            now_s = self._clock()
            horizon = int((now_s - self._settings.index_retention_s) * 1e6)
            joined_horizon = min(horizon, int((now_s - self._settings.joined_label_retention_s) * 1e6))
            pruned = await asyncio.to_thread(prune, self._sessions, horizon, joined_before_us=joined_horizon)
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
        await self._ack_released()
        for key in self._versions:  # windows re-configured since the last tick take their new shape
            self._queue(key, self._versions.windows_for(key, self._config(key[0]))[1])
        await self._report_closed(result)
        while result.entries < self._settings.max_read_per_tick:
            entries = await self._reader.read(self._settings.read_batch)
            if not entries:
                break
            # Decode all, index all, and only then touch the windows: a failure before this point
            # leaves nothing applied, and one after it finds every entry applied when the batch is
            # read again.
            batch = [self._decode(entry_id, fields) for entry_id, fields in entries]
            await self._index([decoded for decoded in batch if not self._applied(decoded.entry_id)])
            await self._learn_widths(batch)
            for decoded in batch:
                self._apply(decoded)
            free = self._hold(batch)
            await self._report_closed(result)
            await self._reader.ack(free)
            result.entries += len(entries)
        reporting = {closed.key for closed in self._closed}
        self._queue_all(self._versions.due(int(self._clock() * 1e6), reporting))
        await self._report_closed(result)
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

    # ------------------------------------------------------------------ entries → index and windows

    def _config(self, deployment: str) -> pb.MonitorConfig:
        found = self._configs.get(deployment)
        if found is None:
            found = self._configs[deployment] = configs.default_config(deployment)
        return found

    def _decode(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> _Decoded:
        if fields is None:  # trimmed from the stream while pending
            return _Decoded(entry_id, "skipped")
        try:
            logged = decode_entry(fields)
            if logged is None:
                return _Decoded(entry_id, "skipped")
            rows, missing = index_rows(self._config(logged.deployment), logged)
            return _Decoded(entry_id, "monitored", logged, rows, missing_output=missing)
        except Exception as exc:  # MalformedEntry, or a decoding bug: either way this entry's problem only
            return _Decoded(entry_id, "malformed", problem=exc)

    async def _index(self, batch: list[_Decoded]) -> None:
        rows = [row for decoded in batch for row in decoded.index_rows]
        try:
            await asyncio.to_thread(index_predictions, self._sessions, rows)
        except (sqlalchemy.exc.DataError, InvalidArgument):
            # A value the database refuses, or the engine before it (text holding NUL), fails the whole
            # statement, and would again on every retry: index entry by entry, so only that entry is lost.
            for decoded in batch:
                if decoded.index_rows:
                    try:
                        await asyncio.to_thread(index_predictions, self._sessions, decoded.index_rows)
                    except (sqlalchemy.exc.DataError, InvalidArgument) as exc:
                        decoded.refuse(exc)

    def _applied(self, entry_id: bytes) -> bool:
        """Whether the entry was applied before (read again after a failed tick): ids only grow."""
        return self._applied_through is not None and entry_order(entry_id) <= self._applied_through

    def _apply(self, decoded: _Decoded) -> None:
        """Counts the entry and adds its rows to the windows — once: an entry read again after a failed
        tick is not newer than the newest one applied, and is left alone."""
        if self._applied(decoded.entry_id):
            return
        self._applied_through = entry_order(decoded.entry_id)
        if decoded.logged is not None:
            try:
                self._queue_all(self._add(decoded.logged, decoded.entry_id))
            except Exception as exc:  # a bug on this entry's data must not stop the reader either
                decoded.refuse(exc)
        self.gauges.entries.labels(decoded.outcome).inc()
        if (
            decoded.missing_output is not None
            and decoded.logged is not None
            and decoded.outcome == "monitored"
        ):
            self._unscored.count(decoded.logged, decoded.missing_output, len(decoded.index_rows))
        if decoded.problem is not None:
            _log.warning(
                "skipping a malformed prediction-log entry %s: %s",
                decoded.entry_id.decode(errors="replace"),
                decoded.problem,
                exc_info=None if isinstance(decoded.problem, MalformedEntry) else decoded.problem,
            )

    async def _learn_widths(self, batch: list[_Decoded]) -> None:
        """Looks up the feature count (:func:`expected_width`) of each version in ``batch`` not known yet
        (again every ``_WIDTH_RECHECK_S`` while it has none): its windows take it as the count every row
        must have, so that a stray row of another one is the mismatch, not the good rows after it
        (:mod:`.windows`). A reference that cannot be read now is left unknown: the window's report reads
        it again."""
        now = self._monotonic()
        wanted = {
            (decoded.logged.model, decoded.logged.version)
            for decoded in batch
            if decoded.logged is not None and decoded.logged.features is not None
        }
        for model, version in wanted:
            known = self._widths.get((model, version))
            if known is not None and (known[0] is not None or now - known[1] < _WIDTH_RECHECK_S):
                continue
            try:
                loaded = await asyncio.to_thread(self._references.get, model, version)
            except Exception as exc:  # DB down, a damaged blob: the report says so when it reads it
                _log.debug("reference of %s/%s not read for its feature count: %s", model, version, exc)
                continue
            self._widths[(model, version)] = (expected_width(loaded), now)

    def _add(self, logged: LoggedPrediction, entry_id: bytes) -> list[tuple[Key, Window]]:
        config = self._config(logged.deployment)
        if config.disabled or logged.features is None:
            return []
        output_name, output = logged_output(config, logged)
        key = (logged.deployment, logged.model, logged.version)
        batch = Batch(logged.ts_us, logged.features, output, entry_id)
        width = self._widths.get((logged.model, logged.version), (None, 0.0))[0]
        closed = self._versions.add(key, config, batch, output_name if output is not None else "", width)
        return [(key, window) for window in closed]

    # ------------------------------------------------------------------ acknowledging entries

    def _hold(self, batch: list[_Decoded]) -> list[bytes]:
        """Keeps the entries of ``batch`` that a window counts pending (see the module doc); returns the
        others, to acknowledge now."""
        free: list[bytes] = []
        for decoded in batch:
            logged = decoded.logged
            key = None if logged is None else (logged.deployment, logged.model, logged.version)
            if key is not None and self._holds(key, decoded.entry_id):
                self._held[decoded.entry_id] = key
            else:
                free.append(decoded.entry_id)
        return free

    def _holds(self, key: Key, entry_id: bytes) -> bool:
        """Whether a window of ``key`` not yet reported (the open one, or one queued) counts the entry."""
        stream = self._versions.get(key)
        if stream is not None and stream.windows.holds(entry_id):
            return True
        return any(c.key == key and entry_id in c.window.entries for c in self._closed)

    async def _release(self, closed: _Closed) -> None:
        """Acknowledges the entries of a window just handled that no other window counts."""
        done = [e for e in closed.window.entries if e in self._held and not self._holds(closed.key, e)]
        await self._reader.ack(done)
        for entry_id in done:  # after the ack: one that failed leaves them for _ack_released
            del self._held[entry_id]

    async def _ack_released(self) -> None:
        """Acknowledges held entries no window counts any more (their acknowledgement failed before)."""
        done = [e for e, key in self._held.items() if not self._holds(key, e)]
        await self._reader.ack(done)
        for entry_id in done:
            del self._held[entry_id]

    # ------------------------------------------------------------------ windows → reports

    def _queue(self, key: Key, windows: list[Window]) -> None:
        self._closed.extend(_Closed(key, window) for window in windows)

    def _queue_all(self, closed: list[tuple[Key, Window]]) -> None:
        self._closed.extend(_Closed(key, window) for key, window in closed)

    async def _report_closed(self, result: TickResult) -> None:
        """Reports the queued windows, oldest first, each taken off the queue once its report is stored
        (then exported and alerted). A failure leaves the window first in line and fails the tick, so
        the next tick tries again; a window failing for another reason than an unreachable or busy
        database or Redis is dropped at its ``MAX_REPORT_ATTEMPTS``-th failure."""
        while self._closed:
            closed = self._closed[0]
            try:
                stored, baseline, served = await self._store_report(closed.key, closed.window)
            except TRANSIENT_FAILURES:
                raise
            except Exception as exc:
                closed.failures += 1
                if closed.failures < MAX_REPORT_ATTEMPTS:
                    raise
                self._closed.popleft()
                self.gauges.windows.labels("dropped").inc()
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
            self.gauges.windows.labels("reported").inc()
            await self._release(closed)
            stream = self._versions.get(closed.key)
            if baseline is not None and stream is not None and stream.output_baseline is None:
                stream.output_baseline = baseline
            self.gauges.observe_report(stored, served, await self._recall.reports(stored, served))
            if of_served_version(stored, served):
                await self._alert_drift(stored, self._config(closed.key[0]))
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
            result.reports.append(stored)

    async def _store_report(
        self, key: Key, window: Window
    ) -> tuple[pb.DriftReport, Profile | None, frozenset[Version] | None]:
        """The window's report, stored, the prediction baseline it makes (see :func:`.score_window`) and
        the versions its deployment serves now (None: no lookup), read first: a failed read stores
        nothing."""
        deployment, model, version = key
        config = self._config(deployment)
        lookup = self._deployments
        served = None if lookup is None else await asyncio.to_thread(gauged_now, lookup, deployment)
        references = await asyncio.to_thread(self._references.get, model, version)
        stream = self._versions.get(key)
        width = expected_width(references)
        if width is not None:
            # The version's feature count: a row of another is the mismatch from now on.
            self._widths[(model, version)] = (width, self._monotonic())
            if stream is not None:
                stream.windows.expect_width(width)
        report, baseline = await asyncio.to_thread(
            score_window,
            key,
            window,
            config,
            references.features,
            references.outputs,
            stream.output_baseline if stream is not None else None,
            stream.output_name if stream is not None else "",
            references.feature_dtype,
            references.output_dtype,
            references.logged_names,
        )
        stored = await asyncio.to_thread(store_report, self._sessions, report)
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
            await self.alerter.alert(payload, config.webhook_url)

    async def check_performance(self) -> list[pb.PerformanceWindow]:
        """Alerts (once each) on completed quality windows found degraded; returns those alerted now
        (:class:`~control_plane.monitoring.quality.QualityCheck`)."""
        return await self._quality.run()
