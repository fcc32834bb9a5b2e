"""Which model versions of a deployment the monitor looks at: those whose drift reports make its gauges,
and those whose outputs its prediction-output check reads."""

from __future__ import annotations

from clients.aether.v1 import deployments_pb2 as dpb
from control_plane.monitoring.served import checked_variants, gauged_versions


def variant(name: str, version: int, role: dpb.VariantRole, percent: float) -> dpb.Variant:
    return dpb.Variant(name=name, model_name="m", version=version, role=role, traffic_percent=percent)


def test_a_canary_at_no_traffic_is_neither_gauged_nor_checked() -> None:
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
    assert gauged_versions(parked) == [("m", 1)]
    assert [v.name for v in checked_variants(parked)] == ["main"]


def test_a_primary_at_no_traffic_is_checked_but_not_gauged() -> None:
    # A primary at 0 % (its canary took all the traffic) gets no new windows: its last DRIFT report held
    # aether_drift_detected at 1 for good. It still answers the calls naming its model, so its outputs
    # are still checked.
    handed_over = dpb.Deployment(
        name="fraud",
        variants=[
            variant("main", 1, dpb.VARIANT_ROLE_PRIMARY, 0.0),
            variant("next", 2, dpb.VARIANT_ROLE_CANARY, 100.0),
            variant("other", 3, dpb.VARIANT_ROLE_CANARY, 0.0),
        ],
    )
    assert gauged_versions(handed_over) == [("m", 2)]
    assert [v.name for v in checked_variants(handed_over)] == ["main", "next"]


def test_the_primary_is_gauged_when_no_variant_holds_traffic() -> None:
    # The router serves everything from the primary when no live variant has weight.
    alone = dpb.Deployment(
        name="fraud",
        variants=[
            variant("main", 1, dpb.VARIANT_ROLE_PRIMARY, 0.0),
            variant("parked", 2, dpb.VARIANT_ROLE_CANARY, 0.0),
        ],
    )
    assert gauged_versions(alone) == [("m", 1)]
