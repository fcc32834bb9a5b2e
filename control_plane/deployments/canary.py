"""The canary controller's decision, as a pure function: the policy, where the canary stands, and what was
observed of it (and of the primary) since its current step began in; hold, advance, promote or roll back
out, with the reason in words. No clock, no I/O: :mod:`canary_loop` feeds it and applies its answers.

Rules, in order:

1. Once the canary has served ``min_requests`` in this step, a breach rolls it back at once (no need to
   wait out the baking window): its error rate above ``max_error_rate`` (errors are the requests that
   failed on the server's side -- UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...: see
   :mod:`log_entries`); its share of requests refused as the caller's mistake (INVALID_ARGUMENT,
   NOT_FOUND, CANCELLED, ...) above the primary's in the same window by more than ``max_error_rate``
   plus what chance explains (see below; the primary needs ``min_requests`` too); its p99 latency
   above ``max_p99_latency_ms``; or its p99 above ``max_p99_ratio`` times the primary's (when the primary
   also has ``min_requests`` in the same window, so the two are compared on like traffic; the primary's
   p99 counts as at least ``RATIO_FLOOR_MS``). A latency breach needs two requests above its bound: the
   p99 is judged no higher than the second-slowest request (:func:`judged_p99_ms`, the primary's too).
   This holds for the window since the observer last
   restarted it and for everything observed in the step (``whole_step``: entries read before a trim or
   a gap marker included -- a gap means entries may have been missed, not that the failures seen did
   not happen).
2. Before the step's baking window has passed, hold.
3. After it, hold until ``min_requests`` arrived (a canary nobody used proves nothing), until the
   observer has read every entry logged so far, and until the evidence reaches the present: the
   canary's newest observed entry at most :func:`freshness_bound_s` old. A canary that refuses more
   than ``max_error_rate`` of its requests as the caller's mistake also holds while the primary has
   fewer than ``min_requests`` in the window: without the primary's rate there is no telling the
   callers' mistakes from the canary's own, and holding is the safe side (it neither rolls back a
   healthy canary nor promotes one that refuses what the primary answers; a person can do either).
   Likewise a canary whose p99 is above ``max_p99_ratio`` times what is known of the primary's holds
   while the primary has fewer than ``min_requests``: above a 50 % step the primary gets fewer requests
   than the canary, and at little traffic the ratio went unjudged and a canary several times slower
   than its primary was promoted.
   Then advance to the next step, or, when that step is 100 %, promote (blue/green swap).

Why refusals as the caller's mistake are compared, not ignored: they used to count as requests only,
since every variant answers a caller's mistake alike. But a new version refuses with those very codes
what its primary answers: it reads a request-time feature callers do not send yet (INVALID_ARGUMENT "row
0 has no request-time feature 'hour'"), or a feature view version registered but not yet filled
(NOT_FOUND). (Features that do not match its input width were INVALID_ARGUMENT too; the data plane now
answers FAILED_PRECONDITION, an error of the canary's own.) Such a canary showed 0 % errors, was
promoted, and then every request failed. A caller's real mistakes reach both variants alike, so the
difference of the two rates is the canary's own; it must exceed ``max_error_rate`` (the tolerance the
policy gives the canary's own failures) by more than ``CALLER_ERROR_Z`` standard errors of that
difference (a one-sided two-proportion test, pooled): callers' mistakes spread at random over the
variants, and with ``max_error_rate`` 0, or a canary's few hundred requests, chance alone would otherwise
roll back a healthy canary now and then (1 % of mistakes on both: 3 of a canary's 100 requests happen 8 %
of the time). A canary refusing all its requests clears that bound by far.

Why a latency breach needs two slow requests: the p99 of fewer than 100 requests is their slowest, so one
request slowed by something other than the version (a pause of a loaded host, a garbage collection, a
cold cache line) rolled back a healthy canary judged on a few dozen requests: the end-to-end demo's
canary (``min_requests`` 20, ``max_p99_ratio`` 10) was rolled back for one 36.7 ms request among
requests of about 2 ms. Judging the second-slowest request instead leaves one outlier out and nothing
more: from 100 requests the p99 already has two requests at or above it and is judged as it is, and a
slow version, whose every request is slow, still rolls back as soon as ``min_requests`` arrived. The
decision's reason says when the slowest request was left out (``the slowest request alone, 36.70 ms, is
not judged``).

Why the last condition: the observations cover the window up to its newest entry, and what came after
is unseen. Entries the data plane dropped are reported by a gap marker in the stream (the observer then
restarts the window, as after a trim), but only once Redis takes writes again: while it refuses them
(out of memory, down) no marker can arrive, and a canary failing then would look like one that got no
more requests. Requiring recent canary entries bounds that unseen tail to the freshness bound: a
quarter of the bake, so a promotion always rests on at least three quarters of a bake of continuous
evidence, and at least one second, since the newest entry is never quite current (the data plane
batches its writes for a few milliseconds, Redis's and the control plane's clocks differ a little, and
a canary at a small share sees requests spaced apart) and a shorter bound would hold healthy canaries
with short bakes for nothing. A canary whose traffic is sparser than that waits, and says so."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from clients.errors import InvalidArgument

DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)
DEFAULT_BAKE_SECONDS = 300
#: Ten years: far beyond any real baking window, and far below where an int64 from the wire stops being
#: exact as a float (2**63 - 1 read as a float became 2**63, which no int64 field holds: INTERNAL).
MAX_BAKE_SECONDS = 10 * 365 * 24 * 3600
DEFAULT_MAX_ERROR_RATE = 0.01
DEFAULT_MAX_P99_RATIO = 1.5
DEFAULT_MIN_REQUESTS = 100
#: In the ratio test the primary's p99 counts as at least this: sub-millisecond p99s jitter by more than
#: any sensible ratio, and a canary 0.3 ms slower than a 0.4 ms primary is not a regression worth a rollback.
RATIO_FLOOR_MS = 1.0
#: How many standard errors the canary's share of refusals as the caller's mistake must exceed the primary's
#: by (besides ``max_error_rate``) to be a breach: about one healthy canary in a thousand per look at most.
CALLER_ERROR_Z = 3.0
#: The freshness bound's floor and its share of the bake (see the module doc).
FRESHNESS_FLOOR_S = 1.0
FRESHNESS_SHARE_OF_BAKE = 0.25


@dataclass(frozen=True, slots=True)
class Policy:
    steps_percent: tuple[float, ...] = DEFAULT_STEPS
    bake_seconds: int = DEFAULT_BAKE_SECONDS
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE  # 0 = any failed request rolls back
    max_p99_latency_ms: float = 0.0  # 0 = no absolute ceiling
    max_p99_ratio: float = DEFAULT_MAX_P99_RATIO  # 0 = no comparison with the primary
    min_requests: int = DEFAULT_MIN_REQUESTS

    def __post_init__(self) -> None:
        steps = self.steps_percent
        if not steps or any(not 0.0 < s <= 100.0 for s in steps) or list(steps) != sorted(set(steps)):
            raise InvalidArgument(f"canary steps must ascend strictly within (0, 100], not {list(steps)}")
        if steps[-1] != 100.0:
            raise InvalidArgument(f"canary steps must end at 100 (the promotion), not {steps[-1]:g}")
        if not 0 <= self.bake_seconds <= MAX_BAKE_SECONDS:
            raise InvalidArgument(
                f"canary bake_seconds must be from 0 to {MAX_BAKE_SECONDS} (ten years)"
                f", not {self.bake_seconds}"
            )
        for value, what in (
            (self.max_p99_latency_ms, "max_p99_latency_ms"),
            (self.max_p99_ratio, "max_p99_ratio"),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(f"canary {what} must be finite and non-negative, not {value}")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise InvalidArgument(
                f"canary max_error_rate is a fraction within [0, 1], not {self.max_error_rate}"
            )
        if self.min_requests < 1:
            raise InvalidArgument(f"canary min_requests must be at least 1, not {self.min_requests}")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one variant did in the window: requests answered, of which failed on the server's side
    (``errors``), the p99 latency (None when nothing was observed), the requests refused as the
    caller's mistake (``caller_errors``: no error of the variant's by itself, but compared with the
    primary's; ``caller_codes``: their status names, most frequent first), and the latency of its
    second-slowest request (``second_slowest_ms``: None with fewer than two, or where not known; the
    latency rules then judge the p99 as it is, see :func:`judged_p99_ms`)."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    caller_errors: int = 0
    caller_codes: tuple[str, ...] = ()
    second_slowest_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def caller_error_rate(self) -> float:
        return self.caller_errors / self.requests if self.requests else 0.0


class Action(enum.Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    #: For ADVANCE: the step index and share the canary moves to.
    next_step: int | None = None
    next_percent: float | None = None


def decide(
    policy: Policy,
    step_index: int,
    baked_seconds: float,
    canary: Observation,
    primary: Observation,
    *,
    read_through: bool = True,
    newest_canary_age_s: float,
    whole_step: tuple[Observation, Observation] | None,
) -> Decision:
    """The next move of a canary at ``policy.steps_percent[step_index]`` whose step began
    ``baked_seconds`` ago, given what it and the primary did since then. ``read_through``: the
    observations include every request logged so far; when the observer is still behind (a backlog
    larger than it reads per pass), a breach in what it has read still rolls the canary back, but the
    canary never advances or is promoted on part of the step's window: the unread part may hold its
    failures. ``newest_canary_age_s``: how long before this decision the canary's newest observed entry
    was logged (no default: a caller that left it out would advance on evidence of any age); above
    :func:`freshness_bound_s` the canary neither advances nor is promoted (the entries
    since may have been dropped unseen), while a breach still rolls it back. ``whole_step``: (canary,
    primary) over every entry observed since the step began, where the observer restarted the window
    after a trim or a gap marker (None: the window is the whole step); a breach there rolls back too."""
    steps: Sequence[float] = policy.steps_percent
    if not 0 <= step_index < len(steps):
        raise InvalidArgument(f"canary step {step_index} is outside the policy's {len(steps)} steps")
    at = f"at {steps[step_index]:g}%"
    enough = canary.requests >= policy.min_requests
    if enough:
        breach = _breach(policy, canary, primary)
        if breach is not None:
            what, note = breach
            return Decision(Action.ROLLBACK, f"{what} {at} over {canary.requests} requests{note}")
    if whole_step is not None and whole_step[0].requests >= policy.min_requests:
        breach = _breach(policy, *whole_step)
        if breach is not None:
            what, note = breach
            return Decision(
                Action.ROLLBACK,
                f"{what} {at} over {whole_step[0].requests} requests observed in the step"
                f" (before a gap in the prediction log too){note}",
            )
    if baked_seconds < policy.bake_seconds:
        return Decision(Action.HOLD, f"baking {at}: {baked_seconds:.0f}/{policy.bake_seconds} s")
    if not enough:
        return Decision(Action.HOLD, f"waiting for requests {at}: {canary.requests}/{policy.min_requests}")
    if not read_through:
        return Decision(
            Action.HOLD,
            f"reading the prediction log {at}: {canary.requests} canary requests read so far, "
            "more are logged",
        )
    if canary.caller_error_rate > policy.max_error_rate and primary.requests < policy.min_requests:
        return Decision(
            Action.HOLD,
            f"waiting for primary requests {at} to compare refusals with: the canary refused"
            f" {canary.caller_error_rate:.1%} of {canary.requests} requests as the caller's mistake"
            f" ({_codes(canary)}), the primary has {primary.requests}/{policy.min_requests}",
        )
    slower = _slower_than_ratio_allows(policy, canary, primary)
    if slower is not None:
        return Decision(
            Action.HOLD,
            f"waiting for primary requests {at} to compare latency with: {slower},"
            f" the primary has {primary.requests}/{policy.min_requests}",
        )
    bound = freshness_bound_s(policy)
    if not newest_canary_age_s <= bound:  # NaN (no time known) holds too
        return Decision(
            Action.HOLD,
            f"waiting for recent canary traffic {at}: newest entry {newest_canary_age_s:.1f} s old"
            f" (more than {bound:g} s; entries since may not have been logged)",
        )
    healthy = (
        f"healthy {at} for {baked_seconds:.0f} s: error rate {canary.error_rate:.2%}"
        f", p99 {_ms(judged_p99_ms(canary))} over {canary.requests} requests{_unjudged(canary)}"
    )
    if canary.caller_errors:
        healthy += (
            f"; refused {canary.caller_error_rate:.1%} as the caller's mistake"
            f" (primary {primary.caller_error_rate:.1%})"
        )
    following = step_index + 1
    if following >= len(steps) or steps[following] >= 100.0:
        return Decision(Action.PROMOTE, healthy)
    return Decision(Action.ADVANCE, healthy, following, steps[following])


def freshness_bound_s(policy: Policy) -> float:
    """How old the canary's newest observed entry may be when it advances or is promoted."""
    return max(FRESHNESS_FLOOR_S, FRESHNESS_SHARE_OF_BAKE * policy.bake_seconds)


