"""``aetherctl`` checks some flags against the control plane's own rules before any call (so that a bad
value is a usage error naming the flag), from copies that keep the modules holding the rules (SQLAlchemy,
grpc) out of its start. These tests keep each copy equal to its rule: a copy that drifted would refuse
what the server takes, or let through what it refuses."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import deployments_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.cli import deploy_values
from control_plane.cli.ingestion import QUARANTINE_STATUSES
from control_plane.deployments import canary
from control_plane.deployments.messages import policy_from_proto
from control_plane.deployments.traffic import check_share
from control_plane.ingestion import quarantine


def test_quarantine_statuses_are_the_servers_and_all() -> None:
    assert (*quarantine.STATUSES, "all") == QUARANTINE_STATUSES


def test_the_longest_bake_is_the_servers() -> None:
    assert deploy_values.MAX_BAKE_SECONDS == canary.MAX_BAKE_SECONDS


def _accepted(parse: object, text: str) -> bool:
    assert callable(parse)
    try:
        parse(text)
    except argparse.ArgumentTypeError:
        return False
    return True


def _server_accepts(check: object) -> bool:
    assert callable(check)
    try:
        check()
    except InvalidArgument:
        return False
    return True


#: Shares around the edges the rules draw: 0, the router's smallest share (0.01), 100, and beyond.
SHARES = st.one_of(
    st.sampled_from([0.0, 0.005, 0.01, 0.0100001, 50.0, 100.0, 100.0000001, -0.0, -1.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=0.02),
)


@given(SHARES)
def test_a_traffic_share_is_refused_exactly_where_the_server_refuses_it(share: float) -> None:
    assert _accepted(deploy_values.traffic_share, repr(share)) == _server_accepts(
        lambda: check_share(share, "traffic_percent")
    )


@given(st.lists(SHARES, min_size=1, max_size=5))
def test_canary_steps_are_refused_exactly_where_the_server_refuses_them(steps: list[float]) -> None:
    text = ",".join(repr(step) for step in steps)
    server = _server_accepts(lambda: policy_from_proto(pb.CanaryPolicy(steps_percent=steps)))
    assert _accepted(deploy_values.canary_steps, text) == server


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5, -0.1, 1.1, math.nan, math.inf])
def test_an_error_rate_is_refused_exactly_where_the_server_refuses_it(value: float) -> None:
    server = _server_accepts(lambda: policy_from_proto(pb.CanaryPolicy(max_error_rate=value)))
    assert _accepted(deploy_values.fraction, repr(value)) == server


@pytest.mark.parametrize("field", ["max_p99_latency_ms", "max_p99_ratio"])
@pytest.mark.parametrize("value", [0.0, 2.5, -1.0, math.nan, math.inf])
def test_p99_ceilings_are_refused_exactly_where_the_server_refuses_them(field: str, value: float) -> None:
    server = _server_accepts(lambda: policy_from_proto(pb.CanaryPolicy(**{field: value})))
    assert _accepted(deploy_values.non_negative, repr(value)) == server
