"""Warm-up before a version reports READY: a configurable number of requests run straight through the
runtime, so that the first real request does not pay for lazy allocations, kernel selection or (on GPU)
engine builds.

The inputs are either recorded samples (an ``.npz`` file with one array per input, see
:func:`recorded_inputs` for the layouts) or synthetic ones built from the signature: zeros (a value every
model accepts, unlike random values, which can fall outside an embedding table's range). Warm-up alternates
a single row with a full batch so that both sizes the batcher produces are prepared.
"""

from __future__ import annotations

import io
import math
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from clients.errors import FailedPrecondition, InvalidArgument
from clients.uris import redact_uri
from data_plane.models.artifacts import read_artifact
from data_plane.models.spec import DYNAMIC, ModelSpec, TensorSpec, warmup_problem
from data_plane.models.validation import batchable
from data_plane.runtime.base import Array, Runtime


def synthetic_inputs(spec: ModelSpec, rows: int) -> dict[str, Array]:
    batch = batchable(spec)
    arrays: dict[str, Array] = {}
    for tensor in spec.inputs:
        shape = [
            rows if (batch and i == 0) else (1 if d == DYNAMIC else d) for i, d in enumerate(tensor.shape)
        ]
        arrays[tensor.name] = np.zeros(shape, dtype=tensor.np_dtype)
    return arrays


def warms_every_size(spec: ModelSpec) -> bool:
    """Whether the warm-up's requests are as large per row as any request can be: every input dimension
    but the batch one is fixed. A dynamic one is warmed at 1 (synthetic inputs) or at whatever was recorded,
    neither of which bounds what a request may bring ([1, 2000000] to a model timed on [32, 1]), so the
    warm-up's time says nothing about how long such a model's batches may run."""
    skip = 1 if batchable(spec) else 0  # a model without a batch dimension: every dimension counts
    return all(d != DYNAMIC for t in spec.inputs for d in t.shape[skip:])


def recorded_inputs(spec: ModelSpec, uri: str) -> list[dict[str, Array]]:
    """The recorded requests in the ``.npz`` at ``uri``: a path or any URI a model artifact may have
    (``file:``, ``s3://``…), read as the artifact is (a config or plan names both alike).

    Layouts, per input: for a model with a batch dimension (every input and output's first dimension is
    dynamic), rows along the first dimension, each row one request (``[N, 4]`` for ``x: float32[-1, 4]``).
    For a model without one, whose inputs cannot be cut into rows (``x: float32[2, 4]``), either one
    request shaped as the input (``[2, 4]``) or requests stacked along a new first dimension (``[N, 2,
    4]``, each ``a[i]`` one request). The requests are as many as the input with the fewest has."""
    data = read_artifact(uri, "warm-up samples")
    shown = redact_uri(uri)
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle what a file holds
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (.npy), not one per input")
        with loaded as samples:
            held = [t for t in spec.inputs if t.name in samples.files]
            columns = {t.name: np.asarray(samples[t.name], dtype=t.np_dtype) for t in held}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise FailedPrecondition(
            f"warm-up samples {shown} are not an .npz file of plain arrays: {type(exc).__name__}: {exc}"
        ) from None
    missing = [t.name for t in spec.inputs if t.name not in columns]
    if missing:
        raise FailedPrecondition(f"warm-up samples {shown} have no array for input(s) {missing}")
    # A batching model takes rows; a model without a batch dimension may take a scalar input whole.
    scalars = [name for name, a in columns.items() if a.ndim == 0] if batchable(spec) else []
    if scalars:
        raise FailedPrecondition(
            f"warm-up samples {shown}: input(s) {scalars} hold a single value, not one row per element of "
            "their first dimension"
        )
    split = _rows_of if batchable(spec) else _requests_of
    per_input = {t.name: split(t, columns[t.name], shown) for t in spec.inputs}
    count = min(len(requests) for requests in per_input.values())
    if count == 0:  # recorded samples were asked for: not silently replaced by synthetic ones
        raise FailedPrecondition(f"warm-up samples {shown} hold no rows")
    return [{name: requests[i] for name, requests in per_input.items()} for i in range(count)]


