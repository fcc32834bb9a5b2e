"""Incremental sliding-window aggregations per entity: count, sum, mean, min, max and last.

State: per entity, a ring of ``n_buckets`` time buckets of ``bucket_us`` microseconds each; a slot holds
the partial aggregates (count, sum, min, max, and the last value with its timestamp and sequence) of the
events of one absolute bucket ``ts // bucket_us``. A window of ``w`` buckets is the merge of the slots
holding buckets ``(b_T - w, b_T]`` where ``b_T`` is the bucket of the entity's newest event time ``T``.

Exactness: with granularity ``g = bucket_us``, a window of length ``W = w * g`` evaluated as of ``T``
covers the events with ``ts >= (b_T - w + 1) * g`` (and ``ts <= T``, as ``T`` is the newest): a hopping
window of length ``W`` and hop ``g``, aligned to bucket boundaries. It is exact for that definition
(tests compare with brute force over raw events), and differs from a window ending exactly at ``T`` by
at most one bucket at its old edge. ``last`` is the value of the event with the greatest
``(ts, seq)`` in the window; ``seq`` is a caller-given tie-breaker (e.g. the stream id).

The final state does not depend on the order events are applied in (all partials are commutative, and a
slot is only recycled for a newer bucket once its old bucket has left every window), so redelivered or
reclaimed events may be applied late. An event whose bucket is already older than the ring (at or before
its entity's newest bucket less ``n_buckets``) is not applied, and ``apply_marked`` says which: it lies
outside every window at and after that point, and a caller must not count it as applied.

Outputs are float64 with NaN for "no value" (mean, min, max and last of an empty window).

Exact integer sums: float64 sums of integers are exact only while every partial sum stays within
2**53; past it they round (2**53 + 1 is 2**53), and with cancellation (+5e15+1, +5e15, -5e15) a rounded
partial can end in a small, wrong result, so no bound on the result alone tells a right sum from a
wrong one. Columns named in ``exact_columns`` (whole-number events of magnitude at most 2**53, which
float64 holds exactly) therefore also keep an int64 sum per bucket, and ``apply_exact`` returns each
sum's int64 window total beside the float64 outputs. int64 addition wraps around, so the total is the
true sum modulo 2**64; ``exact_sum_known`` tells when it is the true sum, by comparing it with the
float64 sum, whose error is far below 2**62 (see there). Views without such columns keep no int64
sums and pay nothing for them.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

FUNCTIONS = ("count", "sum", "mean", "min", "max", "last")
COUNT, SUM, MEAN, MIN, MAX, LAST = range(6)
EMPTY_BUCKET = np.iinfo(np.int64).min
# How far the float64 window sum may lie from the true sum of events of magnitude <= 2**53: each of the
# m - 1 additions errs by at most half an ulp of a partial sum of magnitude <= m * 2**53, so in all by at
# most m**2 / 2, under 2**62 for m < 2**31 events in one entity's window.
EXACT_SUM_SLACK = 2.0**62


def exact_sum_known(approx: npt.NDArray[np.float64], exact: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Where the int64 window sum ``exact`` (the true sum modulo 2**64) is the true sum, given the float64
    sum ``approx`` of the same events. The true sum lies within ``EXACT_SUM_SLACK`` of ``approx`` and
    differs from ``exact`` by a multiple of 2**64; so when ``exact`` lies within ``EXACT_SUM_SLACK`` of
    ``approx`` the two are within 2**63 of each other, hence equal; and when the true sum fits int64,
    ``exact`` is it and lies that close. False means the true sum does not fit int64."""
    known: npt.NDArray[np.bool_] = np.abs(approx - exact.astype(np.float64)) <= EXACT_SUM_SLACK
    return known


