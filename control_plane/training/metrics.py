"""Metric logging from inside a job: per epoch by default, per batch on request, never blocking.

Points go through the tracking SDK's background shipper (:mod:`clients.sdk.tracking`): a call only
appends to an in-memory buffer, and one thread sends batches to the control plane. The job logs into the
tracking run the control plane created for it (``AETHER_RUN_ID``, the same for every attempt), so a
resumed attempt continues the same curves; without one (a script run by hand) a run is started in the
experiment and ended when the logger closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import SupportsFloat

from clients.aether.v1 import tracking_pb2 as tpb
from clients.sdk.tracking import Run, TrackingClient

#: Prefix of per-batch metric keys, so a batch curve never mixes with the epoch curve of the same name.
BATCH_PREFIX = "batch/"


class MetricsLogger:
    """Logs to run ``run_id`` (or a new run in ``experiment`` when ``run_id`` is empty) on the control
    plane at ``target``."""

    def __init__(
        self,
        target: str,
        *,
        run_id: str = "",
        experiment: str = "",
        run_name: str = "",
        flush_interval_s: float = 0.5,
        close_timeout_s: float = 30.0,
    ) -> None:
        self._client = TrackingClient(
            target, flush_interval_s=flush_interval_s, close_timeout_s=close_timeout_s
        )
        self._owns_run = not run_id
        if run_id:
            # The run exists on the server (the control plane made it); the handle only logs into it,
            # and closing the logger never ends it — the job's final state is the control plane's call.
            self.run = Run(self._client, tpb.Run(run_id=run_id))
        else:
            self.run = self._client.start_run(experiment or "default", run_name)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def log_epoch(self, epoch: int, metrics: Mapping[str, SupportsFloat]) -> None:
        """One point per metric at step ``epoch``."""
        self.run.log_metrics(metrics, step=epoch)

    def log_batch(self, step: int, metrics: Mapping[str, SupportsFloat]) -> None:
        """One point per metric, keyed ``batch/<name>``, at the global batch ``step``."""
        self.run.log_metrics({BATCH_PREFIX + key: value for key, value in metrics.items()}, step=step)

    def log_params(self, params: Mapping[str, object]) -> None:
        self.run.log_params(params)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self.run.set_tags(tags)

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until everything logged was sent; False on timeout."""
        return self._client.flush(timeout)

    @property
    def dropped_points(self) -> int:
        return self._client.dropped_points

    @property
    def client(self) -> TrackingClient:
        return self._client

    def close(self, status: str = "FINISHED") -> None:
        """Sends what is buffered; ends the run only when this logger started it."""
        if self._owns_run:
            self.run.close(status)
        self._client.close()
