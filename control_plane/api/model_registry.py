"""The ``aether.v1.ModelRegistry`` gRPC service: each method unpacks the request, runs the registry
core in a worker thread (it does blocking SQL) with the caller as the audit actor, and returns its
answer. A refused write is audited too (:mod:`control_plane.api.refusals`). The artifact service it
depends on registers separately (:func:`add_artifacts_to_server`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc.aio

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import model_registry_pb2_grpc
from clients.errors import maps_errors
from clients.server_handlers import HandlerRegistry
from control_plane.api.artifacts import add_to_server as add_artifacts_to_server
from control_plane.api.identity import actor_of, is_job_call
from control_plane.api.offline_features import offline_root
from control_plane.api.refusals import RefusalAudit, audits_refusals
from control_plane.artifacts.settings import store_for
from control_plane.model_registry.guards import ModelReferenceGuard
from control_plane.model_registry.registry import ModelRegistry
from control_plane.offline.store import OfflineStore

if TYPE_CHECKING:  # the server module imports the service modules it serves
    from control_plane.api.context import ServiceContext, ServiceModule

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

MODEL_REGISTRY_SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistry"].full_name

__all__ = ["ModelRegistryServicer", "add_artifacts_to_server", "add_to_server", "services"]


class ModelRegistryServicer(model_registry_pb2_grpc.ModelRegistryServicer):
    def __init__(self, registry: ModelRegistry, refusals: RefusalAudit) -> None:
        self._registry = registry
        #: Where refused writes are audited (``audits_refusals``).
        self.refusals = refusals

    @staticmethod
    async def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    @maps_errors
    @audits_refusals
    async def CreateRegisteredModel(
        self, request: pb.CreateRegisteredModelRequest, context: Context
    ) -> pb.RegisteredModel:
        return await self._run(
            self._registry.create_model,
            request.name,
            request.description,
            dict(request.tags),
            actor=actor_of(context),
        )

    @maps_errors
    async def GetRegisteredModel(
        self, request: pb.GetRegisteredModelRequest, context: Context
    ) -> pb.RegisteredModel:
        return await self._run(self._registry.get_model, request.name)

    @maps_errors
    async def ListRegisteredModels(
        self, request: pb.ListRegisteredModelsRequest, context: Context
    ) -> pb.ListRegisteredModelsResponse:
        models, token = await self._run(
            self._registry.list_models,
            request.name_prefix,
            dict(request.tags),
            request.page_size,
            request.page_token,
        )
        return pb.ListRegisteredModelsResponse(models=models, next_page_token=token)

    @maps_errors
    @audits_refusals
    async def DeleteRegisteredModel(
        self, request: pb.DeleteRegisteredModelRequest, context: Context
    ) -> pb.DeleteRegisteredModelResponse:
        await self._run(self._registry.delete_model, request.name, actor=actor_of(context))
        return pb.DeleteRegisteredModelResponse()

    @maps_errors
    @audits_refusals
    async def CreateModelVersion(
        self, request: pb.CreateModelVersionRequest, context: Context
    ) -> pb.ModelVersion:
        # A job's token may not register a version from its run once the run has ended (job_tokens).
        return await self._run(
            self._registry.create_version, request, actor=actor_of(context), keep_ended=is_job_call()
        )

    @maps_errors
    async def GetModelVersion(self, request: pb.GetModelVersionRequest, context: Context) -> pb.ModelVersion:
        return await self._run(self._registry.get_version, request.model_name, request.version, request.alias)

    @maps_errors
    async def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: Context
    ) -> pb.ListModelVersionsResponse:
        versions, token = await self._run(
            self._registry.list_versions,
            request.model_name,
            request.status,
            request.page_size,
            request.page_token,
        )
        return pb.ListModelVersionsResponse(versions=versions, next_page_token=token)

    @maps_errors
    @audits_refusals
    async def ReviewModelVersion(
        self, request: pb.ReviewModelVersionRequest, context: Context
    ) -> pb.ModelVersion:
        return await self._run(
            self._registry.review,
            request.model_name,
            request.version,
            request.decision,
            request.reason,
            actor=actor_of(context),
        )

    @maps_errors
    @audits_refusals
    async def DeleteModelVersion(
        self, request: pb.DeleteModelVersionRequest, context: Context
    ) -> pb.DeleteModelVersionResponse:
        await self._run(
            self._registry.delete_version, request.model_name, request.version, actor=actor_of(context)
        )
        return pb.DeleteModelVersionResponse()

    @maps_errors
    @audits_refusals
    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.ModelVersion:
        return await self._run(
            self._registry.set_alias,
            request.model_name,
            request.alias,
            request.version,
            actor=actor_of(context),
        )

    @maps_errors
    @audits_refusals
    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context: Context) -> pb.DeleteAliasResponse:
        await self._run(
            self._registry.delete_alias, request.model_name, request.alias, actor=actor_of(context)
        )
        return pb.DeleteAliasResponse()

    @maps_errors
    async def CheckDeployable(self, request: pb.CheckDeployableRequest, context: Context) -> pb.ModelVersion:
        return await self._run(self._registry.can_deploy, request.model_name, request.version)

    @maps_errors
    async def GetLineage(self, request: pb.GetLineageRequest, context: Context) -> pb.Lineage:
        return await self._run(self._registry.get_lineage, request.model_name, request.version)

    @maps_errors
    async def FindUsages(self, request: pb.FindUsagesRequest, context: Context) -> pb.FindUsagesResponse:
        usages = await self._run(self._registry.find_usages, request.feature_view, request.version or None)
        return pb.FindUsagesResponse(usages=usages)


def services(guards: Sequence[ModelReferenceGuard] = ()) -> tuple[ServiceModule, ServiceModule]:
    """The artifact service and a model-registry service whose deletes ask ``guards`` (deployments)."""

    def add_registry(server: HandlerRegistry, context: ServiceContext) -> str:
        offline = OfflineStore(offline_root(context))
        registry = ModelRegistry(context.sessions, store_for(context.settings.home), guards, offline)
        refusals = RefusalAudit(context.sessions, context.settings.refusal_audit_window_s)
        context.on_close.append(refusals.close)  # writes the counts of folded refusals
        servicer = ModelRegistryServicer(registry, refusals)
        model_registry_pb2_grpc.add_ModelRegistryServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        return MODEL_REGISTRY_SERVICE

    return add_artifacts_to_server, add_registry


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Serves the model registry (without deployment guards); pair it with :func:`add_artifacts_to_server`."""
    return services()[1](server, context)
