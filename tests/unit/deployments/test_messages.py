"""Canary policies between the wire, the pure decision and the row's JSON: an unset threshold takes its
default, while an explicit 0 in the two optional ones is a rule of its own and survives storage."""

from __future__ import annotations

import pytest

from clients.aether.v1 import deployments_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.deployments.canary import (
    DEFAULT_MAX_ERROR_RATE,
    DEFAULT_MAX_P99_RATIO,
    MAX_BAKE_SECONDS,
    Action,
    Observation,
)
from control_plane.deployments.messages import policy_from_proto, policy_of, policy_to_proto, to_json
from control_plane.deployments.tables import DeploymentRow
from tests.unit.deployments.decisions import decide_fresh

PRIMARY = Observation(requests=5000, errors=0, p99_ms=20.0)


def stored(message: pb.CanaryPolicy) -> pb.CanaryPolicy:
    """The policy as the core stores it in the row and reads it back."""
    return policy_to_proto(policy_of(DeploymentRow(canary_policy=to_json(message))))


def test_unset_thresholds_take_the_defaults() -> None:
    policy = policy_from_proto(pb.CanaryPolicy())
    assert (policy.max_error_rate, policy.max_p99_ratio) == (DEFAULT_MAX_ERROR_RATE, DEFAULT_MAX_P99_RATIO)
    assert stored(policy_to_proto(policy)).max_p99_ratio == DEFAULT_MAX_P99_RATIO


def test_a_zero_ratio_turns_off_the_comparison_with_the_primary() -> None:
    # No comparison, an absolute ceiling instead: a canary at 40 ms, twice the primary, is under 100 ms.
    message = pb.CanaryPolicy(max_p99_ratio=0.0, max_p99_latency_ms=100.0, min_requests=100)
    kept = stored(policy_to_proto(policy_from_proto(message)))
    assert kept.HasField("max_p99_ratio") and kept.max_p99_ratio == 0.0
    decision = decide_fresh(policy_from_proto(kept), 0, 10.0, Observation(500, 0, 40.0), PRIMARY)
    assert decision.action is Action.HOLD, decision.reason


def test_a_zero_error_rate_rolls_back_on_any_failed_request() -> None:
    message = pb.CanaryPolicy(max_error_rate=0.0, min_requests=100)
    kept = stored(policy_to_proto(policy_from_proto(message)))
    assert kept.HasField("max_error_rate") and kept.max_error_rate == 0.0
    decision = decide_fresh(policy_from_proto(kept), 0, 10.0, Observation(500, 1, 10.0), PRIMARY)
    assert decision.action is Action.ROLLBACK
    assert decision.reason == "error rate 0.20% above 0.00% at 5% over 500 requests"


def test_bake_seconds_stays_a_whole_number_and_an_oversized_one_is_refused() -> None:
    # bake_seconds went through a float: 2**63 - 1 came back as 2**63, which no int64 holds, and the
    # call failed with INTERNAL instead of naming the field.
    assert stored(pb.CanaryPolicy(bake_seconds=MAX_BAKE_SECONDS)).bake_seconds == MAX_BAKE_SECONDS
    for bake in (2**63 - 1, MAX_BAKE_SECONDS + 1):
        with pytest.raises(InvalidArgument, match=f"canary bake_seconds must be from 0 to .*not {bake}"):
            policy_from_proto(pb.CanaryPolicy(bake_seconds=bake))
