"""Client of experiment tracking (the control plane's ``aether.v1.Tracking``).

    client = TrackingClient("127.0.0.1:50051")
    with client.start_run("churn", "lr-sweep-3", params={"lr": "0.01"}) as run:
        for step in range(100):
            run.log_metrics({"loss": loss, "accuracy": acc}, step=step)
    # the run is FINISHED (FAILED if the block raised) and its points are on the server

Metric points never cost an RPC each: they are buffered and sent in batches by one background thread
per client (see :mod:`clients.sdk.tracking_shipper` for the buffering, retry and drop policy). Leaving
a run's ``with`` block (or :meth:`Run.close`) queues its end behind its points and, by default, waits
until they are sent; at interpreter exit, open runs are ended FINISHED and everything buffered is sent
(for at most ``close_timeout_s``). Other calls are synchronous and raise :mod:`clients.errors`.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import SupportsFloat

import grpc

from clients.aether.v1 import tracking_pb2 as pb
from clients.aether.v1 import tracking_pb2_grpc as pb_grpc
from clients.errors import AlreadyExists, InvalidArgument, NotFound
from clients.sdk.arguments import checked_request, choice, str_list
from clients.sdk.auth import ChannelSecurity
from clients.sdk.pages import every_page
from clients.sdk.service_client import ServiceClient
from clients.sdk.system_metrics import SystemMetricsThread
from clients.sdk.tracking_ids import RunIds
from clients.sdk.tracking_shipper import MetricShipper
from clients.sdk.tracking_values import checked_metrics, step_of, text_map
from clients.time_bounds import LATEST_TIME_US
from clients.tracking_rules import (
    check_int64,
    check_name,
    check_run_values_bytes,
    metric_time_problem,
    run_values_bytes,
)

STATUSES = {
    "RUNNING": pb.RUN_STATUS_RUNNING,
    "FINISHED": pb.RUN_STATUS_FINISHED,
    "FAILED": pb.RUN_STATUS_FAILED,
    "KILLED": pb.RUN_STATUS_KILLED,
}

#: The aggregates compare_runs takes for a metric column, by name.
AGGREGATES = {
    "latest": pb.METRIC_AGGREGATE_LATEST,
    "min": pb.METRIC_AGGREGATE_MIN,
    "max": pb.METRIC_AGGREGATE_MAX,
}

#: Points per GetMetricHistory page: the server's maximum, at most ~2.7 MiB a message.
HISTORY_PAGE_SIZE = 100_000


def run_status(status: str) -> pb.RunStatus:
    """The proto value of a status name, in any case ("failed" is FAILED). Checked before anything
    changes: an unknown name used to raise a bare KeyError from Run.close() after the handle was marked
    closed, so the run was never ended and stayed RUNNING."""
    code = STATUSES.get(status.upper()) if isinstance(status, str) else None
    if code is None:
        raise InvalidArgument(f"unknown run status {status!r}; expected one of {', '.join(STATUSES)}")
    return code


def _now_us() -> int:
    return time.time_ns() // 1000


class Run:
    """An active run. Logging methods only buffer; see the module docstring."""

    def __init__(self, client: TrackingClient, info: pb.Run) -> None:
        self._client = client
        self.info = info
        self.run_id = info.run_id
        self._closed = False
        self._system: SystemMetricsThread | None = None
        # The parameters and tags this handle logged (or started with), and the bytes they take together
        # as the server bounds them: a changed parameter, or a call that would take the run past
        # MAX_RUN_VALUES_BYTES, is refused here, at the call, instead of making the server refuse the
        # run's batch with every point logged beside it. (Values another client logged to the same run
        # are the server's to count.)
        self._params: dict[str, str] = dict(info.params)
        self._tags: dict[str, str] = dict(info.tags)
        self._values_bytes = run_values_bytes(info.params, info.tags)
        self._values_lock = threading.Lock()
        # Where the handle's end is measured from: the run's start (this client's clock when it started the
        # run), else when the handle was made, and the monotonic time then (see _end_time_us).
        self._opened_us = info.start_time_us or _now_us()
        self._opened_monotonic_ns = time.monotonic_ns()

    def log_metrics(
        self, metrics: Mapping[str, SupportsFloat], step: int = 0, timestamp_us: int | None = None
    ) -> bool:
        """Buffers one point per metric at ``step``; False when the buffer was full and they were dropped.
        A value is a number: a Python one, a numpy scalar or 0-d array, or a 0-d torch tensor (the loss
        itself); INVALID_ARGUMENT naming the metric for anything else (an array or tensor that is not
        0-d, a complex number, NaN or an infinity), and nothing of the call is buffered."""
        self._refuse_closed()
        checked = checked_metrics(metrics, self._client._known_metric_keys)
        stamp = _now_us() if timestamp_us is None else check_int64(int(timestamp_us), "timestamp_us")
        if problem := metric_time_problem(stamp):  # the server would refuse the run's whole batch share
            raise InvalidArgument(problem)
        return self._client._shipper.add_points(self.run_id, step_of(step), stamp, checked)

    def log_metric(self, key: str, value: SupportsFloat, step: int = 0) -> bool:
        return self.log_metrics({key: value}, step)

    def log_params(self, params: Mapping[str, object]) -> None:
        """Parameters are immutable: INVALID_ARGUMENT for a different value of a key logged before (the
        same value again does nothing)."""
        self._refuse_closed()
        texts = text_map(params, "parameter")
        with self._values_lock:
            for key, value in texts.items():
                logged = self._params.get(key)
                if logged is not None and logged != value:
                    raise InvalidArgument(
                        f"parameter {key!r} of run {self.run_id} is already {logged!r} and parameters are "
                        f"immutable (got {value!r})"
                    )
            fresh = {key: value for key, value in texts.items() if key not in self._params}
            if not fresh:
                return
            size = self._values_bytes + run_values_bytes(fresh, {})
            check_run_values_bytes(
                f"run {self.run_id!r}", size, len(self._params) + len(fresh), len(self._tags)
            )
            # Queued under the lock, and remembered only once queued: the handle's values are what was sent.
            self._client._shipper.add(self.run_id, params=fresh)
            self._params.update(fresh)
            self._values_bytes = size

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """Tags may be overwritten; INVALID_ARGUMENT, nothing logged, when the run's parameters and tags
        would take more than :data:`~clients.tracking_rules.MAX_RUN_VALUES_BYTES`."""
        self._refuse_closed()
        texts = text_map(tags, "tag")
        with self._values_lock:
            replaced = {key: self._tags[key] for key in texts if key in self._tags}
            size = self._values_bytes + run_values_bytes({}, texts) - run_values_bytes({}, replaced)
            count = len(self._tags) + len(texts) - len(replaced)
            check_run_values_bytes(f"run {self.run_id!r}", size, len(self._params), count)
            self._client._shipper.add(self.run_id, tags=texts)
            self._tags.update(texts)
            self._values_bytes = size

    def _refuse_closed(self) -> None:
        # Anything queued after the run's end would reach the server behind it, be refused there in the
        # background, and be lost without a word to the caller.
        if self._closed:
            raise RuntimeError(f"run {self.run_id} is closed")

    def log_artifact(self, path: Path | str, name: str | None = None) -> pb.RunArtifact:
        """Uploads a file to the artifact store and records it under ``name`` (default: the file name)."""
        from clients.sdk.artifacts import ArtifactClient

        path = Path(path)
        self._client._read_own_writes()  # the run must exist on the server
        with self._client.sharing(ArtifactClient) as artifacts:
            ref = artifacts.upload_file(path)
        request = pb.LogArtifactRequest(run_id=self.run_id, name=name or path.name, sha256=ref.sha256)
        return self._client._call(self._client._stub.LogArtifact, request, pb.RunArtifact)

    def start_system_metrics(self, interval_s: float = 10.0) -> None:
        """Samples CPU, memory (and GPUs through NVML) every ``interval_s`` seconds as ``system/*``
        metrics until the run ends."""
        if self._system is None:
            self._system = SystemMetricsThread(
                lambda sample, step: self.log_metrics(sample, step), interval_s
            )

    def close(self, status: str = "FINISHED", *, wait: bool = True) -> None:
        """Ends the run after its buffered data with ``status`` (FINISHED, FAILED or KILLED); with
        ``wait``, returns once that was sent (or after the client's ``close_timeout_s``). Closing twice
        does nothing."""
        if self._closed:
            return
        code = run_status(status)
        # Refused here, before the handle closes: the server refuses a RunEnd that does not end the run,
        # and with it the whole batch, points logged beside it included.
        if code == pb.RUN_STATUS_RUNNING:
            raise InvalidArgument(f"a run cannot end {status!r}; close it FINISHED, FAILED or KILLED")
        if self._system is not None:
            self._system.stop()
        self._closed = True
        end = pb.RunEnd(status=code, end_time_us=self._end_time_us())
        self._client._shipper.add(self.run_id, end=end)
        self._client._forget(self)
        if wait:
            self._client._shipper.flush(self._client.close_timeout_s)

    def _end_time_us(self) -> int:
        """The clock's time now, but never before the run's start plus the time it has been open by the
        monotonic clock: a wall clock that stepped back since the start (an NTP correction) gave an end
        before the start. (The monotonic clock alone would miss the time a machine spent suspended.)"""
        open_us = (time.monotonic_ns() - self._opened_monotonic_ns) // 1000
        return min(LATEST_TIME_US, max(_now_us(), self._opened_us + open_us))

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close("FINISHED")
        else:
            killed = issubclass(exc_type, KeyboardInterrupt)
            self.close("KILLED" if killed else "FAILED")


class TrackingClient(ServiceClient):
    """Client of the control plane at ``target``: ``security``, ``actor`` and ``channel`` as for every
    :class:`ServiceClient` (the actor names the caller of every write, batches included, in the audit
    log when auth is off); unary calls time out after ``timeout`` seconds (default 30). Batch sizes, the
    buffer bound and the exit flush timeout are described in :class:`MetricShipper`."""

    DEFAULT_TIMEOUT_S = 30.0

    def __init__(
        self,
        target: str,
        *,
        security: ChannelSecurity | None = None,
        actor: str | None = None,
        timeout: float | None = None,
        batch_points: int = 50_000,
        flush_interval_s: float = 0.5,
        max_buffered_points: int = 2_000_000,
        close_timeout_s: float = 30.0,
        channel: grpc.Channel | None = None,
    ) -> None:
        super().__init__(target, security=security, actor=actor, timeout=timeout, channel=channel)
        self.close_timeout_s = close_timeout_s
        self._runs: dict[str, Run] = {}
        self._experiment_ids: dict[str, str] = {}
        self._known_metric_keys: set[str] = set()
        self._run_ids = RunIds()
        self._runs_lock = threading.Lock()
        self._shipper = MetricShipper(
            self._send_batch,
            batch_points=batch_points,
            interval_s=flush_interval_s,
            max_buffered_points=max_buffered_points,
        )
        self._closed = False
        atexit.register(self.close)

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.TrackingStub(self._channel)  # type: ignore[no-untyped-call]

    # Lifecycle -----------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until everything logged so far was sent (or dropped); False on timeout."""
        return self._shipper.flush(timeout)

    def close(self) -> None:
        """Ends open runs FINISHED, sends what is buffered and closes, in at most ``close_timeout_s`` (a
        call still in flight then is left to end, and the channel closes after it)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._shipper.forked:  # a forked child's copy: the runs, buffer and channel are the parent's
            return
        with self._runs_lock:
            open_runs = list(self._runs.values())
        for run in open_runs:
            run.close("FINISHED", wait=False)
        if self._shipper.close(self.close_timeout_s):
            super().close()
        else:  # the sender is still inside a call: closing the channel under it would make it raise
            self._shipper.when_stopped(super().close)

    @property
    def dropped_points(self) -> int:
        return self._shipper.dropped_points

    @property
    def shipped_points(self) -> int:
        return self._shipper.shipped_points

    @property
    def last_error(self) -> Exception | None:
        return self._shipper.last_error

    def _read_own_writes(self) -> None:
        """Before a read: sends what this client buffered, so it sees its own runs and points."""
        self._shipper.flush(self.close_timeout_s)

    def _forget(self, run: Run) -> None:
        with self._runs_lock:
            self._runs.pop(run.run_id, None)

    def _send_batch(self, request: pb.LogBatchRequest, timeout: float | None = None) -> pb.LogBatchResponse:
        """``timeout``: at most this (the shipper's time left when closing), else the client's timeout."""
        if timeout is not None and self.timeout is not None:
            timeout = min(timeout, self.timeout)
        return self._call(self._stub.LogBatch, request, pb.LogBatchResponse, timeout)

    # Runs ----------------------------------------------------------------------------------------------

    def start_run(
        self,
        experiment: str,
        name: str = "",
        *,
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
        system_metrics_interval_s: float | None = None,
    ) -> Run:
        """Starts a run in the experiment named ``experiment`` (created when missing) and returns its
        handle at once; use it as a context manager. The run is created on the server by the first batch
        the background thread sends (its id is chosen here), so a sweep never waits on a round trip per
        run; this client's reads flush first, so it always sees its own runs."""
        self._shipper.refuse_forked()  # before any call: this client's channel is the parent's too
        if name:
            check_name(name, "run")
        start_params, start_tags = text_map(params, "parameter"), text_map(tags, "tag")
        # Before anything is sent or queued (the experiment created): a start the server would refuse, and
        # with it every point the run logged before the shipper sent it.
        new_run = f"new run {name!r}" if name else "new run"
        size = run_values_bytes(start_params, start_tags)
        check_run_values_bytes(
            f"{new_run} of experiment {experiment!r}", size, len(start_params), len(start_tags)
        )
        experiment_id = self._experiment_ids.get(experiment)
        if experiment_id is None:  # experiments are never renamed: resolve a name once per client
            experiment_id = self.get_or_create_experiment(experiment).experiment_id
            self._experiment_ids[experiment] = experiment_id
        run_id = self._run_ids.next()
        start = pb.RunStart(
            experiment_id=experiment_id,
            name=name,
            params=start_params,
            tags=start_tags,
            start_time_us=_now_us(),
        )
        self._shipper.add(run_id, start=start)
        info = pb.Run(
            run_id=run_id,
            experiment_id=experiment_id,
            name=name or run_id[:8],
            status=pb.RUN_STATUS_RUNNING,
            start_time_us=start.start_time_us,
            params=start.params,
            tags=start.tags,
        )
        run = Run(self, info)
        with self._runs_lock:
            self._runs[run.run_id] = run
        if system_metrics_interval_s is not None:
            run.start_system_metrics(system_metrics_interval_s)
        return run

    def create_run(
        self,
        experiment_id: str,
        name: str = "",
        *,
        params: Mapping[str, object] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> pb.Run:
        request = pb.CreateRunRequest(
            experiment_id=experiment_id,
            name=name,
            params={str(k): str(v) for k, v in (params or {}).items()},
            tags={str(k): str(v) for k, v in (tags or {}).items()},
        )
        return self._call(self._stub.CreateRun, request, pb.Run)

    def get_run(self, run_id: str) -> pb.Run:
        self._read_own_writes()
        return self._call(self._stub.GetRun, pb.GetRunRequest(run_id=run_id), pb.Run)

    def update_run(self, run_id: str, status: str) -> pb.Run:
        request = pb.UpdateRunRequest(run_id=run_id, status=run_status(status))
        self._read_own_writes()
        return self._call(self._stub.UpdateRun, request, pb.Run)

    def list_runs(self, experiment_id: str, page_size: int = 0, page_token: str = "") -> pb.ListRunsResponse:
        self._read_own_writes()
        request = checked_request(
            pb.ListRunsRequest, experiment_id=experiment_id, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.ListRuns, request, pb.ListRunsResponse)

    def metric_history(self, run_id: str, key: str) -> pb.MetricSeries:
        """Every point of one metric (by step, then timestamp), fetched a page at a time: one unpaged reply
        of a long run's metric (~300,000 points) exceeded gRPC's 4 MiB receive limit."""
        self._read_own_writes()
        series = pb.MetricSeries(key=key)
        token = ""
        while True:
            request = pb.GetMetricHistoryRequest(
                run_id=run_id, key=key, page_size=HISTORY_PAGE_SIZE, page_token=token
            )
            page = self._call(self._stub.GetMetricHistory, request, pb.MetricSeries)
            series.values.extend(page.values)
            series.steps.extend(page.steps)
            series.timestamps_us.extend(page.timestamps_us)
            token = page.next_page_token
            if not token:
                return series

    def list_artifacts(self, run_id: str) -> list[pb.RunArtifact]:
        self._read_own_writes()
        request = pb.ListArtifactsRequest(run_id=run_id)
        return list(self._call(self._stub.ListArtifacts, request, pb.ListArtifactsResponse).artifacts)

    def log_batch(self, request: pb.LogBatchRequest) -> int:
        """Sends one batch now (synchronously, after what is buffered, and once: no retries, so no key is
        added); returns the points written, 0 when the request carries a key the server applied before."""
        self._read_own_writes()
        return self._send_batch(request).points_written

    # Experiments ---------------------------------------------------------------------------------------

    def create_experiment(
        self, name: str, description: str = "", tags: Mapping[str, str] | None = None
    ) -> pb.Experiment:
        request = pb.CreateExperimentRequest(name=name, description=description, tags=tags or {})
        return self._call(self._stub.CreateExperiment, request, pb.Experiment)

    def get_experiment(self, name: str = "", *, experiment_id: str = "") -> pb.Experiment:
        request = (
            pb.GetExperimentRequest(experiment_id=experiment_id)
            if experiment_id
            else pb.GetExperimentRequest(name=name)
        )
        return self._call(self._stub.GetExperiment, request, pb.Experiment)

    def get_or_create_experiment(self, name: str) -> pb.Experiment:
        try:
            return self.get_experiment(name)
        except NotFound:
            pass
        try:
            return self.create_experiment(name)
        except AlreadyExists:  # created by someone else in between
            return self.get_experiment(name)

    def list_experiments(self) -> list[pb.Experiment]:
        """Every experiment, by name (all pages: a page is bounded in bytes)."""

        def page(token: str) -> tuple[Sequence[pb.Experiment], str]:
            request = pb.ListExperimentsRequest(page_token=token)
            response = self._call(self._stub.ListExperiments, request, pb.ListExperimentsResponse)
            return response.experiments, response.next_page_token

        return every_page(page)

    # Compare -------------------------------------------------------------------------------------------

    def compare_runs(
        self,
        experiment_id: str,
        *,
        metrics: Sequence[str | tuple[str, str]] = (),
        params: Sequence[str] = (),
        filter: str = "",
        order_by: Sequence[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.CompareRunsResponse:
        """``metrics`` are keys (latest value) or (key, "latest" | "min" | "max") pairs."""
        columns = []
        for index, metric in enumerate(metrics):
            key, aggregate = (metric, "latest") if isinstance(metric, str) else metric
            word = aggregate.lower() if isinstance(aggregate, str) else aggregate
            code = choice(word, f"metrics[{index}] ({key!r}) aggregate", AGGREGATES)
            columns.append(pb.MetricColumn(key=key, aggregate=code))
        self._read_own_writes()
        request = checked_request(
            pb.CompareRunsRequest,
            experiment_id=experiment_id,
            metrics=columns,
            params=str_list(params, "params"),
            filter=filter,
            order_by=str_list(order_by, "order_by"),
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self._stub.CompareRuns, request, pb.CompareRunsResponse)
