"""The watch streams against faults a real network has: a connection that dies silently (packets dropped,
no reset) is noticed by keepalive pings and the watch reconnects; a snapshot the data plane refuses is
never persisted over the last good one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import feature_registry_pb2 as fr
from clients.aether.v1 import feature_registry_pb2_grpc, types_pb2
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from data_plane.catalog import RegistryState
from data_plane.registry_watch import RegistryWatch
from data_plane.watch_stream import WatchStream, load_message
from tests.support.ports import HeldPort


class BlackholeProxy:
    """A TCP proxy in front of the control plane whose existing connections can be made to drop every
    byte silently while new connections still work: a partition or a NAT forgetting an idle flow, which
    no socket error reports. (A real proxy; only the dropping is staged.)"""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections: list[object] = []
        self.dead: set[object] = set()
        self.pipes: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        connection = object()
        self.connections.append(connection)
        self.pipes.append(asyncio.create_task(self._pipe(client_r, server_w, connection)))
        self.pipes.append(asyncio.create_task(self._pipe(server_r, client_w, connection)))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: object) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if conn not in self.dead:
                    writer.write(data)
                    await writer.drain()

    def kill_existing(self) -> None:
        self.dead.update(self.connections)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for pipe in self.pipes:
            pipe.cancel()


def entity(name: str) -> fr.Entity:
    return fr.Entity(name=name, join_keys=[fr.JoinKey(name="id", value_type=4)])


async def test_a_silently_dead_connection_is_noticed_and_the_watch_reconnects(tmp_path: Path) -> None:
    control = await start_server(
        ControlPlaneSettings(
            home=tmp_path / "cp", db_url=f"sqlite:///{tmp_path / 'cp.db'}", listen_addr="127.0.0.1:0",
            watch_poll_interval_s=0.1,
        ),
        services=(),
    )  # fmt: skip
    proxy = BlackholeProxy(control.port)
    state = RegistryState()
    watch = RegistryWatch(
        state, await proxy.start(), tmp_path / "snap.pb", backoff_initial_s=0.05, backoff_max_s=0.5,
        keepalive_s=1.0,
    )  # fmt: skip
    watch.start()
    try:
        await asyncio.to_thread(control.registry.create_entity, entity("a"))
        await _until(lambda: state.catalog is not None and "a" in state.catalog.entities)
        proxy.kill_existing()
        await asyncio.to_thread(control.registry.create_entity, entity("b"))
        # Without keepalive the watch stayed "connected" to the dead connection and never saw "b".
        await _until(lambda: state.catalog is not None and "b" in state.catalog.entities, timeout_s=20)
    finally:
        await watch.stop()
        proxy.close()
        await control.stop()


async def test_a_refused_snapshot_is_not_persisted_over_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / "plans.pb"
    installed: list[int] = []

    async def install(snapshot: dpb.DeploymentPlanSnapshot) -> bool:
        if snapshot.revision == 2:  # e.g. a plan naming a role this data plane does not know
            return False
        installed.append(snapshot.revision)
        return True

    async def snapshots(channel: grpc.aio.Channel) -> AsyncIterator[dpb.DeploymentPlanSnapshot]:
        for revision in (1, 2):
            yield dpb.DeploymentPlanSnapshot(revision=revision)
        await asyncio.Event().wait()  # the stream stays open

    stream = WatchStream("plans", "127.0.0.1:1", path, dpb.DeploymentPlanSnapshot, snapshots, install)
    stream.start()
    try:
        await _until(lambda: stream.connected.is_set() and installed == [1])
        await asyncio.sleep(0.2)  # revision 2 has been offered and refused by now
        persisted = load_message(path, dpb.DeploymentPlanSnapshot, "plans")
        assert persisted is not None and persisted.revision == 1
    finally:
        await stream.stop()
    restarted: list[int] = []

    async def install_again(snapshot: dpb.DeploymentPlanSnapshot) -> bool:
        restarted.append(snapshot.revision)
        return True

    again = WatchStream("plans", "127.0.0.1:1", path, dpb.DeploymentPlanSnapshot, snapshots, install_again)
    assert (await again.load_persisted()) is not None and restarted == [1]


async def _until(condition: object, timeout_s: float = 10.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_registry_snapshot_over_grpcs_default_4_mib_reaches_the_data_plane(tmp_path: Path) -> None:
    """The watch channel kept gRPC's 4 MiB receive limit: a registry of a few wide views (each created by
    a request well under 4 MiB) failed RESOURCE_EXHAUSTED on every reconnect, and never reached it."""
    control = await start_server(
        ControlPlaneSettings(
            home=tmp_path / "cp", db_url=f"sqlite:///{tmp_path / 'cp.db'}", listen_addr="127.0.0.1:0",
            watch_poll_interval_s=0.1,
        ),
        services=(),
    )  # fmt: skip
    state = RegistryState()
    watch = RegistryWatch(
        state, f"127.0.0.1:{control.port}", tmp_path / "snap.pb", backoff_initial_s=0.05, backoff_max_s=0.5
    )
    try:
        await asyncio.to_thread(control.registry.create_entity, entity("driver"))
        # 2 MB of description each (a view may take at most 2 MiB): a 6 MB snapshot.
        for name in ("wide_a", "wide_b", "wide_c"):
            spec = fr.FeatureViewSpec(
                name=name, entity="driver", features=[fr.Feature(name="f", value_type=types_pb2.FLOAT32)]
            )
            metadata = fr.FeatureViewMetadata(description="x" * 2_000_000)
            await asyncio.to_thread(control.registry.create_feature_view, spec, metadata)
        watch.start()
        await _until(lambda: state.catalog is not None and "wide_c" in state.catalog.views, timeout_s=20)
        persisted = tmp_path / "snap.pb"  # saved after the catalog is taken, off the event loop
        await _until(lambda: persisted.exists() and persisted.stat().st_size > 6_000_000, timeout_s=20)
    finally:
        await watch.stop()
        await control.stop()


async def test_an_outage_is_logged_once_with_reminders_and_its_end_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A control plane down for an hour made two warning lines every ~4 s per data plane. A run of
    failed tries is now one warning, a reminder that counts them every remind_every_s, and one line
    when snapshots arrive again."""
    # Held for the whole test: nothing listens on it for a while, and no other process may take it
    # meanwhile (the control plane started later binds it beside the hold).
    held = HeldPort()
    port = held.port
    installed: list[fr.RegistrySnapshot] = []

    async def install(snapshot: fr.RegistrySnapshot) -> bool:
        installed.append(snapshot)
        return True

    def watch_registry(channel: grpc.aio.Channel) -> AsyncIterator[fr.RegistrySnapshot]:
        stub = feature_registry_pb2_grpc.FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
        return stub.WatchRegistry(fr.WatchRegistryRequest())  # type: ignore[no-any-return]

    watch = WatchStream(
        "registry", f"127.0.0.1:{port}", tmp_path / "snap.pb", fr.RegistrySnapshot, watch_registry, install,
        backoff_initial_s=0.01, backoff_max_s=0.02, remind_every_s=0.5,
    )  # fmt: skip
    caplog.set_level(logging.DEBUG, "aether.data_plane.watch_stream")
    watch.start()
    control = None
    try:
        await asyncio.sleep(1.2)  # nothing listens: dozens of failed tries
        failed = [r for r in caplog.records if "watch on" in r.getMessage() and "failed" in r.getMessage()]
        warned = [r for r in failed if r.levelno == logging.WARNING]
        assert len(failed) >= 20 and 2 <= len(warned) <= 4, [r.getMessage() for r in warned]
        assert "tries in a row have failed" not in warned[0].getMessage()
        assert all("tries in a row have failed" in r.getMessage() for r in warned[1:])
        control = await start_server(
            ControlPlaneSettings(
                home=tmp_path / "cp",
                db_url=f"sqlite:///{tmp_path / 'cp.db'}",
                listen_addr=f"127.0.0.1:{port}",
            ),
            services=(),
        )
        await asyncio.wait_for(watch.connected.wait(), 10)
        back = [r for r in caplog.records if "delivers again" in r.getMessage()]
        assert len(back) == 1 and back[0].levelno == logging.INFO and installed
    finally:
        await watch.stop()
        if control is not None:
            await control.stop()
        held.close()
