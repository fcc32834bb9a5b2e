"""How a streaming view's aggregations map onto the window kernel, and the kernel's outputs back onto
the view's features.

Bucket granularity: the greatest common divisor of the view's window lengths (10 min, 1 h and 24 h give
10-minute buckets, 144 of them per entity), so every window is a whole number of buckets. A view whose
ring would exceed ``MAX_BUCKETS`` is refused; give it windows with a larger common divisor. See
``kernels/windows.py`` for the resulting window semantics (hopping windows aligned to buckets)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import InvalidArgument
from clients.value_types import numpy_dtype_name
from control_plane.features.validation import output_type_problem
from control_plane.ingestion.validation import value_columns
from kernels.windows import FUNCTIONS, WindowState, exact_sum_known

MAX_BUCKETS = 4096


@dataclass(frozen=True)
class AggregationPlan:
    columns: tuple[str, ...]  # event fields, in the kernel's column order
    outputs: tuple[str, ...]  # feature names, in the kernel's aggregation order
    output_types: tuple[str, ...]  # numpy dtype names of those features
    functions: tuple[str, ...]  # the aggregation function of each output
    agg_col: tuple[int, ...]
    agg_func: tuple[int, ...]
    agg_buckets: tuple[int, ...]
    bucket_us: int
    n_buckets: int
    # Columns summed into an integer feature: the kernel keeps their sums exactly (kernels/windows.py).
    exact_columns: tuple[int, ...] = ()

    @property
    def max_window_us(self) -> int:
        return self.bucket_us * self.n_buckets

    def new_state(self, capacity: int = 1024) -> WindowState:
        return WindowState(
            self.bucket_us, self.n_buckets, len(self.columns), self.agg_col, self.agg_func, self.agg_buckets,
            capacity, self.exact_columns,
        )  # fmt: skip

    def exact_sum(self, j: int) -> bool:
        """Whether output ``j`` is a sum stored as an integer (read from the kernel's exact sums)."""
        return self.functions[j] == "sum" and self.output_types[j] in _INTEGER_BOUNDS


def plan_for(view: pb.FeatureView) -> AggregationPlan:
    spec = view.spec
    if not spec.aggregations:
        raise InvalidArgument(f"view {spec.name!r} has no aggregations; materialize it from a batch source")
    produced = {aggregation.output for aggregation in spec.aggregations}
    plain = [f.name for f in spec.features if f.name not in produced]
    if plain:
        raise InvalidArgument(
            f"view {spec.name!r}: features {', '.join(plain)} are produced by no aggregation; every feature"
            " of a streaming view must be"
        )
    columns = tuple(column.name for column in value_columns(view))
    bucket_s = reduce(math.gcd, (a.window_seconds for a in spec.aggregations))
    n_buckets = max(a.window_seconds for a in spec.aggregations) // bucket_s
    if n_buckets > MAX_BUCKETS:
        raise InvalidArgument(
            f"view {spec.name!r}: windows need {n_buckets} buckets of {bucket_s}s (more than {MAX_BUCKETS});"
            " choose window lengths with a larger common divisor"
        )
    for aggregation in spec.aggregations:  # a view registered before the registry checked this
        problem = output_type_problem(spec, aggregation)
        if problem is not None:
            raise InvalidArgument(f"view {spec.name!r}: {problem}")
    by_output = {a.output: a for a in spec.aggregations}
    ordered = [by_output[f.name] for f in spec.features]
    integer = {f.name for f in spec.features if numpy_dtype_name(f.value_type) in _INTEGER_BOUNDS}
    exact = {columns.index(a.column) for a in ordered if a.function == "sum" and a.output in integer}
    return AggregationPlan(
        columns=columns,
        outputs=tuple(f.name for f in spec.features),
        output_types=tuple(numpy_dtype_name(f.value_type) for f in spec.features),
        functions=tuple(a.function for a in ordered),
        agg_col=tuple(columns.index(a.column) for a in ordered),
        agg_func=tuple(FUNCTIONS.index(a.function) for a in ordered),
        agg_buckets=tuple(a.window_seconds // bucket_s for a in ordered),
        bucket_us=bucket_s * 1_000_000,
        n_buckets=n_buckets,
        exact_columns=tuple(sorted(exact)),
    )


# The integers a window result may be stored as. An integer sum is the kernel's exact int64 sum, so the
# whole int64 range: the float64 result was checked against +-2**53 before, inclusive, and 2**53 + 1 had
# already rounded to 2**53 (accepted, wrong); an exclusive bound would still let a sum whose partial sums
# passed 2**53 and came back (+5e15+1, +5e15, -5e15) through rounded. A count is at most the number of
# events, exact in float64.
_INTEGER_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# The finite floats: a float32 output holds less than the float64 events validation accepts (1e39 was cast
# to inf, online and offline), and a float64 sum of finite values can still overflow to inf, and with it a
# mean (the kernel divides the window's float64 sum by its count).
_FLOAT_BOUNDS = {
    dtype: (-float(np.finfo(dtype).max), float(np.finfo(dtype).max)) for dtype in ("float32", "float64")
}


def range_checked(plan: AggregationPlan) -> list[tuple[int, float, float]]:
    """(output index, lowest, highest) of the outputs whose result can leave its type's range: an integer
    sum or count (an integer min, max or last is one of the values, which validation has checked to be a
    whole number that fits), every float32 output and a float64 sum or mean (validation checks events as
    finite float64 only). A mean whose sum overflows is quarantined rather than computed some other way:
    the kernel keeps one float64 sum per bucket, shared with ``sum``, and avoiding its overflow would cost
    every event a rescaling (or exactness for tiny values); such a window is then refused as its ``sum``
    would be."""
    checked = []
    for j, (dtype, function) in enumerate(zip(plan.output_types, plan.functions, strict=True)):
        if dtype == "float32" or (dtype == "float64" and function in ("sum", "mean")):  # else stay finite
            checked.append((j, *_FLOAT_BOUNDS[dtype]))
        elif dtype in _INTEGER_BOUNDS and function in ("sum", "count"):
            checked.append((j, float(_INTEGER_BOUNDS[dtype][0]), float(_INTEGER_BOUNDS[dtype][1])))
    return checked


def out_of_range(
    plan: AggregationPlan, out: npt.NDArray[np.float64], exact: npt.NDArray[np.int64]
) -> tuple[int, str] | None:
    """The first row of kernel outputs (``exact``: the kernel's exact sums, ``apply_exact``) holding a
    result its feature cannot store, and why."""
    rows: list[tuple[int, str]] = []
    for j, lowest, highest in range_checked(plan):
        if plan.exact_sum(j):
            known = exact_sum_known(out[:, j], exact[:, j])  # else the true sum is past int64
            low, high = _INTEGER_BOUNDS[plan.output_types[j]]
            bad = np.flatnonzero(~known | (exact[:, j] < low) | (exact[:, j] > high))
            if bad.size:
                row = int(bad[0])
                # The true sum: the wrapped int64 total plus the multiple of 2**64 the float64 sum shows.
                wraps = round((float(out[row, j]) - float(exact[row, j])) / 2**64)
                value = str(int(exact[row, j]) + wraps * 2**64)
                rows.append(
                    (
                        row,
                        f"{plan.outputs[j]}: sum {value} does not fit {plan.output_types[j]} (between"
                        f" {low} and {high}); the event is not applied",
                    )
                )
            continue
        bad = np.flatnonzero((out[:, j] < lowest) | (out[:, j] > highest))  # NaN (no value) is neither
        if bad.size:
            row = int(bad[0])
            why = "its window sum overflows; " if plan.functions[j] == "mean" else ""
            rows.append(
                (
                    row,
                    f"{plan.outputs[j]}: {plan.functions[j]} {_number(out[row, j])} does not fit"
                    f" {plan.output_types[j]} (between {_number(lowest)} and {_number(highest)}); {why}the"
                    " event is not applied",
                )
            )
    return min(rows) if rows else None


def _number(value: float) -> str:
    """Whole numbers as integers (a sum of 4000000000), others as Python writes them (1e+39)."""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() and abs(value) < 1e16 else repr(value)


def output_columns(
    plan: AggregationPlan, out: npt.NDArray[np.float64], exact: npt.NDArray[np.int64]
) -> dict[str, pa.Array]:
    """Kernel outputs (NaN = no value; integer sums from ``exact``) as Arrow columns of the features'
    types (null = no value)."""
    columns: dict[str, pa.Array] = {}
    for j, (name, dtype) in enumerate(zip(plan.outputs, plan.output_types, strict=True)):
        if plan.exact_sum(j):  # never empty (an empty sum is 0), and checked to fit by out_of_range
            columns[name] = pa.array(exact[:, j].astype(dtype))
            continue
        values = out[:, j]
        missing = np.isnan(values)
        filled = np.where(missing, 0, values).astype(dtype)
        columns[name] = pa.array(filled, mask=missing if missing.any() else None)
    return columns


def apply_fitting(
    state: WindowState,
    plan: AggregationPlan,
    slots: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    seq: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64], dict[int, str], dict[int, int]
]:
    """``state.apply`` with emits, leaving out each event after which a sum or count stored as an
    integer no longer fits its type (``plan.out_of_range``): numpy's cast wrapped such a result
    around (3000000003 stored in an int32 as -2147483648), counted as accepted. The state of the
    entities touched is saved first, so an event found unfit is undone: the batch is re-applied up
    to it, and the rest after it. Only views with such an output pay for the copy. Also returns the
    kernel's exact integer sums (``WindowState.apply_exact``; no columns unless the view has some).

    The events older than the ring (``WindowState.apply_marked``: in none of their entity's windows)
    are not applied either. The outputs hold a row for each applied event only; the last two results
    are the unfit events (by row of the input) with the reason why, and the events older than the ring
    with their entity's newest event time when they came."""
    checked = bool(range_checked(plan))
    n, unfit = len(ts), {}
    outs, out_ts, exacts, marks, rows = [], [], [], [], []
    start = 0
    while start < n:
        rest = slice(start, n)
        saved = state.save(slots[rest]) if checked else None
        out, at, exact, older = state.apply_marked(slots[rest], ts[rest], seq[rest], values[rest], emit=True)
        found = out_of_range(plan, out, exact) if checked else None
        end = n if found is None else start + found[0]
        outs.append(out[: end - start])
        out_ts.append(at[: end - start])
        exacts.append(exact[: end - start])
        marks.append(older[: end - start])
        rows.append(np.arange(start, end))
        if found is None or saved is None:
            break
        state.restore(saved)
        done = slice(start, end)
        state.apply(slots[done], ts[done], seq[done], values[done], emit=False)
        unfit[end] = found[1]
        start = end + 1
    if not outs:
        none = np.empty((0, len(plan.outputs)), dtype=np.int64)
        return none.astype(np.float64), np.empty(0, dtype=np.int64), none, unfit, {}
    out, at, exact = np.concatenate(outs), np.concatenate(out_ts), np.concatenate(exacts)
    marked = np.concatenate(marks)
    if not marked.any():
        return out, at, exact, unfit, {}
    row = np.concatenate(rows)
    older_than_ring = {int(r): int(t) for r, t in zip(row[marked], at[marked], strict=True)}
    applied = ~marked
    return out[applied], at[applied], exact[applied] if exact.shape[0] else exact, unfit, older_than_ring
