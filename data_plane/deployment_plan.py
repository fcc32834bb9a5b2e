"""Deployment plans as the data plane holds them: plain frozen values built from the control plane's
``DeploymentPlanSnapshot``, each carrying a :class:`ModelSpec` per variant so that nothing is looked up
anywhere else, and the plan's bucket table, computed once when the plan arrives (routing a request is
then one hash and two array lookups: see :mod:`data_plane.routing`)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import model_registry_pb2
from data_plane.feature_columns import request_names
from data_plane.models.spec import ModelSpec, TensorSpec
from kernels.hashing import BUCKETS, BucketHasher, assign_buckets, give_every_variant_a_bucket, mirror_mask

# Defaults of a ServingConfig whose fields are zero (the control plane fills them in; these cover an
# older control plane or a hand-built plan).
DEFAULT_WARMUP_REQUESTS = 10
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_QUEUE_DELAY_US = 2000  # uvloop timers are whole milliseconds: see data_plane.batching


class Role(enum.Enum):
    PRIMARY = "primary"
    CANARY = "canary"
    SHADOW = "shadow"


_ROLES = {
    pb.VARIANT_ROLE_PRIMARY: Role.PRIMARY,
    pb.VARIANT_ROLE_CANARY: Role.CANARY,
    pb.VARIANT_ROLE_SHADOW: Role.SHADOW,
}


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    role: Role
    # Primary and canary: share of live traffic in percent. Shadow: percent of requests mirrored.
    traffic_percent: float
    model: ModelSpec

    @property
    def live(self) -> bool:
        """Answers requests (as opposed to a shadow, which only gets mirrored copies)."""
        return self.role is not Role.SHADOW


@dataclass(frozen=True)
class DeploymentPlan:
    """One deployment's variants. ``bucket_variant[b]`` is the index into ``live_variants`` of the
    variant serving bucket ``b``; ``shadow_masks[i][b]`` says whether bucket ``b`` is mirrored to
    ``shadow_variants[i]``."""

    deployment: str
    plan_revision: int
    routing_salt: str
    variants: tuple[Variant, ...]
    live_variants: tuple[Variant, ...] = field(init=False)
    shadow_variants: tuple[Variant, ...] = field(init=False)
    primary: Variant = field(init=False)
    hasher: BucketHasher = field(init=False, repr=False, compare=False)
    bucket_variant: npt.NDArray[np.int16] = field(init=False, repr=False, compare=False)
    shadow_masks: tuple[npt.NDArray[np.bool_], ...] = field(init=False, repr=False, compare=False)
    #: By variant name: the request-time feature names the plan's *other* variants' models may read
    #: (:func:`data_plane.feature_columns.request_names`). A request's features are sent for whichever
    #: variant serves it and for the shadows, so the served model refuses only names none of them reads.
    others_read: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        live = tuple(v for v in self.variants if v.live)
        primaries = [v for v in live if v.role is Role.PRIMARY]
        if len(primaries) != 1:
            raise ValueError(f"deployment {self.deployment!r} has {len(primaries)} primary variants, not 1")
        shadows = tuple(v for v in self.variants if not v.live)
        names, weights = [v.name for v in live], [v.traffic_percent for v in live]
        table = give_every_variant_a_bucket(
            self.routing_salt, names, weights, assign_buckets(self.routing_salt, names, weights)
        )
        # Every weight zero cannot come from the control plane; serve everything from the primary then.
        table[table < 0] = live.index(primaries[0])
        set_ = object.__setattr__  # frozen: the derived fields are filled in once, here
        set_(self, "live_variants", live)
        set_(self, "shadow_variants", shadows)
        set_(self, "primary", primaries[0])
        set_(self, "hasher", BucketHasher(self.routing_salt, BUCKETS))
        set_(self, "bucket_variant", table)
        masks = tuple(mirror_mask(self.routing_salt, s.name, s.traffic_percent) for s in shadows)
        set_(self, "shadow_masks", masks)
        reads = {v.name: (v.model.key, request_names(v.model.feature_refs)) for v in self.variants}
        others = {
            name: frozenset().union(*(names for _, (key, names) in reads.items() if key != own))
            for name, (own, _) in reads.items()
        }
        set_(self, "others_read", others)

    def models(self) -> list[ModelSpec]:
        return [v.model for v in self.variants]


@dataclass(frozen=True)
class DeploymentPlans:
    """Every deployment's plan at one revision of the control plane's deployments."""

    revision: int
    plans: Mapping[str, DeploymentPlan]

    def get(self, deployment: str) -> DeploymentPlan | None:
        return self.plans.get(deployment)

    def model_specs(self) -> dict[tuple[str, int], ModelSpec]:
        """Every model version some plan references, by (name, version)."""
        return {spec.key: spec for plan in self.plans.values() for spec in plan.models()}


EMPTY_PLANS = DeploymentPlans(revision=0, plans={})


def _tensor(message: model_registry_pb2.TensorSpec) -> TensorSpec:
    return TensorSpec(name=message.name, dtype=message.dtype, shape=tuple(int(d) for d in message.shape))


def model_spec_from_proto(message: pb.ModelServingSpec) -> ModelSpec:
    serving = message.serving
    return ModelSpec(
        name=message.model_name,
        version=int(message.version),
        artifact_sha256=message.artifact_sha256,
        artifact_uri=message.artifact_uri,
        inputs=tuple(_tensor(t) for t in message.inputs),
        outputs=tuple(_tensor(t) for t in message.outputs),
        feature_refs=tuple(message.feature_refs),
        warmup_requests=serving.warmup_requests or DEFAULT_WARMUP_REQUESTS,
        max_batch_size=serving.max_batch_size or DEFAULT_MAX_BATCH_SIZE,
        max_queue_delay_us=serving.max_queue_delay_us or DEFAULT_MAX_QUEUE_DELAY_US,
        allow_non_finite=serving.allow_non_finite,
        missing_entity_policy=serving.missing_entity_policy or "error",
        feature_defaults=tuple(serving.feature_defaults),
    )


def _variants_from_proto(message: pb.DeploymentPlan) -> tuple[Variant, ...]:
    variants = []
    for planned in message.variants:
        role = _ROLES.get(planned.role)
        if role is None:
            raise ValueError(f"deployment {message.deployment!r} variant {planned.name!r} has no role")
        variants.append(
            Variant(planned.name, role, float(planned.traffic_percent), model_spec_from_proto(planned.model))
        )
    return tuple(variants)


def plan_from_proto(message: pb.DeploymentPlan) -> DeploymentPlan:
    return DeploymentPlan(
        deployment=message.deployment,
        plan_revision=int(message.plan_revision),
        routing_salt=message.routing_salt or message.deployment,
        variants=_variants_from_proto(message),
    )


def _same_plan(kept: DeploymentPlan, message: pb.DeploymentPlan) -> bool:
    """Whether ``message`` plans exactly what ``kept`` does. The revision alone does not tell: a control
    plane whose revisions restarted (a fresh database, a restore from a backup) hands out the same revision
    numbers again for other content. Building the variants is cheap; the bucket tables are what is saved."""
    return (
        kept.plan_revision == message.plan_revision
        and kept.routing_salt == (message.routing_salt or message.deployment)
        and kept.variants == _variants_from_proto(message)
    )


def plans_from_snapshot(
    snapshot: pb.DeploymentPlanSnapshot, previous: DeploymentPlans | None = None
) -> DeploymentPlans:
    """The plans of ``snapshot``; a plan of ``previous`` whose revision and content are both unchanged is
    reused, so its bucket tables are not recomputed."""
    plans: dict[str, DeploymentPlan] = {}
    for message in snapshot.plans:
        kept = previous.get(message.deployment) if previous is not None else None
        if kept is not None and _same_plan(kept, message):
            plans[message.deployment] = kept
        else:
            plans[message.deployment] = plan_from_proto(message)
    return DeploymentPlans(revision=int(snapshot.revision), plans=plans)


def referenced_models(plans: Iterable[DeploymentPlan]) -> set[tuple[str, int]]:
    return {spec.key for plan in plans for spec in plan.models()}
