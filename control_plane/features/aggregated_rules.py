"""Validation rules of a streaming view's aggregated features, as rules on the events they aggregate.

A streaming view ingests raw events, but its features' rules speak of the aggregates, and the retraining
data-window check applies them to the stored aggregate rows. A rule on an aggregate is therefore enforced
at ingestion on each event's source field, by a rule under which *every* window's aggregate satisfies
the feature's rule; an event breaking it is quarantined. Each window holds at least the event it is
evaluated at (windows end at the entity's newest event, ``kernels/windows.py``), and any event can be
alone in its window (after a gap longer than the window), so the input rule below is also the weakest
rule on single events that is sound:

* ``mean``, ``min``, ``max``, ``last``: a range rule holds for every window iff every event is in the
  range (each of them lies between the smallest and the largest value of its window; the kernel keeps a
  mean there, see ``kernels/windows.py``). Categories on ``min``, ``max`` and ``last`` too (each is one of
  its window's values);
* ``sum``: a lower bound >= 0 holds iff every event is at or above it (the sum of values >= 0 is at least
  each of them, in floating point too: rounding is monotone); likewise an upper bound <= 0. A lower
  bound below 0 (or an upper bound above 0) has no such rule: events each within it can sum beyond it;
* ``count``: at least 1, whatever the events. A minimum up to 1 holds; any other rule on a count
  (a larger minimum, a maximum, categories) depends on how many events arrive, not on any one of them.

A rule that cannot be enforced so is refused when the view is defined (:func:`rule_problem`); a view
stored before that refusal keeps its rule. Ingestion then enforces each part of it that single events
can keep and leaves out only the others (:func:`input_rules`: of a sum's {min: 0, max: 100}, min 0 is
held on each event, max 100 is not; dropping the whole rule let an event of -5 through, which broke the
stored sum's min 0 too), and the retraining check still applies the whole rule to the stored rows.
``max_null_fraction`` speaks of the stored aggregates (never null: a window is never empty) and gives
events no rule: an event field an aggregation reads is always required.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clients.aether.v1 import feature_registry_pb2 as pb

#: Functions whose result is one of the window's values: categories of the result hold for each event.
_PICKS = ("min", "max", "last")


@dataclass(frozen=True)
class InputRule:
    """A rule on event field ``field`` that keeps aggregate feature ``feature`` within its own rule."""

    field: str
    rule: pb.ValidationRule  # min_value / max_value / allowed_values only
    feature: str
    aggregation: str  # how the feature is made, for reasons: "mean of fare over 1h"


def describe(aggregation: pb.Aggregation) -> str:
    return f"{aggregation.function} of {aggregation.column!r} over {_window(aggregation.window_seconds)}"


def rule_problem(aggregation: pb.Aggregation, rule: pb.ValidationRule) -> str | None:
    """Why ``rule``, on the output of ``aggregation``, cannot be enforced on single events (None when it
    can). Bounds no value can cross (a min of -inf, a max of +inf) are no rule."""
    low, high = _bound(rule, "min_value"), _bound(rule, "max_value")
    function = aggregation.function
    if function == "count":
        if low is not None and low > 1:
            return (
                f"a min_value above 1 on a count depends on how many events arrive in a window, which no"
                f" single event decides (a window may hold just one), got {low:g}"
            )
        if high is not None:
            return "a max_value on a count depends on how many events arrive, which no single event decides"
        if rule.allowed_values:
            return "allowed_values on a count depend on how many events arrive, which no single event decides"
        return None
    if function == "sum":
        if low is not None and low < 0:
            return (
                f"a min_value below 0 on a sum cannot be kept by each event: events each at or above"
                f" {low:g} can sum below it (a lower bound of 0 or more can)"
            )
        if high is not None and high > 0:
            return (
                f"a max_value above 0 on a sum cannot be kept by each event: events each at or below"
                f" {high:g} can sum above it (an upper bound of 0 or less can)"
            )
        if rule.allowed_values:
            return "allowed_values on a sum cannot be kept by each event: a sum of them need not be one"
        return None
    if rule.allowed_values and function not in _PICKS:
        return f"allowed_values on a {function} cannot be kept by each event: it need not be one of them"
    return None


def input_rules(spec: pb.FeatureViewSpec) -> list[InputRule]:
    """The event rules that enforce the rules of ``spec``'s aggregated features: every bound and category
    list single events can keep (see the module docstring). A rule with a :func:`rule_problem` (stored
    before such rules were refused) gives its enforceable parts all the same, only the others left out."""
    rules = {feature.name: feature.validation for feature in spec.features}
    found = []
    for aggregation in spec.aggregations:
        rule = rules.get(aggregation.output)
        if rule is None or aggregation.function == "count":  # a count's keepable min (<= 1) always holds
            continue
        derived = pb.ValidationRule()
        for field in ("min_value", "max_value"):
            bound = _bound(rule, field)
            if bound is not None and _kept_by_each_event(aggregation.function, field, bound):
                setattr(derived, field, bound)
        if aggregation.function in _PICKS:
            derived.allowed_values.extend(rule.allowed_values)
        if derived.HasField("min_value") or derived.HasField("max_value") or derived.allowed_values:
            found.append(InputRule(aggregation.column, derived, aggregation.output, describe(aggregation)))
    return found


def _kept_by_each_event(function: str, field: str, bound: float) -> bool:
    """Whether every window's ``function`` keeps ``bound`` (a ``min_value`` or ``max_value``) when each
    event does. Only a sum's can fail: a lower bound below 0, or an upper bound above 0 (as in
    :func:`rule_problem`)."""
    if function != "sum":
        return True
    return bound >= 0 if field == "min_value" else bound <= 0


def _bound(rule: pb.ValidationRule, field: str) -> float | None:
    """A bound of ``rule`` that some value can cross (an infinite min or max limits nothing)."""
    if not rule.HasField(field):
        return None
    value: float = getattr(rule, field)
    return None if math.isinf(value) and (value < 0) == (field == "min_value") else value


def _window(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
