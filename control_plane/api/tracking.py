"""gRPC servicer of ``aether.v1.Tracking``: a thin shell over :class:`TrackingStore`. Every call runs the
blocking core in a worker thread, so the event loop stays free while SQLite or PostgreSQL works."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio

from clients.aether.v1 import tracking_pb2 as pb
from clients.aether.v1 import tracking_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument, maps_errors
from clients.server_handlers import HandlerRegistry
from control_plane.api.context import ServiceContext
from control_plane.api.identity import actor_of, is_job_call
from control_plane.api.refusals import RefusalAudit, audits_job_refusals
from control_plane.artifacts.settings import ArtifactSettings
from control_plane.artifacts.store import ArtifactStore
from control_plane.tracking.compare import ComparePage, row_message
from control_plane.tracking.filters import Aggregate, Field
from control_plane.tracking.metrics import check_key
from control_plane.tracking.senders import BatchKey
from control_plane.tracking.store import TrackingStore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Tracking"].full_name
T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
_AGGREGATES: dict[int, Aggregate] = {
    pb.METRIC_AGGREGATE_LATEST: "latest",
    pb.METRIC_AGGREGATE_MIN: "min",
    pb.METRIC_AGGREGATE_MAX: "max",
}


async def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, **kwargs)


class TrackingServicer(pb_grpc.TrackingServicer):
    """``refusals``: where a job token's write refused for its ended run is audited (None: not)."""

    def __init__(
        self, store: TrackingStore, artifacts: ArtifactStore, refusals: RefusalAudit | None = None
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self.refusals = refusals

    @maps_errors
    async def CreateExperiment(self, request: pb.CreateExperimentRequest, context: Context) -> pb.Experiment:
        return await _run(
            self._store.create_experiment,
            request.name,
            request.description,
            dict(request.tags),
            actor=actor_of(context),
        )

    @maps_errors
    async def GetExperiment(self, request: pb.GetExperimentRequest, context: Context) -> pb.Experiment:
        return await _run(self._store.get_experiment, experiment_id=request.experiment_id, name=request.name)

    @maps_errors
    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: Context
    ) -> pb.ListExperimentsResponse:
        experiments, token = await _run(self._store.list_experiments, request.page_size, request.page_token)
        return pb.ListExperimentsResponse(experiments=experiments, next_page_token=token)

    @maps_errors
    async def CreateRun(self, request: pb.CreateRunRequest, context: Context) -> pb.Run:
        return await _run(
            self._store.create_run,
            request.experiment_id,
            request.name,
            dict(request.params),
            dict(request.tags),
            request.start_time_us,
            actor=actor_of(context),
        )

    @maps_errors
    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.Run:
        return await _run(self._store.get_run, request.run_id)

    @maps_errors
    async def UpdateRun(self, request: pb.UpdateRunRequest, context: Context) -> pb.Run:
        return await _run(
            self._store.update_run,
            request.run_id,
            request.status,
            request.end_time_us,
            actor=actor_of(context),
        )

    @maps_errors
    async def ListRuns(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:
        runs, token = await _run(
            self._store.list_runs, request.experiment_id, request.page_size, request.page_token
        )
        return pb.ListRunsResponse(runs=runs, next_page_token=token)

    @maps_errors
    @audits_job_refusals(SERVICE_NAME)
    async def LogBatch(self, request: pb.LogBatchRequest, context: Context) -> pb.LogBatchResponse:
        key = BatchKey.of(request.key) if request.HasField("key") else None
        # A job's token may not write to its run once it has ended (see control_plane.api.job_tokens).
        points = await _run(
            self._store.log_batch,
            list(request.runs),
            actor=actor_of(context),
            key=key,
            keep_ended=is_job_call(),
        )
        if points is None:  # a retry of a request already written: success, nothing written again
            return pb.LogBatchResponse(already_applied=True)
        return pb.LogBatchResponse(points_written=points)

    @maps_errors
    async def GetMetricHistory(
        self, request: pb.GetMetricHistoryRequest, context: Context
    ) -> pb.MetricSeries:
        series, token = await _run(
            self._store.metric_history, request.run_id, request.key, request.page_size, request.page_token
        )
        return pb.MetricSeries(
            key=series.key,
            values=series.values.tolist(),
            steps=series.steps.tolist(),
            timestamps_us=series.timestamps_us.tolist(),
            next_page_token=token,
        )

    @maps_errors
    @audits_job_refusals(SERVICE_NAME)
    async def LogArtifact(self, request: pb.LogArtifactRequest, context: Context) -> pb.RunArtifact:
        ref = await _run(self._artifacts.stat, request.sha256)
        return await _run(
            self._store.log_artifact,
            request.run_id,
            request.name,
            ref.sha256,
            ref.size,
            ref.uri,
            actor=actor_of(context),
            keep_ended=is_job_call(),
        )

    @maps_errors
    async def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: Context
    ) -> pb.ListArtifactsResponse:
        return pb.ListArtifactsResponse(artifacts=await _run(self._store.list_artifacts, request.run_id))

    @maps_errors
    async def CompareRuns(self, request: pb.CompareRunsRequest, context: Context) -> pb.CompareRunsResponse:
        metrics = []
        for column in request.metrics:
            check_key(column.key, "metric")
            if column.aggregate not in _AGGREGATES:
                raise InvalidArgument(f"metric {column.key!r}: unknown aggregate {column.aggregate}")
            metrics.append(Field("metric", column.key, _AGGREGATES[column.aggregate]))
        for key in request.params:
            check_key(key, "parameter")
        page = await _run(
            self._store.compare,
            request.experiment_id,
            metrics,
            list(request.params),
            request.filter,
            list(request.order_by),
            request.page_size,
            request.page_token,
        )
        return _compare_response(page)


def _compare_response(page: ComparePage) -> pb.CompareRunsResponse:
    return pb.CompareRunsResponse(
        rows=[row_message(row) for row in page.rows],
        next_page_token=page.next_page_token,
        total_count=page.total_count,
    )


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Registers ``aether.v1.Tracking`` on ``server``; returns its full service name."""
    artifacts = ArtifactStore(ArtifactSettings.from_env(context.settings.home).root)
    refusals = RefusalAudit(context.sessions, context.settings.refusal_audit_window_s)
    context.on_close.append(refusals.close)
    pb_grpc.add_TrackingServicer_to_server(
        TrackingServicer(TrackingStore(context.sessions), artifacts, refusals), server
    )  # type: ignore[no-untyped-call]
    return SERVICE_NAME
