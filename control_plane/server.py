"""The control-plane gRPC server: the feature registry and every service module, health and reflection."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from clients.aether.v1 import feature_registry_pb2, feature_registry_pb2_grpc
from clients.errors import FailedPrecondition
from clients.files import private_folder
from clients.keepalive import server_keepalive_options
from clients.server_handlers import GenericHandlersOnly, enable_reflection
from clients.tls import add_port
from control_plane.api import audit as audit_api
from control_plane.api import deployments as deployments_api
from control_plane.api import ingestion as ingestion_api
from control_plane.api import jobs as jobs_api
from control_plane.api import model_registry as model_registry_api
from control_plane.api import monitoring as monitoring_api
from control_plane.api import offline_features as offline_api
from control_plane.api import retraining as retraining_api
from control_plane.api import tracking as tracking_api
from control_plane.api.context import ServiceContext, ServiceModule
from control_plane.api.feature_registry import FeatureRegistryServicer
from control_plane.api.refusals import RefusalAudit
from control_plane.db import create_session_factory, open_database
from control_plane.db.engine import pool_size_for
from control_plane.deployments.model_guard import DeploymentModelGuard
from control_plane.features.guards import ReferenceGuard
from control_plane.features.online_cleanup import OnlineCleanup
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.streaming.orphans import drain_outboxes
from control_plane.model_registry.feature_guard import ModelFeatureGuard
from control_plane.offline.store import OfflineStore
from control_plane.retraining.model_guard import PromotionModelGuard
from control_plane.settings import ControlPlaneSettings

FEATURE_REGISTRY_SERVICE = feature_registry_pb2.DESCRIPTOR.services_by_name["FeatureRegistry"].full_name


class ControlPlaneServer:
    """A running control plane. ``registry`` is the core it serves, for in-process use (e.g. to plug in
    reference guards); ``port`` the port it listens on, ``address`` the ``HOST:PORT`` clients dial;
    ``online_cleanup`` the loop removing deleted views' online values (in-process use and tests)."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        host: str,
        registry: FeatureRegistry,
        servicer: FeatureRegistryServicer,
        health_servicer: health.aio.HealthServicer,
        engine: Engine,
        grace_s: float,
        context: ServiceContext,
        online_cleanup: OnlineCleanup | None = None,
    ) -> None:
        self.port = port
        self.address = f"{host}:{port}"
        self.registry = registry
        self._server = server
        self._servicer = servicer
        self._health = health_servicer
        self._engine = engine
        self._grace_s = grace_s
        self._stopped = False
        self.context = context
        self.online_cleanup = online_cleanup

    async def stop(self) -> None:
        """Asks in-flight ingestion runs to stop, reports NOT_SERVING, ends watch streams, waits (at most
        the drain, ``shutdown_drain_s``) for those runs to answer their callers, lets the other in-flight
        calls finish within the grace period, then closes the database. Stopping twice is harmless."""
        if self._stopped:
            return
        self._stopped = True
        # Before NOT_SERVING, so that whoever sees it knows no run writes another chunk; awaited before the
        # grace cancels calls: a cancelled run's caller heard UNAVAILABLE and retried a run that had stored
        # rows (ingestion.draining).
        answered = [begin() for begin in self.context.on_stop]
        await self._health.enter_graceful_shutdown()
        self._servicer.close()
        for waiting in answered:
            await waiting
        for close in self.context.on_close:
            ending = close()
            if ending is not None:
                await ending
        await self._server.stop(self._grace_s)
        self._engine.dispose()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


#: Service modules every control plane serves besides the feature registry.
DEFAULT_SERVICES: tuple[ServiceModule, ...] = (
    tracking_api.add_to_server,
    # Model versions that a deployment uses, or a retraining promotion is promoting, cannot be deleted.
    *model_registry_api.services([DeploymentModelGuard(), PromotionModelGuard()]),
    deployments_api.add_to_server,
    audit_api.add_to_server,
    jobs_api.add_to_server,
    monitoring_api.add_to_server,
    retraining_api.add_to_server,
    offline_api.add_to_server,
    ingestion_api.add_to_server,
)


#: Reference guards the feature registry asks before a retire or delete, unless others are given.
def default_guards() -> tuple[ReferenceGuard, ...]:
    return (ModelFeatureGuard(),)