def _breach(policy: Policy, canary: Observation, primary: Observation) -> tuple[str, str] | None:
    """The breach, if any: what was breached, and a note for the end of the reason ("" or
    :func:`_unjudged`'s, for a latency breach)."""
    if canary.error_rate > policy.max_error_rate:
        return f"error rate {canary.error_rate:.2%} above {policy.max_error_rate:.2%}", ""
    if _refuses_more(policy, canary, primary):
        return (
            f"canary refused {canary.caller_error_rate:.1%} of requests as the caller's mistake"
            f" ({_codes(canary)}) against {primary.caller_error_rate:.1%} for the primary: more than"
            f" {policy.max_error_rate:.2%} above it, so the canary refuses requests the primary answers",
            "",
        )
    p99 = judged_p99_ms(canary)
    if p99 is None:
        return None
    if policy.max_p99_latency_ms > 0 and p99 > policy.max_p99_latency_ms:
        return f"p99 latency {_ms(p99)} above {policy.max_p99_latency_ms:g} ms", _unjudged(canary)
    primary_p99 = judged_p99_ms(primary)
    if (
        policy.max_p99_ratio > 0
        and primary.requests >= policy.min_requests
        and primary_p99 is not None
        and p99 > policy.max_p99_ratio * max(primary_p99, RATIO_FLOOR_MS)
    ):
        what = f"p99 latency {_ms(p99)} above {policy.max_p99_ratio:g}x the primary's {_ms(primary_p99)}"
        return what, _unjudged(canary)
    return None


