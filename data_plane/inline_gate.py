"""Which of a model version's batches run on the event loop rather than in a worker thread.

Where a batch runs: in a worker thread, so that the event loop keeps serving while the model computes —
unless the version's batches are known to be short. Handing a batch to a thread and its answer back costs
the process ~100–150 µs of CPU here (waking the thread, the GIL changing hands twice, waking the loop),
more than a small model's whole batch; such a batch runs on the event loop itself, one batch per loop turn
so that I/O is served between batches. "Known to be short" is :class:`InlineGate`: the version's warm-up
measured its full batch under ``inline_below_s``, the batch has no more rows than that, and the batches run
inline have not been over the limit several times in a row (then the version moves to threads for good).
Rows bound a batch's size only when every other input dimension is fixed: a version with a dynamic one
(``x: float32[b, n]``, warmed at n = 1) never runs inline, else one long request ran on the loop for its
whole duration and stalled every other call (see ``models.warmup.warms_every_size``).
Batches run in threads are not timed for this: their wall time includes waiting for the GIL.
"""

from __future__ import annotations


class InlineGate:
    """Decides which batches run on the event loop (see the module's docstring).

    ``estimate_s`` is the warm-up's time for a batch of ``max_rows`` rows (None: not measured, or not a
    bound on a batch of that many rows because a non-batch dimension is dynamic; never inline). Runs that
    took ``limit_s`` or more ``strikes`` times in a row close the gate for good: the model is slower than
    its warm-up said (one slow run, e.g. a GC pause, is forgiven)."""

    def __init__(self, limit_s: float, estimate_s: float | None, max_rows: int, strikes: int = 8) -> None:
        self.limit_s = limit_s
        self.max_rows = max_rows
        self.strikes = strikes
        self.open = limit_s > 0 and estimate_s is not None and estimate_s < limit_s
        self._over = 0

    def admits(self, rows: int) -> bool:
        return self.open and rows <= self.max_rows

    def ran(self, seconds: float) -> bool:
        """Records an inline run; True when this run closed the gate."""
        if seconds < self.limit_s:
            self._over = 0
            return False
        self._over += 1
        if self._over >= self.strikes and self.open:
            self.open = False
            return True
        return False
