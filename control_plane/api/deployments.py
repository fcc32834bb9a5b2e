"""The ``aether.v1.Deployments`` gRPC service: each method unpacks the request, runs the deployments core
in a worker thread (it does blocking SQL) with the caller as the audit actor, and returns its answer.
``WatchDeploymentPlans`` streams full plan snapshots to data planes. Registering the service also starts
the canary controller's loop (unless told not to), stopped with the server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import deployments_pb2_grpc
from clients.errors import maps_errors
from clients.server_handlers import HandlerRegistry
from control_plane.api.changes import ChangeSignal
from control_plane.api.context import ServiceContext, ServiceModule
from control_plane.api.identity import actor_of
from control_plane.artifacts.settings import store_for
from control_plane.db.store_identity import StoreIdentity
from control_plane.deployments.canary_loop import CanaryLoop, CanaryLoopSettings
from control_plane.deployments.core import DeploymentManager
from control_plane.deployments.observations import PredictionLogObserver
from control_plane.model_registry.registry import ModelRegistry

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

DEPLOYMENTS_SERVICE = pb.DESCRIPTOR.services_by_name["Deployments"].full_name


class DeploymentsServicer(deployments_pb2_grpc.DeploymentsServicer):
    def __init__(
        self, manager: DeploymentManager, store: StoreIdentity, watch_poll_interval_s: float = 1.0
    ) -> None:
        self._manager = manager
        self._store = store  # the database's id, sent with every snapshot
        self._poll_interval_s = watch_poll_interval_s
        self._changes = ChangeSignal()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        manager.add_listener(self._deployments_changed)

    def _deployments_changed(self, revision: int) -> None:
        """Called from the worker thread that committed the change."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is watching any more
            self._loop.call_soon_threadsafe(self._changes.notify)

    def close(self) -> None:
        """Ends every watch stream, so that a server stop need not wait out its grace period."""
        if self._closing:
            return
        self._closing = True
        self._manager.remove_listener(self._deployments_changed)
        self._changes.notify()

    @staticmethod
    async def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    @maps_errors
    async def CreateDeployment(self, request: pb.CreateDeploymentRequest, context: Context) -> pb.Deployment:
        return await self._run(self._manager.create, request, actor=actor_of(context))

    @maps_errors
    async def UpdateDeployment(self, request: pb.UpdateDeploymentRequest, context: Context) -> pb.Deployment:
        return await self._run(self._manager.update, request, actor=actor_of(context))

    @maps_errors
    async def GetDeployment(self, request: pb.GetDeploymentRequest, context: Context) -> pb.Deployment:
        return await self._run(self._manager.get, request.name)

    @maps_errors
    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: Context
    ) -> pb.ListDeploymentsResponse:
        found, token = await self._run(
            self._manager.list_deployments, request.name_prefix, request.page_size, request.page_token
        )
        return pb.ListDeploymentsResponse(deployments=found, next_page_token=token)

    @maps_errors
    async def DeleteDeployment(
        self, request: pb.DeleteDeploymentRequest, context: Context
    ) -> pb.DeleteDeploymentResponse:
        await self._run(self._manager.delete, request.name, actor=actor_of(context))
        return pb.DeleteDeploymentResponse()

    @maps_errors
    async def SetTraffic(self, request: pb.SetTrafficRequest, context: Context) -> pb.Deployment:
        return await self._run(
            self._manager.set_traffic,
            request.name,
            request.variant,
            request.traffic_percent,
            actor=actor_of(context),
        )

    @maps_errors
    async def StartCanary(self, request: pb.StartCanaryRequest, context: Context) -> pb.Deployment:
        return await self._run(self._manager.start_canary, request, actor=actor_of(context))

    @maps_errors
    async def Promote(self, request: pb.PromoteRequest, context: Context) -> pb.Deployment:
        return await self._run(self._manager.promote, request.name, request.variant, actor=actor_of(context))

    @maps_errors
    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.Deployment:
        return await self._run(
            self._manager.rollback, request.name, request.variant, request.reason, actor=actor_of(context)
        )

    @maps_errors
    async def WatchDeploymentPlans(
        self, request: pb.WatchDeploymentPlansRequest, context: Context
    ) -> AsyncIterator[pb.DeploymentPlanSnapshot]:
        """A snapshot at once (unless the client already holds the current revision), then one after
        every change: changes made through this process wake the stream immediately; changes made by
        other processes sharing the database are seen by polling its revision. Each names the database
        (``store_id``): a data plane refuses plans of another database than its plans'."""
        known: int | None = request.known_revision or None  # 0: the client holds nothing yet
        store_id = await self._store.get()
        while not self._closing:
            ticket = self._changes.ticket()  # taken before reading, so no change slips between
            if await self._run(self._manager.revision) != known:
                snapshot = await self._run(self._manager.snapshot)
                # The core caches its snapshot for every watcher: the id is the same for all of them (one
                # database), so setting it on the shared message changes it once, not per stream.
                if snapshot.store_id != store_id:
                    snapshot.store_id = store_id
                known = snapshot.revision
                yield snapshot
                continue
            await self._changes.wait(ticket, self._poll_interval_s)


def manager_for(context: ServiceContext) -> DeploymentManager:
    """A deployments core on the control plane's database, checking versions with its model registry."""
    return DeploymentManager(
        context.sessions, ModelRegistry(context.sessions, store_for(context.settings.home))
    )


def services(canary: CanaryLoopSettings | None = None, *, run_canary_loop: bool = True) -> ServiceModule:
    """The deployments service; with ``run_canary_loop`` the canary controller runs in the server's event
    loop, reading the prediction log from the control plane's Redis (settings from the environment
    unless ``canary`` is given)."""

    def add(server: HandlerRegistry, context: ServiceContext) -> str:
        manager = manager_for(context)
        servicer = DeploymentsServicer(
            manager, StoreIdentity(context.sessions), context.settings.watch_poll_interval_s
        )
        deployments_pb2_grpc.add_DeploymentsServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        context.on_close.append(servicer.close)
        if run_canary_loop:
            loop_settings = canary or CanaryLoopSettings.from_env()
            client = context.settings.async_redis_client()
            observer = PredictionLogObserver(client, loop_settings.stream)
            canary_loop = CanaryLoop(manager, observer, loop_settings.interval_s)
            canary_loop.start()
            context.on_close.append(canary_loop.stop)  # awaited: its task closes the Redis client as it ends
        return DEPLOYMENTS_SERVICE

    return add


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Serves deployments with the canary controller configured from the environment."""
    return services()(server, context)
