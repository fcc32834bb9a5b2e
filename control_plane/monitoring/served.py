"""The model versions whose answers a deployment serves, as its plan says now: its primary, and its
canary variants with a share of traffic above 0. A shadow's answers are logged but never returned, and
the monitor skips them (:mod:`.entries`), so a shadow version has no say in what the monitor shows or
checks; nor has a canary parked at 0 % (a supported state: another canary is promoted only while none
holds traffic, :func:`control_plane.deployments.traffic.promote`), which answers no request. The primary
serves at any share: at 0 % (its canary took all the traffic) it still answers the calls that name its
model rather than the deployment, and the router gives it every bucket when no live variant has weight.

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


def serves(variant: dpb.Variant) -> bool:
    """Whether ``variant``'s answers are returned: the primary's always, a canary's while it has a share
    of traffic (parked at 0 % its last report kept its features on /metrics for good), a shadow's never."""
    if variant.role == dpb.VARIANT_ROLE_PRIMARY:
        return True
    return variant.role == dpb.VARIANT_ROLE_CANARY and variant.traffic_percent > 0.0


def served_variants(deployment: dpb.Deployment) -> list[dpb.Variant]:
    """The variants of ``deployment`` whose answers are served (:func:`serves`), in plan order."""
    return [variant for variant in deployment.variants if serves(variant)]


def served_versions(deployment: dpb.Deployment) -> list[Version]:
    """The (model, version) of each variant of ``deployment`` whose answers are served, in plan order,
    each once."""
    served = ((variant.model_name, int(variant.version)) for variant in served_variants(deployment))
    return list(dict.fromkeys(served))


def role_name(variant: dpb.Variant) -> str:
    """``primary``, ``canary`` or ``shadow``, as users name the roles."""
    return dpb.VariantRole.Name(variant.role).removeprefix("VARIANT_ROLE_").lower()


def served_now(lookup: DeploymentLookup, name: str) -> frozenset[Version]:
    """The versions deployment ``name`` serves now; none once it was deleted."""
    try:
        return frozenset(served_versions(lookup(name)))
    except NotFound:
        return frozenset()