def _fits(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(shape) == len(declared) and all(
        d in (DYNAMIC, s) for s, d in zip(shape, declared, strict=True)
    )


def _dims(shape: Sequence[int]) -> str:
    return "[" + ", ".join("N" if d == DYNAMIC else str(d) for d in shape) + "]"


def _rows_of(tensor: TensorSpec, array: Array, shown: str) -> list[Array]:
    """A batching model's samples: one request per row (a 1-row slice, shaped as the model takes it)."""
    if not _fits((DYNAMIC, *array.shape[1:]), tensor.shape):
        raise FailedPrecondition(
            f"warm-up samples {shown}: input {tensor.name!r} has shape {list(array.shape)}; expected rows "
            f"of {tensor.describe()}, an array of shape {_dims(tensor.shape)}"
        )
    return [array[i : i + 1] for i in range(len(array))]


def _requests_of(tensor: TensorSpec, array: Array, shown: str) -> list[Array]:
    """A model without a batch dimension takes whole requests only: the array is one request, or a stack
    of them along its first dimension. Slicing rows off (as for a batching model) fed ``[1, 4]`` to a
    model of ``[2, 4]``, so no recorded sample could ever warm such a model up."""
    if _fits(array.shape, tensor.shape):
        return [array]
    if _fits(array.shape[1:], tensor.shape):
        return list(array)
    raise FailedPrecondition(
        f"warm-up samples {shown}: input {tensor.name!r} has shape {list(array.shape)}; the model has no "
        f"batch dimension ({tensor.describe()}), so expected one request of shape {_dims(tensor.shape)} "
        f"or requests stacked as {_dims((DYNAMIC, *tensor.shape))}"
    )


def _recorded_batch(samples: Sequence[dict[str, Array]], rows: int) -> dict[str, Array]:
    """``rows`` recorded rows (cycling through them) as one request."""
    picked = [samples[i % len(samples)] for i in range(rows)]
    return {name: np.concatenate([sample[name] for sample in picked]) for name in samples[0]}


def warmup_requests(spec: ModelSpec, samples: Sequence[dict[str, Array]] = ()) -> Iterator[dict[str, Array]]:
    """The warm-up's requests, made one at a time as they are run: built all at once, their memory grew
    with ``warmup_requests`` (2**31 - 1 grew the data plane by ~200 MiB/s until it was killed). The few
    distinct inputs are built once and handed out again: a run never changes its inputs."""
    count = spec.warmup_requests
    if samples and not batchable(spec):
        return (samples[i % len(samples)] for i in range(count))
    if samples:  # one recorded row, then a full batch of them, ... as with synthetic inputs
        batch = _recorded_batch(samples, spec.max_batch_size)
        return (batch if i % 2 else samples[i // 2 % len(samples)] for i in range(count))
    sizes = [1, spec.max_batch_size] if batchable(spec) else [1]
    inputs = [synthetic_inputs(spec, rows) for rows in sizes]
    return (inputs[i % len(inputs)] for i in range(count))


@dataclass(frozen=True, slots=True)
class WarmUpReport:
    requests: int
    # The fastest run of the largest warm-up batch (rows), from the second half of the warm-up (after
    # lazy initialisation); the fastest, because the warm-up may share the GIL with a serving loop. None
    # when the warm-up ran fewer than two requests of that size.
    largest_rows: int = 0
    largest_seconds: float | None = None


def _rows(request: dict[str, Array]) -> int:
    return min((len(a) if a.ndim else 1 for a in request.values()), default=1)


def warm_up(runtime: Runtime, spec: ModelSpec, samples: Sequence[dict[str, Array]] = ()) -> WarmUpReport:
    """Runs the warm-up requests (in the calling thread) and times them; any failure fails the load. The
    timing keeps only what the report needs, so that its memory does not grow with the requests either."""
    if problem := warmup_problem(spec):
        raise InvalidArgument(problem)  # the manager's failure names the version
    count = spec.warmup_requests
    settled_from = count // 2  # the second half: lazy initialisation is over by then
    largest, of_largest, fastest = 0, 0, math.inf
    for index, request in enumerate(warmup_requests(spec, samples)):
        started = time.perf_counter()
        try:
            runtime.run(request)
        except Exception as exc:
            raise FailedPrecondition(
                f"model {spec.name} v{spec.version} failed its warm-up: {type(exc).__name__}: {exc}"
            ) from exc
        seconds = time.perf_counter() - started
        if index < settled_from:
            continue
        rows = _rows(request)
        if rows > largest:
            largest, of_largest, fastest = rows, 0, math.inf
        if rows == largest:
            of_largest += 1
            fastest = min(fastest, seconds)
    if count == 0:
        return WarmUpReport(0)
    if of_largest < 2:
        return WarmUpReport(count, largest)
    return WarmUpReport(count, largest, fastest)
