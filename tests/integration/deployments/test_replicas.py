"""The local replica manager with real ``python -m data_plane`` processes: replicas are listed only once
SERVING, scaling down drains them with SIGTERM (a clean exit, not a kill)."""

from __future__ import annotations

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from control_plane.deployments.replicas import ReplicaManager, ReplicaSettings
from tests.integration.deployments.conftest import Plane


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(answer.status)


async def test_scale_up_lists_serving_replicas_and_scale_down_drains(plane: Plane) -> None:
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60)
    )
    try:
        await manager.scale_to(2)
        addresses = manager.ready_addresses()
        assert len(addresses) == 2 and len(set(addresses)) == 2
        for address in addresses:
            assert await health(address) == health_pb2.HealthCheckResponse.SERVING
        processes = [r.process for r in manager.replicas]
        await manager.scale_to(1)
        assert manager.ready_addresses() == addresses[:1]
        assert processes[1].returncode == 0  # drained and exited on SIGTERM
    finally:
        await manager.close()
    assert processes[0].returncode == 0 and manager.count == 0


async def test_a_crashed_replica_is_unlisted_and_replaced(plane: Plane) -> None:
    changes: list[list[str]] = []
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60),
        on_change=lambda: changes.append(manager.ready_addresses()),
    )
    try:
        await manager.scale_to(2)
        survivor, doomed = manager.replicas
        assert await manager.replace_exited() == 0  # nothing exited: nothing changes
        doomed.process.kill()
        await doomed.process.wait()
        assert await manager.replace_exited() == 1
        assert manager.count == 2
        assert doomed.address not in manager.ready_addresses()
        # Unlisted first (only the survivor listed), then the replacement listed once SERVING.
        assert changes[-2:] == [[survivor.address], manager.ready_addresses()]
        for address in manager.ready_addresses():
            assert await health(address) == health_pb2.HealthCheckResponse.SERVING
        assert survivor in manager.replicas and survivor.process.returncode is None
    finally:
        await manager.close()
