"""ONNX Runtime sessions with the execution providers that are present, preferred in the order
TensorRT → CUDA → CPU.

``InferenceSession.run`` releases the GIL for the whole computation, so a worker thread running it leaves
the event loop free. Sessions are configured for a latency server: sequential execution, full graph
optimisation, a configurable number of intra-op threads (default 1: on a small machine the event loop and
the gRPC threads need the other cores; batching, not threads, is what buys throughput here).
"""

from __future__ import annotations

import ctypes.util
import functools
import hashlib
import importlib
import importlib.util
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from clients.errors import Unavailable
from clients.files import private_folder
from data_plane.models.spec import DYNAMIC, TensorSpec
from data_plane.runtime.base import Array

_log = logging.getLogger("aether.data_plane.onnx")

PROVIDER_PREFERENCE: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)

_ORT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True, slots=True)
class OnnxOptions:
    intra_op_threads: int = 1
    # Restrict to these providers (still in preference order); empty = every provider present.
    allowed_providers: tuple[str, ...] = ()
    # Where the TensorRT execution provider caches the engines it builds, named per model by
    # trt_engine_cache_prefix (None = no cache).
    trt_cache_dir: Path | None = None


def choose_providers(
    available: Sequence[str], allowed: Sequence[str] = (), *, tensorrt_loadable: bool = True
) -> list[str]:
    """The providers to ask for, best first: those present (and allowed) in TensorRT → CUDA → CPU order.
    CPU is always last, so that an operator a GPU provider lacks still runs. TensorRT is left out when its
    libraries cannot load (see :func:`_tensorrt_loadable`)."""
    chosen = [
        p
        for p in PROVIDER_PREFERENCE
        if p in available
        and (not allowed or p in allowed)
        and (tensorrt_loadable or p != "TensorrtExecutionProvider")
    ]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


