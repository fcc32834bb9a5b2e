"""The monitor's quality check (its slower beat, see :mod:`.monitor`): for each deployment with an alert
threshold, the quality windows over the label horizon (:mod:`.performance`, labels joined to indexed
predictions); each completed window found degraded alerts once (claimed in ``performance_alerts``, so a
restart or a second control plane does not alert it again)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.background import TRANSIENT_FAILURES
from control_plane.monitoring import config as configs
from control_plane.monitoring.alert_payloads import claim_performance_alert, performance_alert
from control_plane.monitoring.alerts import Alerter
from control_plane.monitoring.feedback import orphaned_total, orphans_expired_total
from control_plane.monitoring.gauges import MonitorGauges
from control_plane.monitoring.performance import performance
from control_plane.monitoring.settings import MonitoringSettings

_log = logging.getLogger("aether.control_plane.monitoring")


class QualityCheck:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: MonitoringSettings,
        gauges: MonitorGauges,
        alerter: Alerter,
        clock: Callable[[], float],
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._gauges = gauges
        self._alerter = alerter
        self._clock = clock
        self._warned: set[tuple[str, str, int]] = set()

    async def run(self) -> list[pb.PerformanceWindow]:
        """Alerts (once each) on completed quality windows found degraded; returns those alerted now.
        Each deployment on its own: one whose windows cannot be computed (a config stored before its
        window width was bounded) is logged and skipped, so the deployments after it still alert. An
        unreachable or busy database fails the whole check, which the next interval runs again."""
        configured = await asyncio.to_thread(configs.configured, self._sessions)
        self._gauges.orphaned.set(await asyncio.to_thread(orphaned_total, self._sessions))
        self._gauges.orphans_expired.set(await asyncio.to_thread(orphans_expired_total, self._sessions))
        now_us = int(self._clock() * 1e6)
        alerted: list[pb.PerformanceWindow] = []
        for config in configured.values():
            if config.disabled or config.task == pb.TASK_TYPE_UNSPECIFIED:
                continue
            try:
                alerted.extend(await self._check_deployment(config, now_us))
            except TRANSIENT_FAILURES:
                raise
            except Exception:
                _log.exception("quality windows of deployment %r could not be checked", config.deployment)
        return alerted

    async def _check_deployment(self, config: pb.MonitorConfig, now_us: int) -> list[pb.PerformanceWindow]:
        # The label horizon, cut to the most windows one read may span (short windows, long horizon): at
        # least 999 steps for every config accepted (MAX_STEPS_PER_WIDTH). Cut as width / step windows
        # fewer than the cap, it was negative past 1998 steps a width, and the one step used then still
        # overlapped more windows than the cap: the check failed on every pass, its alerts silently off.
        width_us, step_us = configs.performance_span_us(config)
        reach_us = min(int(self._settings.label_horizon_s * 1e6), configs.max_range_us(width_us, step_us))
        response = await asyncio.to_thread(
            performance, self._sessions, config, now_us - max(reach_us, 1), now_us
        )
        for item in response.unscored:
            if item.reason:  # labels its outputs cannot be mapped to: said once per version and process
                self._warn_once(config.deployment, item)
        # Every window with enough labels, metrics or none: one whose every labelled prediction was NaN
        # (or missing) has no metric, and is DEGRADED all the same; filtering on metrics silenced it.
        counted = (pb.PERFORMANCE_STATUS_OK, pb.PERFORMANCE_STATUS_DEGRADED)
        scored = [w for w in response.windows if w.status in counted]
        if scored:
            self._gauges.observe_performance(config.deployment, scored[-1])
        alerted: list[pb.PerformanceWindow] = []
        for window in scored:
            due = window.status == pb.PERFORMANCE_STATUS_DEGRADED and window.end_us <= now_us
            if due and await asyncio.to_thread(claim_performance_alert, self._sessions, config, window):
                alerted.append(window)
                await self._alert_performance(config, window)
        return alerted

    def _warn_once(self, deployment: str, item: pb.UnscoredPredictions) -> None:
        key = (deployment, item.model_name, item.version)
        if key not in self._warned:
            self._warned.add(key)
            _log.warning("quality windows of deployment %r: %d %s", deployment, item.n_labels, item.reason)

    async def _alert_performance(self, config: pb.MonitorConfig, window: pb.PerformanceWindow) -> None:
        await self._alerter.alert(performance_alert(config, window), config.webhook_url)