def _slower_than_ratio_allows(policy: Policy, canary: Observation, primary: Observation) -> str | None:
    """While the primary has fewer than ``min_requests`` the ratio rule judges nothing (see
    :func:`_breach`); says so when the canary's judged p99 is above ``max_p99_ratio`` times what is known
    of the primary's (at least ``RATIO_FLOOR_MS``), for :func:`decide` to hold rather than promote a
    canary the rule might roll back. None otherwise, and when the rule is off."""
    if policy.max_p99_ratio <= 0 or primary.requests >= policy.min_requests:
        return None
    p99, primary_p99 = judged_p99_ms(canary), judged_p99_ms(primary)
    if p99 is None or p99 <= policy.max_p99_ratio * max(primary_p99 or 0.0, RATIO_FLOOR_MS):
        return None
    return (
        f"the canary's p99 {_ms(p99)} is above {policy.max_p99_ratio:g}x the primary's {_ms(primary_p99)}"
        " so far"
    )


def judged_p99_ms(observation: Observation) -> float | None:
    """The p99 the latency rules judge: the p99, but no more than the second-slowest request, so that a
    breach needs two requests above its bound (see the module doc). From 100 requests that is the p99
    itself; below 100 the p99 is the slowest request alone, and this is the second-slowest (a single
    request is judged alone: ``second_slowest_ms`` is None)."""
    p99, second = observation.p99_ms, observation.second_slowest_ms
    return p99 if p99 is None or second is None else min(p99, second)


