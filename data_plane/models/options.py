"""The model manager's settings (:class:`ManagerOptions`), how it builds a version's runtime
(:func:`default_runtime`, or a :data:`RuntimeFactory` of the caller's), and its metrics hooks
(:class:`ManagerObserver`); :mod:`data_plane.models.manager` uses them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data_plane.batching import BatchObserver
from data_plane.models.spec import ModelSpec
from data_plane.models.version import ModelState
from data_plane.runtime.base import Runtime
from data_plane.runtime.onnx import OnnxOptions, OnnxRuntimeSession

_log = logging.getLogger("aether.data_plane.models")


@dataclass(frozen=True, slots=True)
class ManagerOptions:
    onnx: OnnxOptions = field(default_factory=OnnxOptions)
    max_queue_size: int = 1024  # requests waiting per model version before RESOURCE_EXHAUSTED
    # Per model version, for its answered requests' batches and, counted apart, for its shadow copies'
    # (a shadow batch running never holds the slot a served batch waits for).
    max_in_flight_batches: int = 1
    inference_threads: int = 2  # worker threads shared by every version's batches
    # Worker threads for shadow copies' batches (never the threads above, so a slow shadow cannot delay
    # the answered requests' batches).
    shadow_threads: int = 1
    # A version whose batches take less than this runs them on the event loop (a thread handoff costs
    # more); 0 = every batch in a worker thread. See data_plane.batching.
    inline_batch_below_us: float = 500.0
    # Build native TensorRT engines (when ``tensorrt`` is importable and a GPU is present) instead of
    # running through ONNX Runtime; engines are cached here per GPU name and TensorRT version.
    native_tensorrt: bool = False
    engine_cache_dir: Path | None = None
    # An unloaded version's admitted requests get this long to finish before its session is released.
    unload_grace_s: float = 10.0
    # The most bytes one answer may hold (the server's max_message_bytes; None: unlimited): requests of
    # more rows than such an answer holds are refused before they run (see InputValidator).
    max_answer_bytes: int | None = None


RuntimeFactory = Callable[[bytes, ModelSpec, ManagerOptions], Runtime]


def default_runtime(model: bytes, spec: ModelSpec, options: ManagerOptions) -> Runtime:
    if options.native_tensorrt:
        from data_plane.runtime import tensorrt_engine

        if tensorrt_engine.available():
            return tensorrt_engine.TensorRTEngine.from_onnx(
                model, spec, cache_dir=options.engine_cache_dir or Path("trt_engines")
            )
        _log.warning("native TensorRT requested but unavailable; using ONNX Runtime for %s", spec.name)
    return OnnxRuntimeSession(model, options.onnx, fetch=[t.name for t in spec.outputs])


class ManagerObserver(BatchObserver):
    """Metrics hooks of the manager; the default does nothing."""

    def for_model(self, name: str, version: int) -> BatchObserver:
        return BatchObserver()

    def track_queue_depth(self, name: str, version: int, read: Callable[[], int]) -> None:
        """``read()`` gives the version's queue depth (until its state leaves READY)."""

    def track_batch_wait_rows(self, name: str, version: int, read: Callable[[], int]) -> None:
        """``read()`` gives the rows an idle arrival at the version's batcher waits for (until its state
        leaves READY)."""

    def model_state(self, name: str, version: int, state: ModelState) -> None:
        pass

    def version_released(self, name: str, version: int) -> None:
        """The version was unloaded and its session released (after its grace), and no new load of it
        took its place: its requests are answered, and nothing runs on it any more."""