@numba.njit(cache=True, nogil=True)
def _apply(
    bucket_ids: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    sums: npt.NDArray[np.float64],
    mins: npt.NDArray[np.float64],
    maxs: npt.NDArray[np.float64],
    last_ts: npt.NDArray[np.int64],
    last_seq: npt.NDArray[np.int64],
    last_vals: npt.NDArray[np.float64],
    isums: npt.NDArray[np.int64],
    exact_col: npt.NDArray[np.bool_],
    newest: npt.NDArray[np.int64],
    entity: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    seq: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    bucket_us: int,
    group_col: npt.NDArray[np.int64],
    group_buckets: npt.NDArray[np.int64],
    agg_group: npt.NDArray[np.int64],
    agg_func: npt.NDArray[np.int64],
    out: npt.NDArray[np.float64],
    out_ts: npt.NDArray[np.int64],
    iout: npt.NDArray[np.int64],
    older: npt.NDArray[np.bool_],
    emit: bool,
) -> None:
    n_buckets = bucket_ids.shape[1]
    n_cols = values.shape[1]
    exact = isums.shape[2] > 0
    partials = np.empty((group_col.shape[0], _N_PARTIALS))
    ipartials = np.zeros(group_col.shape[0], dtype=np.int64)
    for i in range(ts.shape[0]):
        e = entity[i]
        b = ts[i] // bucket_us
        slot = b % n_buckets
        held = bucket_ids[e, slot]
        # Older than the ring: in none of the entity's windows, now or later (they only move forward), so
        # not applied; the caller refuses it rather than count it as applied (``apply_marked``).
        older[i] = newest[e] != EMPTY_BUCKET and b <= newest[e] // bucket_us - n_buckets
        if not older[i]:
            if held < b:  # recycle a slot whose bucket has left every window
                bucket_ids[e, slot] = b
                for c in range(n_cols):
                    counts[e, slot, c] = 0
                    sums[e, slot, c] = 0.0
                    mins[e, slot, c] = np.inf
                    maxs[e, slot, c] = -np.inf
                    last_ts[e, slot, c] = EMPTY_BUCKET
                    last_seq[e, slot, c] = EMPTY_BUCKET
                    last_vals[e, slot, c] = np.nan
                    if exact:
                        isums[e, slot, c] = 0
                held = b
            if held == b:
                for c in range(n_cols):
                    v = values[i, c]
                    counts[e, slot, c] += 1
                    sums[e, slot, c] += v
                    if exact and exact_col[c]:
                        isums[e, slot, c] += np.int64(v)  # a whole number within 2**53: converted exactly
                    if v < mins[e, slot, c]:
                        mins[e, slot, c] = v
                    if v > maxs[e, slot, c]:
                        maxs[e, slot, c] = v
                    if ts[i] > last_ts[e, slot, c] or (
                        ts[i] == last_ts[e, slot, c] and seq[i] >= last_seq[e, slot, c]
                    ):
                        last_ts[e, slot, c] = ts[i]
                        last_seq[e, slot, c] = seq[i]
                        last_vals[e, slot, c] = v
        if ts[i] > newest[e]:
            newest[e] = ts[i]
        if emit:
            out_ts[i] = newest[e]
            _evaluate(
                bucket_ids, counts, sums, mins, maxs, last_ts, last_seq, last_vals, isums, e,
                newest[e] // bucket_us, group_col, group_buckets, agg_group, agg_func, partials, ipartials,
                out[i], iout[i] if exact else iout[0],
            )  # fmt: skip


# Partial aggregates of one (column, window) group, in ``partials[group]``.
_COUNT, _SUM, _MIN, _MAX, _LAST = range(5)
_N_PARTIALS = 5


@numba.njit(cache=True, nogil=True)
def _evaluate(
    bucket_ids: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    sums: npt.NDArray[np.float64],
    mins: npt.NDArray[np.float64],
    maxs: npt.NDArray[np.float64],
    last_ts: npt.NDArray[np.int64],
    last_seq: npt.NDArray[np.int64],
    last_vals: npt.NDArray[np.float64],
    isums: npt.NDArray[np.int64],
    e: int,
    current: int,
    group_col: npt.NDArray[np.int64],
    group_buckets: npt.NDArray[np.int64],
    agg_group: npt.NDArray[np.int64],
    agg_func: npt.NDArray[np.int64],
    partials: npt.NDArray[np.float64],
    ipartials: npt.NDArray[np.int64],
    row: npt.NDArray[np.float64],
    irow: npt.NDArray[np.int64],
) -> None:
    """Entity ``e``'s aggregates as of bucket ``current`` into ``row``. Aggregations over the same
    column and window share one pass, and a pass visits only the window's buckets: bucket ``b`` can only
    sit in slot ``b % n_buckets``. With exact sums, also each sum's int64 total into ``irow``."""
    n_buckets = bucket_ids.shape[1]
    exact = isums.shape[2] > 0
    for g in range(group_col.shape[0]):
        c = group_col[g]
        count = 0
        total = 0.0
        itotal = np.int64(0)
        low = np.inf
        high = -np.inf
        best_ts = EMPTY_BUCKET
        best_seq = EMPTY_BUCKET
        best = np.nan
        for b in range(current - group_buckets[g] + 1, current + 1):
            slot = b % n_buckets
            if bucket_ids[e, slot] != b or counts[e, slot, c] == 0:
                continue
            count += counts[e, slot, c]
            total += sums[e, slot, c]
            if exact:
                itotal += isums[e, slot, c]  # wraps around past int64: see exact_sum_known
            low = min(low, mins[e, slot, c])
            high = max(high, maxs[e, slot, c])
            t = last_ts[e, slot, c]
            if t > best_ts or (t == best_ts and last_seq[e, slot, c] > best_seq):
                best_ts = t
                best_seq = last_seq[e, slot, c]
                best = last_vals[e, slot, c]
        partials[g, _COUNT] = count
        partials[g, _SUM] = total
        partials[g, _MIN] = low
        partials[g, _MAX] = high
        partials[g, _LAST] = best
        ipartials[g] = itotal
    for a in range(agg_func.shape[0]):
        g = agg_group[a]
        f = agg_func[a]
        count = partials[g, _COUNT]
        if f == COUNT:
            row[a] = count
        elif f == SUM:
            row[a] = partials[g, _SUM]
            if exact:
                irow[a] = ipartials[g]
        elif count == 0:
            row[a] = np.nan
        elif f == MEAN:
            mean = partials[g, _SUM] / count
            # The true mean lies between the window's min and max, but sum / count may round past them
            # (three events of 0.1 give 0.10000000000000002): kept within them, a mean breaks no range
            # rule its every event keeps (control_plane/features/aggregated_rules.py). An overflowed sum
            # (an infinite mean) is left as it is, for the materializer to refuse.
            if np.isfinite(mean):
                mean = min(max(mean, partials[g, _MIN]), partials[g, _MAX])
            row[a] = mean
        elif f == MIN:
            row[a] = partials[g, _MIN]
        elif f == MAX:
            row[a] = partials[g, _MAX]
        else:
            row[a] = partials[g, _LAST]


