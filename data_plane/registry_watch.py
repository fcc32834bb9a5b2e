"""Keeps the data plane's catalog current: a background task on ``FeatureRegistry.WatchRegistry``.

Every snapshot the control plane streams becomes a new immutable :class:`Catalog`, swapped in at once, and
is written to the snapshot file atomically, so that a restarted data plane serves from the last snapshot
while the control plane is unreachable. When the stream fails the task reconnects with capped, jittered
exponential backoff; reads go on from the catalog it already has. A snapshot of another metadata
database than the catalog's is refused (unless ``accept_store_id`` names it): see
:mod:`data_plane.watch_stream`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc.aio

from clients.aether.v1 import feature_registry_pb2, feature_registry_pb2_grpc
from clients.keepalive import WATCH_KEEPALIVE_S
from clients.sdk.auth import ChannelSecurity
from data_plane.catalog import Catalog, RegistryState
from data_plane.watch_stream import WatchStream, load_message, save_snapshot

__all__ = ["OnCatalog", "RegistryWatch", "load_snapshot", "save_snapshot"]

_log = logging.getLogger("aether.data_plane.registry_watch")

OnCatalog = Callable[[Catalog], Awaitable[None]]


def load_snapshot(path: Path) -> feature_registry_pb2.RegistrySnapshot | None:
    """The persisted snapshot, or None when there is none or it cannot be parsed (logged)."""
    return load_message(path, feature_registry_pb2.RegistrySnapshot, "registry snapshot")


def _watch_registry(channel: grpc.aio.Channel) -> AsyncIterator[feature_registry_pb2.RegistrySnapshot]:
    stub = feature_registry_pb2_grpc.FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
    stream: AsyncIterator[feature_registry_pb2.RegistrySnapshot] = stub.WatchRegistry(
        feature_registry_pb2.WatchRegistryRequest(known_revision=0)
    )
    return stream


class RegistryWatch:
    def __init__(
        self,
        state: RegistryState,
        control_plane_addr: str,
        snapshot_path: Path,
        *,
        plan_cache_size: int = 1024,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        on_catalog: OnCatalog | None = None,
        security: ChannelSecurity | None = None,
        keepalive_s: float = WATCH_KEEPALIVE_S,
        accept_store_id: str = "",
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._state = state
        self._plan_cache_size = plan_cache_size
        self._on_catalog = on_catalog
        self._stream = WatchStream(
            "registry",
            control_plane_addr,
            snapshot_path,
            feature_registry_pb2.RegistrySnapshot,
            _watch_registry,
            self._install,
            security=security,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            keepalive_s=keepalive_s,
            accept_store_id=accept_store_id,
            on_refused=on_refused,
        )
        self.connected = self._stream.connected  # set while a watch stream is delivering snapshots

    async def load_persisted(self) -> bool:
        """Serves from the snapshot file, if any; True when one was loaded."""
        snapshot = await self._stream.load_persisted()
        if snapshot is None:
            return False
        _log.info("serving registry revision %d from %s", snapshot.revision, self._stream.path)
        return True

    @property
    def store_id(self) -> str:
        """The metadata database the catalog came from (empty: unknown, or none yet)."""
        return self._stream.store_id

    @property
    def refused_store_id(self) -> str:
        """The other database whose snapshots were refused since the catalog was last installed, if any."""
        return self._stream.refused_store_id

    async def catch_up(self) -> bool:
        """Installs the snapshot file when it holds a newer revision than the catalog: a sibling worker of
        a ``--workers N`` data plane (they share the file) got it first from its own watch stream, and pinned
        a model's references to a view version this worker's catalog does not hold yet
        (:mod:`data_plane.feature_pins`). Whether it did; see :meth:`WatchStream.adopt_file`."""
        served = self._state.catalog

        def newer(snapshot: feature_registry_pb2.RegistrySnapshot) -> bool:
            return served is None or snapshot.revision > served.revision

        if not await self._stream.adopt_file(newer):
            return False
        revision = self._state.catalog.revision if self._state.catalog is not None else 0
        _log.info(
            "registry revision %d taken from %s, written there by a sibling worker: its feature pins name "
            "what the revision served here (%s) did not hold",
            revision, self._stream.path, "none" if served is None else served.revision,
        )  # fmt: skip
        return True

    def start(self) -> None:
        self._stream.start()

    async def stop(self) -> None:
        await self._stream.stop()

    async def _install(self, snapshot: feature_registry_pb2.RegistrySnapshot) -> bool:
        catalog = Catalog(snapshot, plan_cache_size=self._plan_cache_size)
        self._state.catalog = catalog
        if self._on_catalog is not None:
            await self._on_catalog(catalog)
        return True
