"""Assembles the data-plane gRPC server: online features, health (NOT_SERVING until a registry snapshot
is loaded, then SERVING) and reflection, plus the registry watch and the Redis client."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from data_plane.api.online_features import SERVICE_NAME, OnlineFeaturesServicer, add_to_server
from data_plane.catalog import Catalog, RegistryState
from data_plane.reader import OnlineReader, ReadLimits
from data_plane.redis_client import RedisClient
from data_plane.registry_watch import RegistryWatch
from data_plane.settings import DataPlaneSettings

_log = logging.getLogger("aether.data_plane.server")


@dataclass
class DataPlaneHandle:
    port: int
    server: grpc.aio.Server
    watch: RegistryWatch
    redis: RedisClient
    registry: RegistryState
    reader: OnlineReader

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)
        await self.watch.stop()
        await self.redis.close()


def _host(listen: str) -> str:
    return listen.rsplit(":", 1)[0]


async def start_server(settings: DataPlaneSettings) -> DataPlaneHandle:
    registry = RegistryState()
    redis = RedisClient(settings.redis_url, pool_size=settings.redis_pool_size)
    reader = OnlineReader(
        registry,
        redis,
        ReadLimits(
            max_rows=settings.max_rows_per_request,
            max_features=settings.max_features_per_request,
            redis_timeout_s=settings.redis_timeout_s,
        ),
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a silently shared port
        ]
    )
    add_to_server(OnlineFeaturesServicer(reader), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def serving(catalog: Catalog) -> None:
        for service in ("", SERVICE_NAME):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    watch = RegistryWatch(
        registry,
        settings.control_plane_addr,
        settings.snapshot_path,
        plan_cache_size=settings.plan_cache_size,
        backoff_initial_s=settings.watch_backoff_initial_s,
        backoff_max_s=settings.watch_backoff_max_s,
        on_catalog=serving,
    )
    await watch.load_persisted()
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise RuntimeError(f"could not listen on {settings.listen}")
    await server.start()
    watch.start()
    _log.info("data plane listening on %s:%d", _host(settings.listen), port)
    return DataPlaneHandle(port, server, watch, redis, registry, reader)


def listen_address(settings: DataPlaneSettings, port: int) -> str:
    return f"{_host(settings.listen)}:{port}"
