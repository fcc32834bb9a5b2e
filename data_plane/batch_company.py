"""How long a request that finds its model version idle waits for others to batch with.

Under load the event loop takes requests in one at a time: gRPC hands each over in a turn of its own, so
a request dispatched as soon as it arrives runs alone, and every request pays a whole model run (measured
on the serving benchmark's MLP at 32 callers: every batch one row, ~80 µs of CPU a run). Waiting for
company pays when others are on their way (at 32 callers, 2.5 rows a batch on average with the 2 ms
default delay, and 42 % more requests a second: a tritonclient closed loop against the data plane with
and without this, interleaved in one run), and costs the wait when none are (at one caller, whose next
request comes only after this one's answer, every wait is added latency).

:class:`CompanyEstimate` learns which of the two it is from what its waits brought, as plain data so that
the scheduler that uses it stays testable without a clock:

* A request that arrives at an idle lane waits until its batch has ``target`` rows, or until the queue
  delay runs out. ``target`` starts at 1: no wait at all.
* Every so often one arrival waits for one row more than ``target`` (a probe). When the rows come in
  time, ``target`` grows by one and the next arrival probes again; so under load it climbs to what the
  callers in flight can fill within the delay.
* When a wait runs out of time, ``target`` drops to the rows that did come, and probes back off: the
  next comes after 2, 4, 8, … arrivals (at most ``MAX_PROBE_INTERVAL``), so that a lone caller pays the
  queue delay on a handful of requests at start and then on one in ``MAX_PROBE_INTERVAL``. A probe whose
  head leaves without a batch (its caller gave up) backs off the same way, ``target`` unchanged.
* Only a wait for others teaches it anything: a request with at least the rows it waits for (a multi-row
  one) goes at once and leaves the estimate as it was, and so does one whose deadline comes before the
  queue delay runs out (the scheduler does not ask the estimate for it: it goes at once).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PROBE_INTERVAL = 4096  # arrivals between probes once probing keeps failing (one in 4,096 waits)
_MAX_BACK_OFF_STEPS = MAX_PROBE_INTERVAL.bit_length() - 1


@dataclass(slots=True)
class CompanyEstimate:
    target: int = 1  # rows an idle arrival waits for (1: it goes at once)
    # Idle arrivals that wait for ``target`` before the next one probes ``target + 1`` (the first goes
    # at once: a version's first request finds out nothing about load).
    probe_in: int = 1
    failed_probes: int = 0  # waits in a row that ran out of time (sets the probes' back-off)

    def rows_to_wait_for(self, max_rows: int) -> int:
        """Called once for each request that arrives at an idle lane; ``max_rows`` is the batch's limit."""
        self.target = min(self.target, max_rows)
        if self.probe_in > 0 or self.target >= max_rows:
            self.probe_in = max(0, self.probe_in - 1)
            return self.target
        return self.target + 1

    def formed(self, waited_for: int, rows: int) -> None:
        """A batch left whose head had waited for ``waited_for`` rows (more than its own: a head that
        fills the wait by itself found out nothing about company), when ``rows`` of its shape had come
        (itself included, whether or not they all fit in the batch)."""
        if rows >= waited_for:
            if waited_for > self.target:  # a probe that paid: try one more at once
                self.target = waited_for
                self.failed_probes = 0
                self.probe_in = 0
            return
        # The delay ran out first: wait for what came, and probe less often.
        self.target = max(1, rows)
        self._back_off()

    def abandoned(self, waited_for: int, rows: int) -> None:
        """A request of ``rows`` rows that waited for ``waited_for`` (0: it arrived behind others) left
        before its batch formed (its caller gave up, or its deadline passed). What a wait would have found
        is unknown, so ``target`` stays; but a probe that ends so backs the next one off as a failed one
        does: else callers who give up within the queue delay had every arrival probe, and wait."""
        if rows < waited_for and waited_for > self.target:
            self._back_off()

    def _back_off(self) -> None:
        self.failed_probes = min(self.failed_probes + 1, _MAX_BACK_OFF_STEPS)
        self.probe_in = 2**self.failed_probes
