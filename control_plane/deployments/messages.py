"""Conversions between the wire messages, the plain values of the pure modules and the table rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.errors import InvalidArgument
from clients.serving_rules import MAX_WARMUP_REQUESTS, default_problem, share_problem
from control_plane.deployments.canary import DEFAULT_STEPS, Policy
from control_plane.deployments.tables import DeploymentRow, DeploymentVariantRow
from control_plane.deployments.traffic import Role, VariantRecord, check_model_name, default_variant_name

DEFAULT_WARMUP_REQUESTS = 10
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_QUEUE_DELAY_US = 2000  # uvloop timers are whole milliseconds: see data_plane.batching
MISSING_ENTITY_POLICIES = ("error", "defaults")

_ROLE_FROM_PROTO = {
    pb.VARIANT_ROLE_PRIMARY: Role.PRIMARY,
    pb.VARIANT_ROLE_CANARY: Role.CANARY,
    pb.VARIANT_ROLE_SHADOW: Role.SHADOW,
}
ROLE_TO_PROTO = {role: value for value, role in _ROLE_FROM_PROTO.items()}


def variant_from_proto(message: pb.Variant) -> VariantRecord:
    role = _ROLE_FROM_PROTO.get(message.role)
    if role is None:
        raise InvalidArgument(
            f"variant {message.name or message.model_name!r} needs a role (primary, canary, shadow)"
        )
    check_model_name(message.model_name)  # before the default variant name is built from it
    return VariantRecord(
        name=message.name or default_variant_name(message.model_name, int(message.version)),
        model_name=message.model_name,
        version=int(message.version),
        role=role,
        traffic_percent=float(message.traffic_percent),
    )


def variant_to_proto(variant: VariantRecord) -> pb.Variant:
    return pb.Variant(
        name=variant.name,
        model_name=variant.model_name,
        version=variant.version,
        role=ROLE_TO_PROTO[variant.role],
        traffic_percent=variant.traffic_percent,
    )


def variant_from_row(row: DeploymentVariantRow) -> VariantRecord:
    return VariantRecord(row.name, row.model_name, row.version, Role(row.role), row.traffic_percent)


def policy_from_proto(message: pb.CanaryPolicy) -> Policy:
    """A policy a client sent (:func:`stored_policy`), with a step below 100 % (a canary starts at the
    first step and is promoted on reaching 100 %: with none below, StartCanary refused every canary,
    for a policy CreateDeployment, UpdateDeployment or a retraining config had stored), and each step a
    share the router can serve: at least one of its buckets (:func:`clients.serving_rules.share_problem`).
    A step under it got no requests, and the controller waited for them for ever."""
    policy = stored_policy(message)
    if policy.steps_percent[0] >= 100.0:
        raise InvalidArgument(
            "canary steps need one below 100% (where a canary starts; 100% is its promotion),"
            f" not {list(policy.steps_percent)}"
        )
    for step in policy.steps_percent:
        problem = share_problem(step)
        if problem is not None:
            raise InvalidArgument(f"canary step {step:g}% is {problem}")
    return policy


def stored_policy(message: pb.CanaryPolicy) -> Policy:
    """The policy with zero fields taken as the defaults (and checked). The optional fields go by
    presence instead: there 0 is a rule of its own (no bake; no error tolerated; no comparison with the
    primary). Without the minimum step of :func:`policy_from_proto`: a policy stored before that rule
    still reads."""
    defaults = Policy()
    return Policy(
        steps_percent=tuple(message.steps_percent) or DEFAULT_STEPS,
        bake_seconds=int(message.bake_seconds) if message.HasField("bake_seconds") else defaults.bake_seconds,
        max_error_rate=(
            message.max_error_rate if message.HasField("max_error_rate") else defaults.max_error_rate
        ),
        max_p99_latency_ms=message.max_p99_latency_ms,
        max_p99_ratio=message.max_p99_ratio if message.HasField("max_p99_ratio") else defaults.max_p99_ratio,
        min_requests=int(message.min_requests) or defaults.min_requests,
    )


def policy_to_proto(policy: Policy) -> pb.CanaryPolicy:
    """The optional fields are always set, so a 0 survives the JSON the row keeps and reads back as 0, not
    as the default."""
    return pb.CanaryPolicy(
        steps_percent=list(policy.steps_percent),
        bake_seconds=policy.bake_seconds,
        max_error_rate=policy.max_error_rate,
        max_p99_latency_ms=policy.max_p99_latency_ms,
        max_p99_ratio=policy.max_p99_ratio,
        min_requests=policy.min_requests,
    )


def serving_with_defaults(message: pb.ServingConfig) -> pb.ServingConfig:
    policy = message.missing_entity_policy or "error"
    if policy not in MISSING_ENTITY_POLICIES:
        raise InvalidArgument(
            f"missing_entity_policy must be one of {MISSING_ENTITY_POLICIES}, not {policy!r}"
        )
    bad = next((v for v in message.feature_defaults if not math.isfinite(v)), None)
    if bad is not None:
        raise InvalidArgument(f"serving feature_defaults must be finite numbers, not {bad!r}")
    for value, what in (
        (message.warmup_requests, "warmup_requests"),
        (message.max_batch_size, "max_batch_size"),
        (message.max_queue_delay_us, "max_queue_delay_us"),
    ):
        if value < 0:
            raise InvalidArgument(f"serving {what} must not be negative, not {value}")
    if message.warmup_requests > MAX_WARMUP_REQUESTS:  # the data plane would refuse to load the version
        raise InvalidArgument(
            f"serving warmup_requests must be at most {MAX_WARMUP_REQUESTS}, not {message.warmup_requests}"
        )
    return pb.ServingConfig(
        warmup_requests=message.warmup_requests or DEFAULT_WARMUP_REQUESTS,
        max_batch_size=message.max_batch_size or DEFAULT_MAX_BATCH_SIZE,
        max_queue_delay_us=message.max_queue_delay_us or DEFAULT_MAX_QUEUE_DELAY_US,
        allow_non_finite=message.allow_non_finite,
        missing_entity_policy=policy,
        feature_defaults=list(message.feature_defaults),
    )


def defaults_must_fit(version: mpb.ModelVersion, serving: pb.ServingConfig) -> None:
    """``serving``'s feature defaults fill the Predict input of ``version``: values its dtype holds, and
    as many as its features when its signature says how many (one input of shape [batch, N]). Else the
    data plane fails the version at load, after the deployment was accepted."""
    defaults = serving.feature_defaults
    inputs = version.signature.inputs
    if not defaults or len(inputs) != 1:
        return
    for index, value in enumerate(defaults):  # each is cast to the input's dtype (clients.serving_rules)
        if holds := default_problem(value, inputs[0].dtype):
            raise InvalidArgument(
                f"serving feature_defaults[{index}] is {value!r}, but model {version.model_name!r} version"
                f" {version.version} takes {inputs[0].dtype} (input {inputs[0].name!r}): {holds}"
            )
    if len(inputs[0].shape) != 2 or inputs[0].shape[1] <= 0:
        return
    width = inputs[0].shape[1]
    if len(defaults) != width:
        raise InvalidArgument(
            f"serving feature_defaults: {len(defaults)} values, but model {version.model_name!r} version"
            f" {version.version} takes {width} features (input {inputs[0].name!r})"
        )


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def serving_of(row: DeploymentRow) -> pb.ServingConfig:
    return json_format.ParseDict(row.serving, pb.ServingConfig())


def policy_of(row: DeploymentRow) -> Policy:
    return stored_policy(json_format.ParseDict(row.canary_policy, pb.CanaryPolicy()))


def canary_of(row: DeploymentRow) -> pb.CanaryState:
    return json_format.ParseDict(row.canary_state, pb.CanaryState())


def deployment_message(row: DeploymentRow, variants: Sequence[VariantRecord]) -> pb.Deployment:
    return pb.Deployment(
        name=row.name,
        description=row.description,
        routing_salt=row.routing_salt,
        variants=[variant_to_proto(v) for v in variants],
        serving=serving_of(row),
        canary_policy=policy_to_proto(policy_of(row)),
        canary=canary_of(row),
        plan_revision=row.plan_revision,
        created_by=row.created_by,
        created_at_us=row.created_at_us,
        updated_at_us=row.updated_at_us,
    )


def audit_state(message: pb.Deployment) -> dict[str, Any]:
    """What the audit log keeps of a deployment: everything but the timestamps."""
    state = to_json(message)
    for key in ("created_at_us", "updated_at_us"):
        state.pop(key, None)
    return state
