"""Assembles the data-plane gRPC server: online features, the Open Inference Protocol v2
(``inference.GRPCInferenceService``), ``aether.v1.Inference`` (Predict), health and reflection; plus the
registry watch, the deployment watch, the model manager, the prediction log, the Redis clients and the
Prometheus endpoint.

Health: OnlineFeatures is NOT_SERVING until a registry snapshot is loaded. The overall status ("", what
the replica manager and load balancers watch) also waits for the deployment plans to be known: plans
installed (the persisted ones, or the watch's first snapshot) with the loads of the versions they use
settled (READY or FAILED), so a listed server never answers NOT_FOUND for a deployment that exists. It
does not wait when no plans are coming soon: the plans watch failed (no control plane reachable: the
static model config and the snapshots are served), its snapshot was refused, or a control plane that
accepted it sent nothing for :data:`PLANS_WAIT_S`. The inference services are NOT_SERVING until the models
of the static config and of the persisted deployment plans have settled (READY or FAILED), which
``start_server`` waits for before it returns; later loads (a new plan's canary) leave them SERVING. The
Open Inference Protocol's ServerReady says the same and, after the start, whether some version can serve:
a version loading or warming up makes only its own ModelReady false, and a server whose versions all
FAILED is not ready (one holding none is).

Shutdown (:meth:`DataPlaneHandle.drain`, what SIGTERM runs): every service reports NOT_SERVING at once,
so that load balancers and the replica manager stop sending; for ``delay_s`` requests are still served
(those already on their way); then Predict and ModelInfer refuse new requests with UNAVAILABLE while the
admitted ones finish; once no request has arrived for a moment (the refused callers went elsewhere) the
server stops accepting calls and gives the remaining ones (any API) the rest of the grace period, and only
then are the prediction log flushed and the models unloaded.

Security by configuration (:class:`DataPlaneSettings`): ``tls`` makes the server listen with TLS only;
``auth`` (the control plane's ``AETHER_ADMIN_TOKEN`` / ``AETHER_READONLY_TOKEN``) makes every call need
one of those tokens, except health and reflection (:data:`OPEN_SERVICES`); ``channel_security`` is how both
watches reach the control plane (bearer token, TLS CA). The Prometheus endpoint is plain HTTP and
unaffected by either: bind it to an address only the scraper reaches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clients.errors import FailedPrecondition
from clients.server_auth import HEALTH_SERVICE, REFLECTION_SERVICES, TokenInterceptor
from clients.server_handlers import GenericHandlersOnly, enable_reflection
from clients.tls import add_port
from data_plane.admission import Admission
from data_plane.api import inference_v2, predict
from data_plane.api.online_features import SERVICE_NAME, OnlineFeaturesServicer, add_to_server
from data_plane.catalog import Catalog, RegistryState
from data_plane.deployment_watch import DeploymentWatch, start_deployment_watch
from data_plane.feature_pins import SharedPins
from data_plane.feature_vector import FeatureAssembler
from data_plane.loop_heartbeat import LoopHeartbeat
from data_plane.metrics import UNRESOLVED, MetricsServer, ServingMetrics, start_metrics_server
from data_plane.models.manager import ModelManager
from data_plane.models.options import ManagerOptions
from data_plane.models.spec import ModelSpec, load_model_config
from data_plane.near_cache import NearCache
from data_plane.prediction_log import PredictionLog
from data_plane.predictor import Predictor
from data_plane.reader import OnlineReader, ReadLimits
from data_plane.redis_client import RedisClient
from data_plane.registry_watch import RegistryWatch
from data_plane.runtime.onnx import OnnxOptions, warn_missing_named_providers
from data_plane.settings import DataPlaneSettings

_log = logging.getLogger("aether.data_plane.server")

INFERENCE_SERVICES = (inference_v2.SERVICE_NAME, predict.SERVICE_NAME)
#: Once drained, the transport stops only after no request arrived for this long (callers refused
#: with UNAVAILABLE have moved on), or after the longer wait at most.
DRAIN_QUIET_S = 0.1
DRAIN_QUIET_MAX_S = 2.0
#: How long the overall health waits for the first deployment plans from a control plane that accepted
#: the plans watch but has sent none (one that refused it is not waited for: see ``_report_serving``).
PLANS_WAIT_S = 5.0
#: Served without a token when auth is on: load balancers, the container health check and the replica
#: manager probe readiness, and ghz finds the methods, without a secret. Every other API serves data.
OPEN_SERVICES = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})


#: The calls ``aether_inference_requests_total`` counts, by method name, with the API label each has.
_COUNTED_METHODS = {"ModelInfer": inference_v2.API, "Predict": predict.API, "PredictBatch": predict.API}


def _refusal_counter(metrics: ServingMetrics) -> Callable[[str, grpc.StatusCode], None]:
    """Counts an inference call the token check refused, as every other call is counted with the status
    its caller saw (a client that lost its token showed nowhere): under no model, since the request is
    not read; a PredictBatch counts once, for the same reason."""

    def count(method: str, code: grpc.StatusCode) -> None:
        api = _COUNTED_METHODS.get(method.rpartition("/")[2])
        if api is not None:
            metrics.request(api, UNRESOLVED, UNRESOLVED, code.name, None)

    return count


@dataclass
class DataPlaneHandle:
    port: int
    server: grpc.aio.Server
    watch: RegistryWatch
    redis: RedisClient
    registry: RegistryState
    reader: OnlineReader
    manager: ModelManager
    metrics: ServingMetrics
    deployments: DeploymentWatch
    prediction_log: PredictionLog
    log_redis: RedisClient
    metrics_server: MetricsServer | None = None
    # A --workers worker's own port (see start_server); None otherwise.
    worker_port: int | None = None
    health: health.aio.HealthServicer | None = None
    near_cache: NearCache | None = None
    # The drain gates of Predict and ModelInfer.
    admissions: tuple[Admission, ...] = ()
    # Set when the drain begins: ServerReady answers false from then on, as the health services do.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the overall health first turns SERVING (the catalog is in and the plans are known).
    serving: asyncio.Event = field(default_factory=asyncio.Event)
    # The task that turns it SERVING (_report_serving).
    readiness: asyncio.Task[None] | None = None
    # Stamped by the event loop; its age is on /metrics (data_plane.loop_heartbeat).
    heartbeat: LoopHeartbeat | None = None

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_server is None else self.metrics_server.port

    async def drain(self, delay_s: float, grace_s: float) -> None:
        """Stops without losing a request: NOT_SERVING, ``delay_s`` more of serving, then in-flight
        requests get up to ``grace_s`` to finish before everything stops."""
        self.stopping.set()
        if self.health is not None:
            await self.health.enter_graceful_shutdown()  # every service NOT_SERVING, and it stays so
        await asyncio.sleep(delay_s)
        deadline = time.monotonic() + grace_s
        if self.admissions:
            # Every gate closes at once; each waits for its own admitted requests.
            held = sum(gate.close().in_flight for gate in self.admissions)
            _log.info("draining: %d admitted requests to finish, new ones refused", held)
            finished = await asyncio.gather(*(gate.drain(grace_s) for gate in self.admissions))
            if not all(finished):
                running = sum(gate.in_flight for gate in self.admissions)
                _log.warning("%d requests still running after %.1f s", running, grace_s)
            left = max(deadline - time.monotonic(), 0.0)
            await asyncio.gather(
                *(gate.quiet(DRAIN_QUIET_S, min(left, DRAIN_QUIET_MAX_S)) for gate in self.admissions)
            )
        await self.stop(max(deadline - time.monotonic(), 0.0))

    async def stop(self, grace: float | None = None) -> None:
        if self.readiness is not None:
            self.readiness.cancel()
            await asyncio.gather(self.readiness, return_exceptions=True)
        await self.server.stop(grace)
        await self.watch.stop()
        await self.deployments.stop()
        await self.prediction_log.stop()
        await self.manager.close()
        await self.redis.close()
        await self.log_redis.close()
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
        if self.heartbeat is not None:
            self.heartbeat.stop()


def _host(listen: str) -> str:
    return listen.rsplit(":", 1)[0]


def _manager(settings: DataPlaneSettings, metrics: ServingMetrics) -> ModelManager:
    warn_missing_named_providers(settings.execution_providers)
    options = ManagerOptions(
        onnx=OnnxOptions(
            intra_op_threads=settings.intra_op_threads,
            allowed_providers=settings.execution_providers,
            trt_cache_dir=settings.engine_cache_dir,
        ),
        max_queue_size=settings.max_queue_size,
        inference_threads=settings.inference_threads,
        shadow_threads=settings.shadow_threads,
        inline_batch_below_us=settings.inline_batch_below_us,
        native_tensorrt=settings.native_tensorrt,
        engine_cache_dir=settings.engine_cache_dir,
        unload_grace_s=settings.unload_grace_s,
        max_answer_bytes=settings.max_message_bytes,
    )
    return ModelManager(options, observer=metrics)


async def _load_static_models(settings: DataPlaneSettings, manager: ModelManager) -> Sequence[ModelSpec]:
    """Loads the static model config's versions and returns their specs (a failed load is logged; the
    deployment watch retries it, ``DeploymentWatch.keep_loaded``)."""
    if settings.model_config is None:
        return ()
    specs = load_model_config(settings.model_config)
    results = await asyncio.gather(*(manager.ensure_loaded(s) for s in specs), return_exceptions=True)
    for spec, result in zip(specs, results, strict=True):
        if isinstance(result, BaseException):
            _log.error(
                "model %s v%d from %s did not load: %s",
                spec.name,
                spec.version,
                settings.model_config,
                result,
            )
    return specs


async def start_server(settings: DataPlaneSettings) -> DataPlaneHandle:
    registry = RegistryState()
    near_cache = (
        NearCache(max(1, int(settings.near_cache_mb * 1024 * 1024)), settings.near_cache_max_age_s)
        if settings.near_cache_mb > 0
        else None
    )
    redis = RedisClient(
        settings.redis_url,
        pool_size=settings.redis_pool_size,
        tracking=near_cache,
        hung_after_s=settings.redis_timeout_s,
    )
    reader = OnlineReader(
        registry,
        redis,
        ReadLimits(
            max_rows=settings.max_rows_per_request,
            max_features=settings.max_features_per_request,
            max_join_key_bytes=settings.max_join_key_bytes,
            redis_timeout_s=settings.redis_timeout_s,
        ),
        near_cache,
    )
    metrics = ServingMetrics(released_series_s=settings.metrics_released_series_s)
    heartbeat = LoopHeartbeat()  # its age on /metrics tells a hung loop from an idle one
    heartbeat.start()
    metrics.track_loop_heartbeat(heartbeat.age_s)
    if near_cache is not None:
        metrics.track_near_cache(near_cache.stats)
    manager = _manager(settings, metrics)
    log_redis = RedisClient(settings.redis_url, pool_size=1)  # its own connection: never ahead of reads
    prediction_log = PredictionLog(
        log_redis,
        settings.prediction_log_stream,
        sample_rate=settings.prediction_log_sample_rate,
        maxlen=settings.prediction_log_maxlen,
        linger_s=settings.prediction_log_linger_ms / 1000.0,
        on_drop=metrics.prediction_log_dropped,
    )
    # Every API here only reads, so any configured token will do. Without tokens no interceptor at all:
    # grpc.aio runs an interceptor on every call, which the latency path should not pay for nothing.
    auth = (
        TokenInterceptor(settings.auth.grants(), OPEN_SERVICES, _refusal_counter(metrics))
        if settings.auth.enabled
        else None
    )
    server = grpc.aio.server(
        interceptors=None if auth is None else [auth],
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            # Without --workers a port in use is an error, not a silently shared port.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        ],
    )
    add_to_server(OnlineFeaturesServicer(reader, max_send_bytes=settings.max_message_bytes), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, GenericHandlersOnly(server))
    for service in ("", SERVICE_NAME, *INFERENCE_SERVICES):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    catalog_in = asyncio.Event()

    async def serving(catalog: Catalog) -> None:
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        catalog_in.set()

    started, stopping = asyncio.Event(), asyncio.Event()
    inference_servicer = inference_v2.InferenceV2Servicer(
        manager,
        metrics,
        # Ready once started, until a drain begins (a KServe client or probe polling ServerReady must
        # stop sending then, as one watching the health service does).
        lambda: started.is_set() and not stopping.is_set(),
        max_send_bytes=settings.max_message_bytes,
    )
    inference_v2.add_to_server(inference_servicer, server)
    watch = RegistryWatch(
        registry,
        settings.control_plane_addr,
        settings.snapshot_path,
        plan_cache_size=settings.plan_cache_size,
        backoff_initial_s=settings.watch_backoff_initial_s,
        backoff_max_s=settings.watch_backoff_max_s,
        on_catalog=serving,
        security=settings.channel_security,
        accept_store_id=settings.accept_store_id,
        on_refused=lambda reason: metrics.watch_refused("registry", reason),
    )
    await watch.load_persisted()
    static = await _load_static_models(settings, manager)
    deployments = await start_deployment_watch(
        settings, manager, lambda reason: metrics.watch_refused("deployment_plans", reason)
    )
    deployments.keep_loaded(static)
    pins = None if settings.feature_pins_fd is None else SharedPins(settings.feature_pins_fd)
    # Pins and the snapshot file are shared with the --workers siblings (data_plane.feature_pins): a sibling
    # ahead of this worker's watch may have pinned a view version only its newer snapshot holds.
    assembler = FeatureAssembler(reader, pins, watch.catch_up if pins is not None else None)
    predictor = Predictor(
        manager, assembler, deployments.current, prediction_log, deployments.static_models()
    )
    predict_servicer = predict.PredictServicer(predictor, metrics, max_send_bytes=settings.max_message_bytes)
    predict.add_to_server(predict_servicer, server)
    enable_reflection(
        GenericHandlersOnly(server),
        (SERVICE_NAME, *INFERENCE_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
    )
    worker_port: int | None = None
    try:
        port = add_port(server, settings.listen, settings.tls)
        # A worker of --workers N also listens on a port of its own (same services, TLS and tokens): a
        # probe through the shared port reaches whichever worker the kernel picks for its connection, so
        # a hung worker could answer no probe and still never miss several in a row. The fleet's replica
        # manager probes each worker's own port (control_plane.deployments.replicas).
        worker_port = (
            add_port(server, f"{_host(settings.listen)}:0", settings.tls) if settings.reuse_port else None
        )
    except RuntimeError:  # gRPC says only "Failed to bind"; its log line has the reason
        port = 0
    if port == 0 or worker_port == 0:
        raise FailedPrecondition(
            f"cannot listen on {settings.listen}: the address is in use or cannot be bound"
        )
    metrics_server = None
    if settings.metrics_listen:
        metrics_server = start_metrics_server(metrics, settings.metrics_listen)
    await server.start()
    watch.start()
    prediction_log.start()
    started.set()
    for service in INFERENCE_SERVICES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    now_serving = asyncio.Event()
    readiness = asyncio.create_task(
        _report_serving(health_servicer, catalog_in, deployments, now_serving, settings.control_plane_addr)
    )
    _log.info("data plane listening on %s:%d", _host(settings.listen), port)
    return DataPlaneHandle(
        port=port,
        server=server,
        watch=watch,
        redis=redis,
        registry=registry,
        reader=reader,
        manager=manager,
        metrics=metrics,
        deployments=deployments,
        prediction_log=prediction_log,
        log_redis=log_redis,
        metrics_server=metrics_server,
        worker_port=worker_port,
        health=health_servicer,
        near_cache=near_cache,
        admissions=(predict_servicer.admission, inference_servicer.admission),
        stopping=stopping,
        serving=now_serving,
        readiness=readiness,
        heartbeat=heartbeat,
    )


async def _report_serving(
    health_servicer: health.aio.HealthServicer,
    catalog_in: asyncio.Event,
    deployments: DeploymentWatch,
    now_serving: asyncio.Event,
    control_plane_addr: str,
) -> None:
    """Turns the overall health SERVING once the registry's catalog is in and the deployment plans are
    known (see the module's docstring): a replica manager or load balancer lists this server then, so
    SERVING earlier answered NOT_FOUND for every deployment while its first plans were still loading."""
    if not await deployments.wait_for_plans(PLANS_WAIT_S):
        _log.warning(
            "no deployment plans from %s yet: serving the static models and the persisted plans, if any",
            control_plane_addr,
        )
    await catalog_in.wait()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    now_serving.set()


def listen_address(settings: DataPlaneSettings, port: int) -> str:
    return f"{_host(settings.listen)}:{port}"
