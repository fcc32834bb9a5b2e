"""The ``aether.v1.Retraining`` gRPC service: thin methods over the retraining cores (blocking SQL runs in
worker threads). Registering the service also starts the retraining loop (unless told not to) in the
server's event loop; it stops with the server (``context.on_close``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio

from clients.aether.v1 import retraining_pb2 as pb
from clients.aether.v1 import retraining_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument, maps_errors
from clients.server_handlers import HandlerRegistry
from control_plane.api.context import ServiceContext, ServiceModule
from control_plane.api.deployments import manager_for
from control_plane.api.identity import actor_of
from control_plane.api.offline_features import datasets_root_of, reader_store
from control_plane.artifacts.settings import store_for
from control_plane.deployments.core import DeploymentManager
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.model_registry.registry import ModelRegistry
from control_plane.retraining import config as configs
from control_plane.retraining import listing
from control_plane.retraining.loop import Retrainer, RetrainingSettings

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Retraining"].full_name
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


async def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, **kwargs)


class RetrainingServicer(pb_grpc.RetrainingServicer):
    def __init__(self, retrainer: Retrainer, deployments: DeploymentManager) -> None:
        self._retrainer = retrainer
        self._deployments = deployments
        self._sessions = retrainer.sessions

    @maps_errors
    async def ConfigureTriggers(
        self, request: pb.ConfigureTriggersRequest, context: Context
    ) -> pb.TriggerConfig:
        if not request.HasField("config") or not request.config.deployment:
            raise InvalidArgument("a trigger config with a deployment name is required")
        await _run(self._deployments.get, request.config.deployment)  # NOT_FOUND for an unknown one
        expected = request.expected_revision if request.HasField("expected_revision") else None
        return await _run(
            configs.put_config,
            self._sessions,
            request.config,
            actor=actor_of(context),
            expected_revision=expected,
        )

    @maps_errors
    async def GetTriggerConfig(
        self, request: pb.GetTriggerConfigRequest, context: Context
    ) -> pb.TriggerConfig:
        if not request.deployment:
            raise InvalidArgument("a deployment name is required")
        if not await _run(configs.has_config, self._sessions, request.deployment):
            # The disabled defaults of a typo read as "retraining is off" there.
            await _run(self._deployments.get, request.deployment)  # NOT_FOUND for an unknown one
        return await _run(configs.get_config, self._sessions, request.deployment)

    @maps_errors
    async def TriggerNow(self, request: pb.TriggerNowRequest, context: Context) -> pb.TriggerDecision:
        if not request.deployment:
            raise InvalidArgument("a deployment name is required")
        return await self._retrainer.trigger_now(request.deployment, actor_of(context), request.reason)

    @maps_errors
    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: Context
    ) -> pb.ListDecisionsResponse:
        found, token = await _run(
            listing.decisions_page,
            self._sessions,
            request.deployment,
            request.triggered_only,
            request.limit,
            request.page_token,
        )
        if not found:
            await self._require_known(request.deployment)
        return pb.ListDecisionsResponse(decisions=found, next_page_token=token)

    @maps_errors
    async def ListEvaluations(
        self, request: pb.ListEvaluationsRequest, context: Context
    ) -> pb.ListEvaluationsResponse:
        found, token = await _run(
            listing.evaluations_page, self._sessions, request.deployment, request.limit, request.page_token
        )
        if not found:
            await self._require_known(request.deployment)
        return pb.ListEvaluationsResponse(evaluations=found, next_page_token=token)

    async def _require_known(self, deployment: str) -> None:
        """NOT_FOUND for a deployment that does not exist, asked of a list that came back empty: a typo
        read as "no retraining happened". (A deployment deleted since keeps its records, so a list that
        found any needs no check.)"""
        if deployment:
            await _run(self._deployments.get, deployment)


def services(
    settings: RetrainingSettings | None = None,
    *,
    run_loop: bool = True,
    on_retrainer: Callable[[Retrainer], None] | None = None,
) -> ServiceModule:
    """The retraining service; with ``run_loop`` the retraining loop runs in the server's event loop
    (settings from the environment unless given). ``on_retrainer`` receives the core (in-process use)."""

    def add(server: HandlerRegistry, context: ServiceContext) -> str:
        loop_settings = settings or RetrainingSettings.from_env()
        # The data window is read as training sets are (uncounted files left out, a lost folder refused).
        offline = reader_store(context)
        jobs = JobService(
            context.sessions,
            JobsSettings.from_env(context.settings.home),
            context.registry,
            offline,
            datasets_root=datasets_root_of(context),
        )
        deployments = manager_for(context)
        retrainer = Retrainer(
            context.sessions,
            ModelRegistry(context.sessions, store_for(context.settings.home)),
            deployments,
            jobs,
            context.registry,
            offline,
            context.settings.async_redis_client(),
            loop_settings,
        )
        pb_grpc.add_RetrainingServicer_to_server(RetrainingServicer(retrainer, deployments), server)  # type: ignore[no-untyped-call]
        if on_retrainer is not None:
            on_retrainer(retrainer)
        if run_loop:
            retrainer.start()
            context.on_close.append(retrainer.stop)  # awaited: its task closes the Redis client as it ends
        return SERVICE_NAME

    return add


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Serves retraining with the loop configured from the environment."""
    return services()(server, context)
