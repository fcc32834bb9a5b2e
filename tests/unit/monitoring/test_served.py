"""Which model versions a deployment serves, for the monitor's gauges and its prediction-output check:
the versions whose answers are returned to callers."""

from __future__ import annotations

from clients.aether.v1 import deployments_pb2 as dpb
from control_plane.monitoring.served import served_versions


def variant(name: str, version: int, role: dpb.VariantRole, percent: float) -> dpb.Variant:
    return dpb.Variant(name=name, model_name="m", version=version, role=role, traffic_percent=percent)


def test_a_canary_at_no_traffic_serves_nothing() -> None:
    # A canary parked at 0 % (another canary can be promoted only then) answers no request, but counted
    # as served: its last report's features stayed on /metrics for good.
    parked = dpb.Deployment(
        name="fraud",
        variants=[
            variant("main", 1, dpb.VARIANT_ROLE_PRIMARY, 100.0),
            variant("parked", 2, dpb.VARIANT_ROLE_CANARY, 0.0),
            variant("mirror", 3, dpb.VARIANT_ROLE_SHADOW, 50.0),
        ],
    )
    assert served_versions(parked) == [("m", 1)]


def test_a_primary_serves_at_any_share() -> None:
    # A primary at 0 % (its canary took all the traffic) still answers the calls naming its model, and
    # the router's buckets when no weight is set.
    handed_over = dpb.Deployment(
        name="fraud",
        variants=[
            variant("main", 1, dpb.VARIANT_ROLE_PRIMARY, 0.0),
            variant("next", 2, dpb.VARIANT_ROLE_CANARY, 100.0),
            variant("other", 3, dpb.VARIANT_ROLE_CANARY, 0.0),
        ],
    )
    assert served_versions(handed_over) == [("m", 1), ("m", 2)]
