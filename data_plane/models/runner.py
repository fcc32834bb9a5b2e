"""Running one batch of validated requests through a runtime (in a worker thread).

The requests' inputs are concatenated along the batch dimension and the outputs split back by rows. If the
batch fails, each request is run on its own so that only the request that breaks the model fails; the
others get their answers (a runtime failure is data-dependent, e.g. an index out of a table's range). So
is a batch whose outputs have another number of rows than it has (a row filter that dropped one request's
row): its answer cannot be split back by rows, but each request's own run can still be answered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clients.errors import AetherError, Internal
from data_plane.models.spec import ModelSpec
from data_plane.models.validation import ValidInputs
from data_plane.runtime.base import Array, Runtime

Outputs = dict[str, Array]


def _failure(spec: ModelSpec, exc: Exception) -> Internal:
    return Internal(f"model {spec.name} v{spec.version} failed: {type(exc).__name__}: {exc}")


def run_one(runtime: Runtime, spec: ModelSpec, request: ValidInputs) -> Outputs | BaseException:
    try:
        return runtime.run(request.arrays)
    except AetherError as exc:  # a runtime's own verdict (a closed session: UNAVAILABLE), passed on as is
        return exc
    except Exception as exc:
        return _failure(spec, exc)


def run_batch(
    runtime: Runtime, spec: ModelSpec, requests: Sequence[ValidInputs]
) -> list[Outputs | BaseException]:
    if len(requests) == 1:
        return [run_one(runtime, spec, requests[0])]
    feeds = {
        tensor.name: np.concatenate([r.arrays[tensor.name] for r in requests], axis=0)
        for tensor in spec.inputs
    }
    try:
        outputs = runtime.run(feeds)
    except Exception:
        return [run_one(runtime, spec, r) for r in requests]
    total = sum(r.rows for r in requests)
    for array in outputs.values():
        if array.shape[:1] != (total,):
            # Rows cannot be matched to requests, but each request's own answer is whatever the model says
            # to it alone: one request whose data made a row filter drop a row failed the whole batch.
            return [run_one(runtime, spec, r) for r in requests]
    results: list[Outputs | BaseException] = []
    start = 0
    for request in requests:
        end = start + request.rows
        results.append({name: array[start:end] for name, array in outputs.items()})
        start = end
    return results
