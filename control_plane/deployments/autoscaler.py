"""The autoscaler's decision, as a pure function: the replicas' load in, the replica count out.

Every ``interval_s`` (30 s by default) the loop measures the data plane's total queue depth (requests
queued or in flight over all replicas) and its p99 latency, and calls :func:`decide`:

* the raw recommendation is the larger of what the queue needs (``ceil(queue / target per replica)``)
  and what latency needs (the current count scaled by ``p99 / target p99``), within [min, max];
* stabilization against flapping, as Kubernetes' HPA does it: recommendations are remembered for a
  window; scaling up takes the *smallest* recommendation of the (short) up-window, scaling down the
  *largest* of the (long) down-window, so one quiet interval cannot shrink the fleet and one spike
  does not grow it unless it lasts;
* one decision adds at most ``max_step_up`` replicas (new replicas need to load and warm up first);
* an interval in which some replica could not be measured (its /metrics did not answer: it is hung, or too
  busy to answer in time) recommends no fewer replicas than run: its load is unknown, not none. Counted
  as none, one silent replica made the fleet look idle, and the scale-down stopped a healthy replica.
  A replica whose /metrics answered but whose event loop is stalled (``Load.stalled``) holds nothing up:
  it serves nothing, and a scale-down stops it before any other (``autoscale_loop``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clients.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class AutoscalerPolicy:
    min_replicas: int = 1
    max_replicas: int = 4
    target_queue_per_replica: float = 16.0
    target_p99_ms: float = 50.0
    interval_s: float = 30.0
    up_window_s: float = 60.0
    down_window_s: float = 300.0
    max_step_up: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise InvalidArgument(
                f"replicas need 1 <= min ({self.min_replicas}) <= max ({self.max_replicas})"
            )
        for value, what in (
            (self.target_queue_per_replica, "target_queue_per_replica"),
            (self.target_p99_ms, "target_p99_ms"),
            (self.interval_s, "interval_s"),
        ):
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"autoscaler {what} must be positive, not {value}")
        # Not `< 0`: NaN compares false to everything, and a NaN window made every decision raise.
        for value, what in ((self.up_window_s, "up_window_s"), (self.down_window_s, "down_window_s")):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(f"autoscaler {what} must be a finite number >= 0, not {value}")
        if self.max_step_up < 1:
            raise InvalidArgument(f"autoscaler max_step_up must be >= 1, not {self.max_step_up}")


@dataclass(frozen=True, slots=True)
class Load:
    replicas: int  # ready replicas now
    queue_depth: float  # queued + in flight, summed over replicas
    p99_ms: float | None  # None when nothing was served in the interval
    unmeasured: int = 0  # replicas whose load could not be read (left out of queue_depth and p99_ms)
    # Replicas whose event loop had stopped running (their /metrics, a thread of their own, still answered):
    # left out of queue_depth and p99_ms, and not unmeasured, since they serve nothing (autoscale_loop).
    stalled: int = 0


@dataclass(frozen=True, slots=True)
class Recommendation:
    at_s: float
    replicas: int


def raw_recommendation(policy: AutoscalerPolicy, load: Load) -> int:
    current = max(load.replicas, 1)
    # A non-finite reading (a NaN or infinite gauge scraped from a replica) counts as no reading:
    # math.ceil raises on it, which failed every decision while it lasted.
    queue = load.queue_depth if math.isfinite(load.queue_depth) else 0.0
    p99 = load.p99_ms if load.p99_ms is not None and math.isfinite(load.p99_ms) else None
    by_queue = math.ceil(queue / policy.target_queue_per_replica)
    by_latency = 0 if p99 is None else math.ceil(current * p99 / policy.target_p99_ms)
    # What was not seen may be busy: a partial reading can ask for more replicas, never for fewer.
    held = load.replicas if load.unmeasured > 0 else 0
    return min(max(by_queue, by_latency, held, policy.min_replicas), policy.max_replicas)


def decide(
    policy: AutoscalerPolicy, load: Load, history: tuple[Recommendation, ...], now_s: float
) -> tuple[int, tuple[Recommendation, ...]]:
    """The replica count to run now, and the history to pass to the next call. A window counts only once
    the history covers it (right after a start nothing is known about the last five minutes, so the
    count is held rather than guessed)."""
    # One interval beyond the longest window, so that a late tick still finds the window covered.
    keep_s = max(policy.up_window_s, policy.down_window_s) + policy.interval_s
    recommended = Recommendation(now_s, raw_recommendation(policy, load))
    history = (*(r for r in history if now_s - r.at_s <= keep_s), recommended)
    current = load.replicas

    def window(seconds: float) -> list[int] | None:
        if history[0].at_s > now_s - seconds:
            return None
        return [r.replicas for r in history if now_s - r.at_s <= seconds]

    wanted = current
    up, down = window(policy.up_window_s), window(policy.down_window_s)
    if up is not None and min(up) > current:
        wanted = min(min(up), current + policy.max_step_up)
    elif down is not None and max(down) < current:
        wanted = max(down)
    return min(max(wanted, policy.min_replicas), policy.max_replicas), history
