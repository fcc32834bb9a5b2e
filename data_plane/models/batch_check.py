"""Whether a model's dynamic first dimension really is a batch dimension, checked once at load.

A version batches when every input and output has a dynamic first dimension (:func:`batchable`), and the
batcher then concatenates concurrent requests along it. Not every such dimension is a batch: a
time-major recurrent model (``X: [seq, batch, features]``, how torch exports ``nn.RNN``/``nn.LSTM`` with
dynamic axes) reads concatenated requests as one longer sequence, so each caller's answer came out
computed from other callers' data, with status OK. So after warm-up two different rows are run alone
and together; where the two disagree the version serves one request at a time (and the log says why).

The rows are recorded warm-up samples when there are two or more; otherwise synthetic ones: float inputs
drawn in [0.1, 1) (two rows that differ), integer and boolean inputs zeros (a value an embedding table's
index accepts; such inputs then tell nothing apart, and the check passes). A run that fails tells nothing
either (the batch runner already answers such requests one by one). A random output (one row run twice
disagrees with itself) is judged by how far batching moves it against how far its own runs spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from data_plane.models.spec import DYNAMIC, ModelSpec
from data_plane.models.validation import batchable
from data_plane.runtime.base import Array, Runtime

#: Agreement of a row run in a batch with the same row run alone: kernels may pick other code paths
#: for other batch sizes (float sums in another order), never other answers.
RELATIVE_TOLERANCE = 1e-3
ABSOLUTE_TOLERANCE = 1e-5
#: For a random output: how many times the spread of its own runs a batched answer may stray.
NOISE_FACTOR = 10.0


def _synthetic_row(spec: ModelSpec, seed: int) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    row: dict[str, Array] = {}
    for tensor in spec.inputs:
        shape = [1 if i == 0 or d == DYNAMIC else d for i, d in enumerate(tensor.shape)]
        if np.issubdtype(tensor.np_dtype, np.floating):
            row[tensor.name] = rng.uniform(0.1, 1.0, shape).astype(tensor.np_dtype)
        else:
            row[tensor.name] = np.zeros(shape, dtype=tensor.np_dtype)
    return row


def _agree(together: Array, alone: Array) -> bool:
    if together.shape != alone.shape:
        return False
    if np.issubdtype(alone.dtype, np.floating):
        return bool(
            np.allclose(together, alone, rtol=RELATIVE_TOLERANCE, atol=ABSOLUTE_TOLERANCE, equal_nan=True)
        )
    return bool(np.array_equal(together, alone))


def _spread(a: Array, b: Array) -> float:
    """The largest difference between two answers of one output (non-floats: 0 when equal, else inf)."""
    if a.shape != b.shape:
        return math.inf
    if not np.issubdtype(a.dtype, np.floating):
        return 0.0 if np.array_equal(a, b) else math.inf
    with np.errstate(invalid="ignore"):
        difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nanmax(difference)) if difference.size else 0.0


def batching_problem(
    runtime: Runtime, spec: ModelSpec, samples: Sequence[dict[str, Array]] = ()
) -> str | None:
    """What shows that ``spec``'s first dimension is not a batch dimension, or None (none found, or the
    version does not batch at all). Each output is judged on its own: a deterministic one must agree
    within the tolerances; a random one (a row run twice disagrees with itself: noise, dropout kept at
    inference) may differ run together only as much as its own runs differ, ``NOISE_FACTOR`` times over,
    so a time-major model with a random output (or noise added to its answer) is still caught."""
    if not batchable(spec):
        return None
    first, second = (samples[0], samples[1]) if len(samples) >= 2 else (
        _synthetic_row(spec, 1), _synthetic_row(spec, 2)
    )  # fmt: skip
    try:
        alone = [runtime.run(first), runtime.run(second)]
        again = [runtime.run(first), runtime.run(second)]
        together = runtime.run({name: np.concatenate([first[name], second[name]]) for name in first})
    except Exception:
        return None
    split = min(len(a) for a in first.values())
    for tensor in spec.outputs:
        name = tensor.name
        joined = together.get(name)
        expected_rows = len(alone[0][name]) + len(alone[1][name])
        if joined is None or joined.ndim == 0 or len(joined) != expected_rows:
            return f"output {name!r} of two requests run together is not their rows one after the other"
        parts = (joined[:split], joined[split:])
        noise = max(_spread(again[i][name], alone[i][name]) for i in (0, 1))
        steady = all(_agree(again[i][name], alone[i][name]) for i in (0, 1))  # within float tolerance
        if steady or not math.isfinite(noise):  # deterministic (or not comparable): must agree
            if not all(_agree(parts[i], alone[i][name]) for i in (0, 1)):
                return f"output {name!r} of two requests run together differs from each run alone"
        elif max(_spread(parts[i], alone[i][name]) for i in (0, 1)) > NOISE_FACTOR * noise:
            return (
                f"output {name!r} of two requests run together differs from each run alone far more than"
                " its runs differ among themselves"
            )
    return None