async def start_server(
    settings: ControlPlaneSettings,
    guards: Sequence[ReferenceGuard] | None = None,
    services: Sequence[ServiceModule] = DEFAULT_SERVICES,
) -> ControlPlaneServer:
    """Migrates the metadata database to the newest schema and starts serving on
    ``settings.listen_addr`` (port 0 picks a free port; see ``.port``): the feature registry plus
    ``services``, each with health status and reflection."""
    private_folder(settings.home)
    # Every servicer and loop runs its blocking work through the loop's default executor (to_thread), so
    # an executor of a known size, with a pooled connection for each of its threads, means no call ever
    # waits for a connection (asyncio's own executor has a size of its choosing, and the pool was 5 + 10).
    executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="aether-control-plane")
    asyncio.get_running_loop().set_default_executor(executor)
    engine = await asyncio.to_thread(
        open_database,
        settings.db_url,
        settings.db_busy_timeout_s,
        pool_size=pool_size_for(settings.worker_threads),
    )
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions, default_guards() if guards is None else guards)
    context = ServiceContext(settings, engine, sessions, registry)

    # gRPC sets SO_REUSEPORT by default: a second control plane on the same port would bind beside the
    # first and the kernel would split calls between two databases. A port in use must be an error.
    options = [("grpc.so_reuseport", 0), *server_keepalive_options()]  # watchers ping (clients.keepalive)
    # Calls the interceptor refuses (no token, a read-only one on a write) are audited like any other
    # refused model operation (those without a token rate-limited; their counts written on stop), and so
    # is every write of a job's token it refuses (out of scope, another run), whatever the service.
    refusals = RefusalAudit(sessions, settings.refusal_audit_window_s)
    context.on_close.append(refusals.close)
    interceptors = settings.auth.interceptors(on_refusal=refusals.refused)
    server = grpc.aio.server(interceptors=interceptors, options=options)
    handlers = GenericHandlersOnly(server)  # not registered with gRPC core: see clients.server_handlers
    servicer = FeatureRegistryServicer(registry, settings.watch_poll_interval_s, settings.max_join_key_bytes)
    feature_registry_pb2_grpc.add_FeatureRegistryServicer_to_server(servicer, handlers)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, handlers)
    service_names = [FEATURE_REGISTRY_SERVICE, *(add(handlers, context) for add in services)]
    for service in ("", *service_names):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    enable_reflection(handlers, (*service_names, health.SERVICE_NAME))
    try:
        port = add_port(server, settings.listen_addr, settings.tls)
    except RuntimeError:
        engine.dispose()
        # FailedPrecondition, as the data plane's: `python -m control_plane` prints it as one line and
        # exits 1; gRPC's own message ("Failed to bind ...") says neither why nor what to do.
        reason = why_not_listening(settings.listen_addr)
        raise FailedPrecondition(f"cannot listen on {settings.listen_addr}: {reason}") from None
    host = settings.listen_addr.rsplit(":", 1)[0]
    context.address = f"{host}:{port}"
    await server.start()
    # Removes the online values of deleted feature views (a delete only queues them; see the module).
    # It also drains the outboxes stream materializers killed before a delete left (``orphans.py``).
    outbox_client = settings.redis_client()
    outboxes = partial(
        drain_outboxes, outbox_client, sessions, OfflineStore(offline_api.offline_root(context))
    )
    cleanup = OnlineCleanup(
        sessions,
        settings.async_redis_client(),
        settings.online_cleanup_interval_s,
        outboxes=outboxes,
    )
    cleanup.start()
    context.on_close.append(cleanup.stop)  # awaited: its task closes the Redis client as it ends
    context.on_close.append(outbox_client.close)  # after the loop's stop: it no longer drains
    return ControlPlaneServer(
        server, port, host, registry, servicer, health_servicer, engine, settings.shutdown_grace_s, context,
        cleanup,
    )  # fmt: skip


def why_not_listening(address: str) -> str:
    """Why ``address`` (HOST:PORT) cannot be listened on, found by binding it plainly (SO_REUSEADDR, as
    gRPC binds, so that connections of a previous run in TIME_WAIT do not count): gRPC's bind error
    names no cause."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except OSError as exc:
        return "the address is already in use" if exc.errno == errno.EADDRINUSE else str(exc.strerror or exc)
    except ValueError:
        return f"{port!r} is not a port number"
    return "gRPC could not bind it (GRPC_VERBOSITY=debug shows why)"
