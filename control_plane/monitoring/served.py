"""The model versions of a deployment that matter to the monitor, as its plan says now. Two rules, for two
uses:

* :func:`checked_variants`, the prediction-output check (:mod:`.model_outputs`): every variant whose
  answers may be returned, the primary at any share (at 0 %, its canary holding all the traffic, it still
  answers the calls that name its model rather than the deployment, and the router gives it every bucket
  when no live variant has weight, so a config its model cannot read must be refused now) and the
  canaries holding traffic;
* :func:`gauged_versions`, the versions whose newest drift report makes the deployment's gauges and
  alerts (:mod:`.gauges`, :mod:`.monitor`): those holding traffic, primary or canary, and the primary
  alone only when none does (the router then serves everything from it). A primary at 0 % gets no new
  windows, so its last report, a DRIFT that the canary moved to 100 % was there to fix, set
  ``aether_drift_detected`` 1 for good over the canary's NO_DRIFT.

Neither counts a shadow: its answers are logged but never returned, and the monitor skips them
(:mod:`.entries`); nor a canary parked at 0 % (a supported state: another canary is promoted only while
none holds traffic, :func:`control_plane.deployments.traffic.promote`), which answers no request.

The deployment comes from a lookup the caller wires in (the server's deployments core): the monitoring
core reads no deployments table itself (:mod:`.history`).
"""

from __future__ import annotations

from collections.abc import Callable

from clients.aether.v1 import deployments_pb2 as dpb
from clients.errors import NotFound

Version = tuple[str, int]  # model name, version
#: Looks a deployment up by name, raising ``NotFound`` for an unknown one (``DeploymentManager.get``).
DeploymentLookup = Callable[[str], dpb.Deployment]


def _holds_traffic(variant: dpb.Variant) -> bool:
    live = variant.role in (dpb.VARIANT_ROLE_PRIMARY, dpb.VARIANT_ROLE_CANARY)
    return live and variant.traffic_percent > 0.0


def checked_variants(deployment: dpb.Deployment) -> list[dpb.Variant]:
    """The variants of ``deployment`` whose model the prediction-output check reads, in plan order: the
    primary at any share, the canaries holding traffic."""
    return [
        variant
        for variant in deployment.variants
        if variant.role == dpb.VARIANT_ROLE_PRIMARY or _holds_traffic(variant)
    ]


def gauged_versions(deployment: dpb.Deployment) -> list[Version]:
    """The (model, version) of each variant of ``deployment`` whose drift reports make its gauges, in
    plan order, each once: those holding traffic, else the primary."""
    chosen = [variant for variant in deployment.variants if _holds_traffic(variant)]
    if not chosen:
        chosen = [v for v in deployment.variants if v.role == dpb.VARIANT_ROLE_PRIMARY]
    return list(dict.fromkeys((variant.model_name, int(variant.version)) for variant in chosen))


def role_name(variant: dpb.Variant) -> str:
    """``primary``, ``canary`` or ``shadow``, as users name the roles."""
    return dpb.VariantRole.Name(variant.role).removeprefix("VARIANT_ROLE_").lower()


def gauged_now(lookup: DeploymentLookup, name: str) -> frozenset[Version]:
    """The versions whose drift reports make deployment ``name``'s gauges now (:func:`gauged_versions`);
    none once it was deleted."""
    try:
        return frozenset(gauged_versions(lookup(name)))
    except NotFound:
        return frozenset()
