"""The ``aether.v1.FeatureRegistry`` gRPC service: each method unpacks the request, runs the registry
core in a worker thread (it does blocking SQL) and returns its answer. Mutations pass the caller's
identity (:func:`~control_plane.api.identity.actor_of`) for the audit log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import feature_registry_pb2_grpc
from clients.errors import maps_errors
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES
from control_plane.api.changes import ChangeSignal
from control_plane.api.identity import actor_of
from control_plane.db.store_identity import StoreIdentity
from control_plane.features.registry import FeatureRegistry

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class FeatureRegistryServicer(feature_registry_pb2_grpc.FeatureRegistryServicer):
    def __init__(
        self,
        registry: FeatureRegistry,
        watch_poll_interval_s: float = 1.0,
        max_join_key_bytes: int = DEFAULT_MAX_JOIN_KEY_BYTES,
    ) -> None:
        """``max_join_key_bytes``: this control plane's ingestion limit (``ControlPlaneSettings``,
        AETHER_MAX_JOIN_KEY_BYTES), sent with every snapshot: the data planes refuse reads of longer keys by
        it, whatever their own environment says."""
        self._registry = registry
        self._store = StoreIdentity(registry.sessions)  # sent with every snapshot
        self._max_join_key_bytes = max_join_key_bytes
        self._poll_interval_s = watch_poll_interval_s
        self._changes = ChangeSignal()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        # Any mutation of this registry object (through this service, or in process: the CLI's dev
        # mode, background loops) wakes the watch streams at once.
        registry.add_listener(self._registry_changed)

    def _registry_changed(self, revision: int) -> None:
        """Called from the worker thread that committed the change."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is watching any more
            self._loop.call_soon_threadsafe(self._changes.notify)

    def close(self) -> None:
        """Ends every watch stream, so that a server stop need not wait out its grace period."""
        if self._closing:
            return
        self._closing = True
        self._registry.remove_listener(self._registry_changed)
        self._changes.notify()

    @staticmethod
    async def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs a blocking registry call in a worker thread, keeping the event loop free."""
        return await asyncio.to_thread(call, *args, **kwargs)

    @maps_errors
    async def CreateEntity(self, request: pb.CreateEntityRequest, context: Context) -> pb.Entity:
        return await self._run(self._registry.create_entity, request.entity, actor=actor_of(context))

    @maps_errors
    async def GetEntity(self, request: pb.GetEntityRequest, context: Context) -> pb.Entity:
        return await self._run(self._registry.get_entity, request.name)

    @maps_errors
    async def ListEntities(
        self, request: pb.ListEntitiesRequest, context: Context
    ) -> pb.ListEntitiesResponse:
        entities, token = await self._run(
            self._registry.list_entities_page, request.page_size, request.page_token
        )
        return pb.ListEntitiesResponse(entities=entities, next_page_token=token)

    @maps_errors
    async def DeleteEntity(
        self, request: pb.DeleteEntityRequest, context: Context
    ) -> pb.DeleteEntityResponse:
        await self._run(self._registry.delete_entity, request.name, actor=actor_of(context))
        return pb.DeleteEntityResponse()

    @maps_errors
    async def CreateFeatureView(
        self, request: pb.CreateFeatureViewRequest, context: Context
    ) -> pb.FeatureView:
        return await self._run(
            self._registry.create_feature_view, request.spec, request.metadata, actor=actor_of(context)
        )

    @maps_errors
    async def GetFeatureView(self, request: pb.GetFeatureViewRequest, context: Context) -> pb.FeatureView:
        return await self._run(self._registry.get_feature_view, request.name, request.version)

    @maps_errors
    async def ListFeatureViews(
        self, request: pb.ListFeatureViewsRequest, context: Context
    ) -> pb.ListFeatureViewsResponse:
        views, token = await self._run(
            self._registry.list_feature_views_page,
            request.owner,
            dict(request.tags),
            request.include_retired,
            request.page_size,
            request.page_token,
        )
        return pb.ListFeatureViewsResponse(views=views, next_page_token=token)

    @maps_errors
    async def ListFeatureViewVersions(
        self, request: pb.ListFeatureViewVersionsRequest, context: Context
    ) -> pb.ListFeatureViewVersionsResponse:
        versions, token = await self._run(
            self._registry.list_feature_view_versions_page,
            request.name,
            request.page_size,
            request.page_token,
        )
        return pb.ListFeatureViewVersionsResponse(versions=versions, next_page_token=token)

    @maps_errors
    async def UpdateFeatureViewMetadata(
        self, request: pb.UpdateFeatureViewMetadataRequest, context: Context
    ) -> pb.FeatureView:
        metadata = request.metadata if request.HasField("metadata") else None
        return await self._run(
            self._registry.update_feature_view_metadata,
            request.name,
            metadata,
            dict(request.feature_descriptions),
            actor=actor_of(context),
        )

    @maps_errors
    async def UpdateValidation(self, request: pb.UpdateValidationRequest, context: Context) -> pb.FeatureView:
        return await self._run(
            self._registry.update_validation,
            request.name,
            request.version,
            dict(request.rules),
            actor=actor_of(context),
        )

    @maps_errors
    async def CreateFeatureViewVersion(
        self, request: pb.CreateFeatureViewVersionRequest, context: Context
    ) -> pb.FeatureView:
        return await self._run(
            self._registry.create_feature_view_version, request.spec, actor=actor_of(context)
        )

    @maps_errors
    async def DeprecateFeatureViewVersion(
        self, request: pb.ChangeVersionStatusRequest, context: Context
    ) -> pb.FeatureView:
        return await self._run(
            self._registry.deprecate_version, request.name, request.version, actor=actor_of(context)
        )

    @maps_errors
    async def RetireFeatureViewVersion(
        self, request: pb.ChangeVersionStatusRequest, context: Context
    ) -> pb.FeatureView:
        return await self._run(
            self._registry.retire_version, request.name, request.version, actor=actor_of(context)
        )

    @maps_errors
    async def DeleteFeatureView(
        self, request: pb.DeleteFeatureViewRequest, context: Context
    ) -> pb.DeleteFeatureViewResponse:
        await self._run(self._registry.delete_feature_view, request.name, actor=actor_of(context))
        return pb.DeleteFeatureViewResponse()

    @maps_errors
    async def Apply(self, request: pb.ApplyRequest, context: Context) -> pb.ApplyResponse:
        return await self._run(self._registry.apply, request, actor=actor_of(context))

    @maps_errors
    async def WatchRegistry(
        self, request: pb.WatchRegistryRequest, context: Context
    ) -> AsyncIterator[pb.RegistrySnapshot]:
        """A snapshot at once (unless the client already holds the current revision), then one after
        every change: changes made through this process wake the stream immediately; changes made by
        other processes sharing the database are seen by polling its revision. Each names the database
        (``store_id``): a data plane refuses one of another database than its catalog's; and the join-key
        limit of this process's ingestion (``max_join_key_bytes``), which the data plane's reads apply."""
        known: int | None = request.known_revision or None  # 0: the client holds nothing yet
        store_id = await self._store.get()
        while not self._closing:
            ticket = self._changes.ticket()  # taken before reading, so no change slips between
            if await self._run(self._registry.revision) != known:
                snapshot = await self._run(self._registry.snapshot)
                snapshot.store_id = store_id
                snapshot.max_join_key_bytes = self._max_join_key_bytes
                known = snapshot.revision
                yield snapshot
                continue
            await self._changes.wait(ticket, self._poll_interval_s)
