"""The ``aether.v1.Monitoring`` gRPC service: thin methods over the monitoring cores (blocking SQL runs in
worker threads). Registering the service also starts the monitor loop (unless told not to) in the
server's event loop, reading the prediction log from the control plane's Redis; it stops with the
server (``context.on_close``)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.aether.v1 import monitoring_pb2_grpc as pb_grpc
from clients.errors import FailedPrecondition, InvalidArgument, NotFound, maps_errors
from clients.server_handlers import HandlerRegistry
from control_plane.api.context import ServiceContext, ServiceModule
from control_plane.api.deployments import manager_for
from control_plane.api.identity import actor_of
from control_plane.artifacts.settings import store_for
from control_plane.artifacts.store import ArtifactStore
from control_plane.monitoring import config as configs
from control_plane.monitoring.feedback import record_feedback
from control_plane.monitoring.gauges import gauges_for
from control_plane.monitoring.history import has_history
from control_plane.monitoring.model_outputs import check_prediction_output
from control_plane.monitoring.monitor import Monitor
from control_plane.monitoring.performance import performance
from control_plane.monitoring.profiles import ReferenceCache, link_reference_profile
from control_plane.monitoring.reports import reports_page
from control_plane.monitoring.served import DeploymentLookup
from control_plane.monitoring.settings import MonitoringSettings

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Monitoring"].full_name
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


async def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, **kwargs)


class MonitoringServicer(pb_grpc.MonitoringServicer):
    """``deployment`` is the server's deployments lookup (wired in by :func:`services`, as retraining's
    ConfigureTriggers checks it): a config for a misspelt name was stored and audited, and its reads
    answered "no drift reports", so a user believed the deployment was monitored."""

    def __init__(
        self, sessions: sessionmaker[Session], store: ArtifactStore, deployment: DeploymentLookup
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._deployment = deployment

    async def _require_deployment(self, name: str, *, or_history: bool) -> None:
        """NOT_FOUND unless ``name`` is a deployment; with ``or_history`` a name monitoring knows (a config,
        reports or predictions of a deployment since deleted) passes too, so its history stays readable."""
        if or_history and await _run(has_history, self._sessions, name):
            return
        try:
            await _run(self._deployment, name)
        except NotFound:
            known = " and monitoring has no config, reports or predictions of it" if or_history else ""
            raise NotFound(
                f"deployment {name!r} not found{known}; monitoring is configured for an existing"
                " deployment (`aetherctl deploy list` names them, `aetherctl deploy create` makes one)"
            ) from None

    @maps_errors
    async def ConfigureMonitor(
        self, request: pb.ConfigureMonitorRequest, context: Context
    ) -> pb.MonitorConfig:
        if not request.HasField("config") or not request.config.deployment:
            raise InvalidArgument("a monitor config with a deployment name is required")
        await self._require_deployment(request.config.deployment, or_history=False)
        if request.config.prediction_output:
            # An output the served models lack was stored, and the monitor then read no prediction of the
            # deployment (every label "orphaned"). Checked before the conditional write, which it leaves
            # as it is: a deployment changing models after this is the monitor's to count and report.
            deployment = await _run(self._deployment, request.config.deployment)
            await _run(check_prediction_output, self._sessions, request.config, deployment)
        expected = request.expected_revision if request.HasField("expected_revision") else None
        config = await _run(
            configs.put_config,
            self._sessions,
            request.config,
            actor=actor_of(context),
            expected_revision=expected,
        )
        return configs.shown(config)  # the webhook URL is write-only (see configs.shown)

    @maps_errors
    async def GetMonitorConfig(
        self, request: pb.GetMonitorConfigRequest, context: Context
    ) -> pb.MonitorConfig:
        if not request.deployment:
            raise InvalidArgument("a deployment name is required")
        await self._require_deployment(request.deployment, or_history=True)
        # Read-only tokens call this too: the webhook URL (often a credential) only redacted.
        return configs.shown(await _run(configs.get_config, self._sessions, request.deployment))

    @maps_errors
    async def GetDriftReports(
        self, request: pb.GetDriftReportsRequest, context: Context
    ) -> pb.GetDriftReportsResponse:
        if not request.deployment:
            raise InvalidArgument("a deployment name is required")
        await self._require_deployment(request.deployment, or_history=True)
        reports, token = await _run(
            reports_page,
            self._sessions,
            request.deployment,
            request.since_us,
            request.until_us,
            request.limit,
            request.page_token,
        )
        return pb.GetDriftReportsResponse(reports=reports, next_page_token=token)

    @maps_errors
    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: Context
    ) -> pb.RecordFeedbackResponse:
        # A label naming a deployment that never existed (a typo) would wait as an orphan forever; one
        # of a deployment deleted since, whose predictions monitoring still has, is taken.
        for name in sorted({item.deployment for item in request.feedback if item.deployment}):
            await self._require_deployment(name, or_history=True)
        return await _run(record_feedback, self._sessions, list(request.feedback))

    @maps_errors
    async def GetPerformance(
        self, request: pb.GetPerformanceRequest, context: Context
    ) -> pb.GetPerformanceResponse:
        if not request.deployment:
            raise InvalidArgument("a deployment name is required")
        await self._require_deployment(request.deployment, or_history=True)
        config = await _run(configs.get_config, self._sessions, request.deployment)
        return await _run(performance, self._sessions, config, request.since_us, request.until_us)

    @maps_errors
    async def RegisterReferenceProfile(
        self, request: pb.RegisterReferenceProfileRequest, context: Context
    ) -> pb.ReferenceProfileInfo:
        if not request.model_name or request.version <= 0:
            raise InvalidArgument("a model name and a version are required")
        return await _run(
            link_reference_profile,
            self._sessions,
            self._store,
            request.model_name,
            request.version,
            request.artifact_sha256,
            request.output_artifact_sha256,
            actor=actor_of(context),
        )


def services(
    settings: MonitoringSettings | None = None,
    *,
    run_monitor: bool = True,
    registry: CollectorRegistry | None = None,
    on_monitor: Callable[[Monitor], None] | None = None,
) -> ServiceModule:
    """The monitoring service; with ``run_monitor`` the monitor loop runs in the server's event loop
    (settings from the environment unless given; gauges on ``registry``, default the process-wide one).
    ``on_monitor`` receives the loop's :class:`Monitor` (for in-process use and tests)."""

    def add(server: HandlerRegistry, context: ServiceContext) -> str:
        store = store_for(context.settings.home)
        deployments = manager_for(context).get
        servicer = MonitoringServicer(context.sessions, store, deployments)
        pb_grpc.add_MonitoringServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        if run_monitor:
            loop_settings = settings or MonitoringSettings.from_env()
            gauges = gauges_for(registry)
            client = context.settings.async_redis_client()
            monitor = Monitor(
                context.sessions,
                ReferenceCache(context.sessions, store),
                client,
                loop_settings,
                gauges=gauges,
                deployments=deployments,
            )
            if on_monitor is not None:
                on_monitor(monitor)
            if loop_settings.metrics_addr:  # bound before the loop starts: a port in use stops the start
                _serve_gauges(loop_settings.metrics_addr, registry or REGISTRY, context)
            monitor.start()
            context.on_close.append(monitor.stop)  # awaited: its task closes the Redis client as it ends
        return SERVICE_NAME

    return add


def _serve_gauges(address: str, registry: CollectorRegistry, context: ServiceContext) -> None:
    """Serves ``registry`` on ``address`` (HOST:PORT, checked with the settings) until the server stops. A
    port that cannot be bound is a FailedPrecondition, which ``python -m control_plane`` prints as one line
    and exits 1, as for a --listen port in use (it was an OSError traceback)."""
    host, _, port = address.rpartition(":")
    try:
        http_server, _thread = start_http_server(int(port), host.strip("[]"), registry)
    except OSError as exc:
        reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise FailedPrecondition(f"cannot serve the monitor's metrics on {address}: {reason}") from None
    context.on_close.append(http_server.shutdown)


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Serves monitoring with the monitor loop configured from the environment."""
    return services()(server, context)