@functools.cache
def _preload_gpu_libraries() -> None:
    """Loads CUDA and cuDNN from the ``nvidia-*`` wheels (onnxruntime-gpu's ``cuda``/``cudnn`` extras, or
    torch's) before the first GPU session: without it the CUDA provider finds them only on
    ``LD_LIBRARY_PATH``, fails to start, and ONNX Runtime quietly falls back to the CPU. Once a process."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu ≥ 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception:  # the session will say whether CUDA started; a failed preload is only a clue
        _log.warning(
            "onnxruntime.preload_dlls failed; CUDA libraries must be on LD_LIBRARY_PATH", exc_info=True
        )


@functools.cache
def _tensorrt_loadable() -> bool:
    """Whether TensorRT's libraries can be loaded. onnxruntime-gpu lists its TensorRT provider wherever
    it is installed; without ``libnvinfer`` every session then fails on it, prints an error and is built
    a second time without it. With the ``tensorrt`` wheels, importing them loads the libraries."""
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            importlib.import_module("tensorrt")
            return True
        except Exception:  # ImportError, or OSError from a TensorRT library that does not load
            _log.warning("the tensorrt package does not import; TensorRT is not used", exc_info=True)
    return ctypes.util.find_library("nvinfer") is not None


def dropped_gpu_providers(requested: Sequence[str], started: Sequence[str]) -> list[str]:
    """The GPU providers asked for that the session did not start with (ONNX Runtime drops one that
    cannot start, e.g. no device or a missing CUDA library, and says nothing)."""
    return [p for p in requested if p in GPU_PROVIDERS and p not in started]


def gpu_providers_wanted(chosen: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """The GPU providers a session should start with: those :func:`choose_providers` chose, plus those the
    operator named (``AETHER_EXECUTION_PROVIDERS``) that it left out because this build lacks them or
    TensorRT does not load. Comparing only the chosen ones with the session's missed a named provider the
    build lacks: the model ran on the CPU and nothing was logged."""
    named = [p for p in allowed if p in GPU_PROVIDERS and p not in chosen]
    return [p for p in chosen if p in GPU_PROVIDERS] + named


def missing_named_providers(allowed: Sequence[str], available: Sequence[str]) -> list[str]:
    """The GPU providers the operator named that this onnxruntime build does not have."""
    return [p for p in allowed if p in GPU_PROVIDERS and p not in available]


def warn_missing_named_providers(allowed: Sequence[str]) -> list[str]:
    """Logs, once at the data plane's start, the GPU providers named in ``AETHER_EXECUTION_PROVIDERS``
    that this onnxruntime build lacks (every model will then run without them); returns them."""
    available = ort.get_available_providers()
    missing = missing_named_providers(allowed, available)
    if missing:
        _log.warning(
            "AETHER_EXECUTION_PROVIDERS names %s, which this onnxruntime %s build does not have (it has %s);"
            " models run without it",
            ", ".join(missing),
            ort.__version__,
            ", ".join(available),
        )
    return missing


def trt_engine_cache_prefix(model: bytes) -> str:
    """The TensorRT provider's engine-cache prefix for ``model``: its sha256 (the artifact's checksum) and
    this onnxruntime's version. Without a prefix the provider names an engine by a hash of the graph's
    input, initializer and node-output names only when the model comes as bytes (no path, no weights;
    onnxruntime issue #6455), so a retrained version of the same architecture loaded the previous
    version's engine from the shared cache folder and answered with the previous version's weights.
    The version is there because engines must be rebuilt for another onnxruntime (its documentation).
    Letters, digits and underscores only: the provider joins the prefix to the cache path as a file name."""
    version = re.sub(r"[^A-Za-z0-9]+", "_", ort.__version__)
    return f"aether_{hashlib.sha256(model).hexdigest()}_ort{version}"


def _provider_options(provider: str, options: OnnxOptions, model: bytes) -> dict[str, Any]:
    if provider == "TensorrtExecutionProvider" and options.trt_cache_dir is not None:
        private_folder(options.trt_cache_dir)  # by default under AETHER_HOME, which it may create
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(options.trt_cache_dir),
            "trt_engine_cache_prefix": trt_engine_cache_prefix(model),
        }
    return {}


def _tensor_spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ValueError(f"tensor {arg.name!r} has type {arg.type}, which the data plane does not serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in arg.shape)
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


class OnnxRuntimeSession:
    def __init__(self, model: bytes, options: OnnxOptions, *, fetch: Sequence[str] = ()) -> None:
        """``fetch``: the outputs a run returns (the spec's; all of the model's when empty). A model
        output the spec leaves out was computed and answered, though ModelMetadata did not list it,
        a request for it was refused, and its rows failed every batch the model gave it none for. An
        output left out may have a type the data plane does not serve (a string); one fetched may not."""
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads burn a core between requests; the event loop needs it more.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A failing run is reported to its caller (and logged by the servicer); no second copy on stderr.
        session_options.log_severity_level = 4
        available = ort.get_available_providers()
        providers = choose_providers(
            available,
            options.allowed_providers,
            tensorrt_loadable="TensorrtExecutionProvider" not in available or _tensorrt_loadable(),
        )
        if GPU_PROVIDERS.intersection(providers):
            _preload_gpu_libraries()
        self._session = ort.InferenceSession(
            model,
            sess_options=session_options,
            providers=[(p, _provider_options(p, options, model)) for p in providers],
        )
        self.inputs: tuple[TensorSpec, ...] = tuple(_tensor_spec(a) for a in self._session.get_inputs())
        # An output a run does not fetch is never served, so a type the data plane cannot serve there (a
        # classifier export's string label beside its scores) must not fail the load; the others are kept
        # so that a spec naming an output the model lacks is told which it has.
        fetched = frozenset(fetch)
        self.outputs: tuple[TensorSpec, ...] = tuple(
            _tensor_spec(a)
            for a in self._session.get_outputs()
            if not fetched or a.name in fetched or a.type in _ORT_TYPES
        )
        self._output_names = list(fetch) or [t.name for t in self.outputs]
        # InferenceSession.run checks its arguments in Python on every call (input names, graph-capture
        # and OrtValue-ownership rules) before it calls the binding; the data plane has checked the inputs
        # against the signature already, and on a loaded server each of those Python steps costs several
        # times what it costs in a loop (caches and branch predictors are cold between requests). So the
        # binding is called directly; a call that raises is retried through the public run, whose provider
        # fallback and error messages then apply. Without the binding (a future onnxruntime), the public
        # run is all there is.
        self._binding: Any = getattr(self._session, "_sess", None)
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        # A model served on the CPU, many times slower than planned, deserves a word in the log.
        dropped = dropped_gpu_providers(
            gpu_providers_wanted(providers, options.allowed_providers), self.providers
        )
        if dropped:
            absent = [p for p in dropped if p not in available]
            why = f" ({', '.join(absent)} not in this onnxruntime build)" if absent else ""
            _log.warning(
                "%s could not start%s; this session runs on %s", ", ".join(dropped), why, self.providers
            )

    @property
    def description(self) -> str:
        return f"onnxruntime {ort.__version__} [{', '.join(self.providers)}]"

    @property
    def waits_on_device(self) -> bool:
        return self.providers[0] in GPU_PROVIDERS

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        names = self._output_names
        try:
            results = self._binding.run(names, feeds, None)
        except Exception:  # including no binding at all: the public run raises what the caller should see
            results = self._session.run(names, dict(feeds))
        # Every output is a tensor (the signature admits nothing else), so each result is an ndarray.
        return dict(zip(names, results, strict=True))

    def close(self) -> None:
        """Drops both references to the native session, which frees its memory once no call holds it (a
        call under way keeps its own reference and finishes). ``del self._session`` kept the binding (the
        native session itself) alive, and a batch run after it (one on another thread once an unloaded
        version's grace ran out) that failed in the binding fell back to the deleted ``_session``: an
        AttributeError answered as INTERNAL. Later runs are UNAVAILABLE, at no cost to each run."""
        self._binding = self._session = _ClosedSession()


class _ClosedSession:
    """Stands in for a closed session's binding and public API alike."""

    def run(self, *args: object) -> list[Array]:
        raise Unavailable("the model version was unloaded; its session is closed")
