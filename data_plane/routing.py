"""The router: which variant of a deployment answers a request, and which shadows get a mirrored copy.
Pure and synchronous: a plan and a routing key in, variants out (the bucket tables are precomputed per
plan in :mod:`data_plane.deployment_plan`; the hashing and its guarantees are in
:mod:`kernels.hashing`).

The same routing key always lands in the same bucket of a deployment, so a user sees one variant for as
long as the traffic split leaves their bucket where it is; callers without a natural routing key (a user
or session id) pass the request id, which spreads such requests by the weights."""

from __future__ import annotations

from dataclasses import dataclass

from data_plane.deployment_plan import DeploymentPlan, Variant


@dataclass(frozen=True, slots=True)
class RoutedVariants:
    #: The variant whose answer is returned (the deployment's primary or a canary).
    primary: Variant
    #: Shadows to mirror the request to; their answers are logged with the request id, never returned.
    shadows: tuple[Variant, ...]
    bucket: int


def choose_variant(plan: DeploymentPlan, routing_key: str) -> RoutedVariants:
    return route_bucket(plan, plan.hasher.bucket(routing_key))


def route_bucket(plan: DeploymentPlan, bucket: int) -> RoutedVariants:
    served = plan.live_variants[int(plan.bucket_variant[bucket])]
    if not plan.shadow_variants:
        return RoutedVariants(served, (), bucket)
    shadows = tuple(
        shadow for shadow, mask in zip(plan.shadow_variants, plan.shadow_masks, strict=True) if mask[bucket]
    )
    return RoutedVariants(served, shadows, bucket)