def _unjudged(observation: Observation) -> str:
    """Says so when the slowest request was left out of the judged p99 (a note at the end of a reason:
    nothing for a breach of another kind, whose reason shows no p99)."""
    p99, judged = observation.p99_ms, judged_p99_ms(observation)
    if p99 is None or judged is None or judged >= p99:
        return ""
    return f" (the slowest request alone, {_ms(p99)}, is not judged)"


def _refuses_more(policy: Policy, canary: Observation, primary: Observation) -> bool:
    """Whether the canary refuses more requests as the caller's mistake than the primary in the same window,
    by more than ``max_error_rate`` and than chance explains (see the module doc). No decision while the
    primary has fewer than ``min_requests`` (``decide`` then holds a refusing canary instead)."""
    if primary.requests < policy.min_requests or canary.requests < policy.min_requests:
        return False
    excess = canary.caller_error_rate - primary.caller_error_rate
    if excess <= policy.max_error_rate:
        return False
    pooled = (canary.caller_errors + primary.caller_errors) / (canary.requests + primary.requests)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / canary.requests + 1.0 / primary.requests))
    return excess - policy.max_error_rate > CALLER_ERROR_Z * se


def _codes(observation: Observation) -> str:
    return "/".join(observation.caller_codes) or "no code"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"
