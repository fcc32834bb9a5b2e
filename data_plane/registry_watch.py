"""Keeps the data plane's catalog current: a background task on ``FeatureRegistry.WatchRegistry``.

Every snapshot the control plane streams becomes a new immutable :class:`Catalog`, swapped in at once, and
is written to the snapshot file atomically (temp file, fsync, rename, fsync of the folder), so that a
restarted data plane serves from the last snapshot while the control plane is unreachable. When the stream
fails the task reconnects with capped exponential backoff (with jitter, so replicas do not reconnect in
lockstep); reads go on from the catalog it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio

from clients.aether.v1 import feature_registry_pb2, feature_registry_pb2_grpc
from data_plane.catalog import Catalog, RegistryState

_log = logging.getLogger("aether.data_plane.registry_watch")

OnCatalog = Callable[[Catalog], Awaitable[None]]


def load_snapshot(path: Path) -> feature_registry_pb2.RegistrySnapshot | None:
    """The persisted snapshot, or None when there is none or it cannot be parsed (logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    snapshot = feature_registry_pb2.RegistrySnapshot()
    try:
        snapshot.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError; anything unreadable is treated as absent
        _log.error("ignoring unreadable registry snapshot %s: %s", path, exc)
        return None
    return snapshot


def save_snapshot(path: Path, data: bytes) -> None:
    """Atomic replace: readers of ``path`` see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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
    ) -> None:
        self._state = state
        self._addr = control_plane_addr
        self._path = snapshot_path
        self._plan_cache_size = plan_cache_size
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._on_catalog = on_catalog
        self._persisted: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # set while a watch stream is delivering snapshots

    async def load_persisted(self) -> bool:
        """Serves from the snapshot file, if any; True when one was loaded."""
        snapshot = await asyncio.to_thread(load_snapshot, self._path)
        if snapshot is None:
            return False
        self._persisted = snapshot.SerializeToString(deterministic=True)
        await self._install(snapshot)
        _log.info("serving registry revision %d from %s", snapshot.revision, self._path)
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="registry-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _install(self, snapshot: feature_registry_pb2.RegistrySnapshot) -> None:
        catalog = Catalog(snapshot, plan_cache_size=self._plan_cache_size)
        self._state.catalog = catalog
        if self._on_catalog is not None:
            await self._on_catalog(catalog)

    async def _apply(self, snapshot: feature_registry_pb2.RegistrySnapshot) -> None:
        await self._install(snapshot)
        data = snapshot.SerializeToString(deterministic=True)
        if data != self._persisted:
            try:
                await asyncio.to_thread(save_snapshot, self._path, data)
                self._persisted = data
            except OSError as exc:  # serving goes on; only a restart during an outage would miss it
                _log.error("could not persist registry snapshot to %s: %s", self._path, exc)

    async def _run(self) -> None:
        backoff = self._backoff_initial_s
        while True:
            try:
                async with grpc.aio.insecure_channel(self._addr) as channel:
                    stub = feature_registry_pb2_grpc.FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
                    call = stub.WatchRegistry(feature_registry_pb2.WatchRegistryRequest(known_revision=0))
                    async for snapshot in call:
                        self.connected.set()
                        await self._apply(snapshot)
                        backoff = self._backoff_initial_s
                _log.warning("registry watch stream from %s ended; reconnecting", self._addr)
            except grpc.aio.AioRpcError as exc:
                _log.warning("registry watch on %s failed: %s %s", self._addr, exc.code().name, exc.details())
            except Exception:
                _log.exception("registry watch on %s failed", self._addr)
            self.connected.clear()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._backoff_max_s)