class WindowState:
    """Window state of many entities (entity = a dense index 0..capacity-1, grown on demand)."""

    bucket_ids: npt.NDArray[np.int64]  # [entity, slot] absolute bucket held by the slot
    counts: npt.NDArray[np.int64]  # [entity, slot, column] partial aggregates of that bucket
    sums: npt.NDArray[np.float64]
    mins: npt.NDArray[np.float64]
    maxs: npt.NDArray[np.float64]
    last_ts: npt.NDArray[np.int64]
    last_seq: npt.NDArray[np.int64]
    last_vals: npt.NDArray[np.float64]
    isums: npt.NDArray[np.int64]  # [entity, slot, column] exact sums; no columns without exact_columns
    newest: npt.NDArray[np.int64]  # [entity] newest event time seen

    def __init__(
        self,
        bucket_us: int,
        n_buckets: int,
        n_columns: int,
        agg_col: npt.ArrayLike,
        agg_func: npt.ArrayLike,
        agg_buckets: npt.ArrayLike,
        capacity: int = 1024,
        exact_columns: npt.ArrayLike = (),
    ) -> None:
        """``exact_columns``: the columns whose sums are also kept exactly as int64 (see the module
        docstring); their values must be whole numbers of magnitude at most 2**53."""
        if bucket_us <= 0 or n_buckets <= 0:
            raise ValueError("bucket_us and n_buckets must be positive")
        self.bucket_us = int(bucket_us)
        self.n_buckets = int(n_buckets)
        self.n_columns = int(n_columns)
        self.agg_col = np.asarray(agg_col, dtype=np.int64)
        self.agg_func = np.asarray(agg_func, dtype=np.int64)
        self.agg_buckets = np.asarray(agg_buckets, dtype=np.int64)
        self.exact_col = np.zeros(self.n_columns, dtype=np.bool_)
        self.exact_col[np.asarray(exact_columns, dtype=np.int64)] = True
        if self.agg_buckets.size and (self.agg_buckets.max() > n_buckets or self.agg_buckets.min() <= 0):
            raise ValueError("every window must span between 1 and n_buckets buckets")
        # Aggregations of one column over one window (sum, mean and last of an hour) share a pass.
        groups = sorted(set(zip(self.agg_col.tolist(), self.agg_buckets.tolist(), strict=True)))
        self.group_col = np.array([g[0] for g in groups], dtype=np.int64)
        self.group_buckets = np.array([g[1] for g in groups], dtype=np.int64)
        self.agg_group = np.array(
            [groups.index(g) for g in zip(self.agg_col.tolist(), self.agg_buckets.tolist(), strict=True)],
            dtype=np.int64,
        )
        self.capacity = 0
        self._allocate(max(1, capacity))

    def _allocate(self, capacity: int) -> None:
        shape2, shape3 = (capacity, self.n_buckets), (capacity, self.n_buckets, self.n_columns)
        fresh = {
            "bucket_ids": np.full(shape2, EMPTY_BUCKET, dtype=np.int64),
            "counts": np.zeros(shape3, dtype=np.int64),
            "sums": np.zeros(shape3, dtype=np.float64),
            "mins": np.full(shape3, np.inf),
            "maxs": np.full(shape3, -np.inf),
            "last_ts": np.full(shape3, EMPTY_BUCKET, dtype=np.int64),
            "last_seq": np.full(shape3, EMPTY_BUCKET, dtype=np.int64),
            "last_vals": np.full(shape3, np.nan),
            "isums": np.zeros((*shape3[:2], shape3[2] if self.exact_col.any() else 0), dtype=np.int64),
            "newest": np.full(capacity, EMPTY_BUCKET, dtype=np.int64),
        }
        for name, array in fresh.items():
            if self.capacity:
                array[: self.capacity] = getattr(self, name)
            setattr(self, name, array)
        self.capacity = capacity

    def apply(
        self,
        entity: npt.NDArray[np.int64],
        ts_us: npt.NDArray[np.int64],
        seq: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        *,
        emit: bool = True,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Applies events in order; with ``emit``, returns after each event its entity's aggregates
        ([n, aggregations]) and the time they are as of (the entity's newest event time)."""
        out, out_ts, _ = self.apply_exact(entity, ts_us, seq, values, emit=emit)
        return out, out_ts

    def apply_exact(
        self,
        entity: npt.NDArray[np.int64],
        ts_us: npt.NDArray[np.int64],
        seq: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        *,
        emit: bool = True,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``apply``, also returning the int64 window totals ([n, aggregations]) of the sums of
        ``exact_columns`` (0 elsewhere; see ``exact_sum_known``)."""
        out, out_ts, exact, _ = self.apply_marked(entity, ts_us, seq, values, emit=emit)
        return out, out_ts, exact

    def apply_marked(
        self,
        entity: npt.NDArray[np.int64],
        ts_us: npt.NDArray[np.int64],
        seq: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        *,
        emit: bool = True,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """``apply_exact``, also returning which events were not applied, being older than the ring
        (their bucket at or before the entity's newest bucket less ``n_buckets``, when they came): in none
        of the entity's windows, then or later. Their emitted rows repeat the entity's aggregates."""
        entity = np.ascontiguousarray(entity, dtype=np.int64)
        if entity.size and int(entity.max()) >= self.capacity:
            self._allocate(max(int(entity.max()) + 1, 2 * self.capacity))
        n = entity.shape[0]
        out = np.empty((n if emit else 0, self.agg_col.shape[0]), dtype=np.float64)
        out_ts = np.empty(n if emit else 0, dtype=np.int64)
        exact = emit and self.exact_col.any()
        iout = np.zeros((n if exact else 1, self.agg_col.shape[0]), dtype=np.int64)
        older = np.zeros(n, dtype=np.bool_)
        _apply(
            self.bucket_ids, self.counts, self.sums, self.mins, self.maxs, self.last_ts, self.last_seq,
            self.last_vals, self.isums, self.exact_col, self.newest, entity,
            np.ascontiguousarray(ts_us, dtype=np.int64),
            np.ascontiguousarray(seq, dtype=np.int64),
            np.ascontiguousarray(values, dtype=np.float64).reshape(n, self.n_columns), self.bucket_us,
            self.group_col, self.group_buckets, self.agg_group, self.agg_func, out, out_ts, iout, older,
            emit,
        )  # fmt: skip
        return out, out_ts, iout if exact else iout[:0], older

    _ARRAYS = (
        "bucket_ids", "counts", "sums", "mins", "maxs", "last_ts", "last_seq", "last_vals", "isums", "newest",
    )  # fmt: skip

    def save(self, entities: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.generic]]]:
        """A copy of the state of ``entities`` (growing the state to hold them), for ``restore``: an
        apply can be undone for the entities it touched."""
        wanted = np.unique(np.asarray(entities, dtype=np.int64))
        if wanted.size and int(wanted.max()) >= self.capacity:
            self._allocate(max(int(wanted.max()) + 1, 2 * self.capacity))
        return wanted, [getattr(self, name)[wanted].copy() for name in self._ARRAYS]

    def restore(self, saved: tuple[npt.NDArray[np.int64], list[npt.NDArray[np.generic]]]) -> None:
        wanted, copies = saved
        for name, copy in zip(self._ARRAYS, copies, strict=True):
            getattr(self, name)[wanted] = copy

    def evaluate(self, entities: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The aggregates ([len(entities), aggregations]) of each entity (an index below ``capacity``) as
        of its newest event, read from the state without changing it."""
        wanted = np.asarray(entities, dtype=np.int64)
        rows = np.empty((wanted.shape[0], self.agg_func.shape[0]), dtype=np.float64)
        partials = np.empty((self.group_col.shape[0], _N_PARTIALS))
        ipartials = np.zeros(self.group_col.shape[0], dtype=np.int64)
        irow = np.zeros(self.agg_func.shape[0], dtype=np.int64)
        for i, e in enumerate(wanted.tolist()):
            _evaluate(
                self.bucket_ids, self.counts, self.sums, self.mins, self.maxs, self.last_ts, self.last_seq,
                self.last_vals, self.isums, e, int(self.newest[e]) // self.bucket_us, self.group_col,
                self.group_buckets, self.agg_group, self.agg_func, partials, ipartials, rows[i], irow,
            )  # fmt: skip
        return rows
