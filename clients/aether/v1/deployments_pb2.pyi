from clients.aether.v1 import model_registry_pb2 as _model_registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VariantRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VARIANT_ROLE_UNSPECIFIED: _ClassVar[VariantRole]
    VARIANT_ROLE_PRIMARY: _ClassVar[VariantRole]
    VARIANT_ROLE_CANARY: _ClassVar[VariantRole]
    VARIANT_ROLE_SHADOW: _ClassVar[VariantRole]

class CanaryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANARY_STATUS_UNSPECIFIED: _ClassVar[CanaryStatus]
    CANARY_STATUS_PROGRESSING: _ClassVar[CanaryStatus]
    CANARY_STATUS_PROMOTED: _ClassVar[CanaryStatus]
    CANARY_STATUS_ROLLED_BACK: _ClassVar[CanaryStatus]
VARIANT_ROLE_UNSPECIFIED: VariantRole
VARIANT_ROLE_PRIMARY: VariantRole
VARIANT_ROLE_CANARY: VariantRole
VARIANT_ROLE_SHADOW: VariantRole
CANARY_STATUS_UNSPECIFIED: CanaryStatus
CANARY_STATUS_PROGRESSING: CanaryStatus
CANARY_STATUS_PROMOTED: CanaryStatus
CANARY_STATUS_ROLLED_BACK: CanaryStatus

class Variant(_message.Message):
    __slots__ = ("name", "model_name", "version", "role", "traffic_percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_name: str
    version: int
    role: VariantRole
    traffic_percent: float
    def __init__(self, name: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., role: _Optional[_Union[VariantRole, str]] = ..., traffic_percent: _Optional[float] = ...) -> None: ...

class ServingConfig(_message.Message):
    __slots__ = ("warmup_requests", "max_batch_size", "max_queue_delay_us", "allow_non_finite", "missing_entity_policy", "feature_defaults")
    WARMUP_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NON_FINITE_FIELD_NUMBER: _ClassVar[int]
    MISSING_ENTITY_POLICY_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    warmup_requests: int
    max_batch_size: int
    max_queue_delay_us: int
    allow_non_finite: bool
    missing_entity_policy: str
    feature_defaults: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, warmup_requests: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_queue_delay_us: _Optional[int] = ..., allow_non_finite: _Optional[bool] = ..., missing_entity_policy: _Optional[str] = ..., feature_defaults: _Optional[_Iterable[float]] = ...) -> None: ...

class CanaryPolicy(_message.Message):
    __slots__ = ("steps_percent", "bake_seconds", "max_error_rate", "max_p99_latency_ms", "max_p99_ratio", "min_requests")
    STEPS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    BAKE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    steps_percent: _containers.RepeatedScalarFieldContainer[float]
    bake_seconds: int
    max_error_rate: float
    max_p99_latency_ms: float
    max_p99_ratio: float
    min_requests: int
    def __init__(self, steps_percent: _Optional[_Iterable[float]] = ..., bake_seconds: _Optional[int] = ..., max_error_rate: _Optional[float] = ..., max_p99_latency_ms: _Optional[float] = ..., max_p99_ratio: _Optional[float] = ..., min_requests: _Optional[int] = ...) -> None: ...

class CanaryState(_message.Message):
    __slots__ = ("status", "variant", "model_name", "version", "step_index", "traffic_percent", "step_started_at_us", "reason", "updated_at_us")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    status: CanaryStatus
    variant: str
    model_name: str
    version: int
    step_index: int
    traffic_percent: float
    step_started_at_us: int
    reason: str
    updated_at_us: int
    def __init__(self, status: _Optional[_Union[CanaryStatus, str]] = ..., variant: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., step_index: _Optional[int] = ..., traffic_percent: _Optional[float] = ..., step_started_at_us: _Optional[int] = ..., reason: _Optional[str] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "description", "routing_salt", "variants", "serving", "canary_policy", "canary", "plan_revision", "created_by", "created_at_us", "updated_at_us")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ROUTING_SALT_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CANARY_POLICY_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    PLAN_REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    routing_salt: str
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    serving: ServingConfig
    canary_policy: CanaryPolicy
    canary: CanaryState
    plan_revision: int
    created_by: str
    created_at_us: int
    updated_at_us: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., routing_salt: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., serving: _Optional[_Union[ServingConfig, _Mapping]] = ..., canary_policy: _Optional[_Union[CanaryPolicy, _Mapping]] = ..., canary: _Optional[_Union[CanaryState, _Mapping]] = ..., plan_revision: _Optional[int] = ..., created_by: _Optional[str] = ..., created_at_us: _Optional[int] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class CreateDeploymentRequest(_message.Message):
    __slots__ = ("name", "description", "variants", "serving", "canary_policy", "routing_salt")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CANARY_POLICY_FIELD_NUMBER: _ClassVar[int]
    ROUTING_SALT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    serving: ServingConfig
    canary_policy: CanaryPolicy
    routing_salt: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., serving: _Optional[_Union[ServingConfig, _Mapping]] = ..., canary_policy: _Optional[_Union[CanaryPolicy, _Mapping]] = ..., routing_salt: _Optional[str] = ...) -> None: ...

class UpdateDeploymentRequest(_message.Message):
    __slots__ = ("name", "description", "replace_variants", "variants", "serving", "canary_policy", "routing_salt")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REPLACE_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CANARY_POLICY_FIELD_NUMBER: _ClassVar[int]
    ROUTING_SALT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    replace_variants: bool
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    serving: ServingConfig
    canary_policy: CanaryPolicy
    routing_salt: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., replace_variants: _Optional[bool] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., serving: _Optional[_Union[ServingConfig, _Mapping]] = ..., canary_policy: _Optional[_Union[CanaryPolicy, _Mapping]] = ..., routing_salt: _Optional[str] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("name_prefix", "page_size", "page_token")
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name_prefix: str
    page_size: int
    page_token: str
    def __init__(self, name_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteDeploymentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetTrafficRequest(_message.Message):
    __slots__ = ("name", "variant", "traffic_percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    variant: str
    traffic_percent: float
    def __init__(self, name: _Optional[str] = ..., variant: _Optional[str] = ..., traffic_percent: _Optional[float] = ...) -> None: ...

class StartCanaryRequest(_message.Message):
    __slots__ = ("name", "model_name", "version", "variant", "policy", "expected_plan_revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_PLAN_REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_name: str
    version: int
    variant: str
    policy: CanaryPolicy
    expected_plan_revision: int
    def __init__(self, name: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., variant: _Optional[str] = ..., policy: _Optional[_Union[CanaryPolicy, _Mapping]] = ..., expected_plan_revision: _Optional[int] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("name", "variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    variant: str
    def __init__(self, name: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name", "variant", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    variant: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., variant: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelServingSpec(_message.Message):
    __slots__ = ("model_name", "version", "artifact_sha256", "artifact_uri", "inputs", "outputs", "feature_refs", "serving")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_REFS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    artifact_sha256: str
    artifact_uri: str
    inputs: _containers.RepeatedCompositeFieldContainer[_model_registry_pb2.TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[_model_registry_pb2.TensorSpec]
    feature_refs: _containers.RepeatedScalarFieldContainer[str]
    serving: ServingConfig
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., artifact_sha256: _Optional[str] = ..., artifact_uri: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_model_registry_pb2.TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[_model_registry_pb2.TensorSpec, _Mapping]]] = ..., feature_refs: _Optional[_Iterable[str]] = ..., serving: _Optional[_Union[ServingConfig, _Mapping]] = ...) -> None: ...

class PlannedVariant(_message.Message):
    __slots__ = ("name", "role", "traffic_percent", "model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: VariantRole
    traffic_percent: float
    model: ModelServingSpec
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[VariantRole, str]] = ..., traffic_percent: _Optional[float] = ..., model: _Optional[_Union[ModelServingSpec, _Mapping]] = ...) -> None: ...

class DeploymentPlan(_message.Message):
    __slots__ = ("deployment", "plan_revision", "routing_salt", "variants")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PLAN_REVISION_FIELD_NUMBER: _ClassVar[int]
    ROUTING_SALT_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    plan_revision: int
    routing_salt: str
    variants: _containers.RepeatedCompositeFieldContainer[PlannedVariant]
    def __init__(self, deployment: _Optional[str] = ..., plan_revision: _Optional[int] = ..., routing_salt: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[PlannedVariant, _Mapping]]] = ...) -> None: ...

class WatchDeploymentPlansRequest(_message.Message):
    __slots__ = ("known_revision",)
    KNOWN_REVISION_FIELD_NUMBER: _ClassVar[int]
    known_revision: int
    def __init__(self, known_revision: _Optional[int] = ...) -> None: ...

class DeploymentPlanSnapshot(_message.Message):
    __slots__ = ("revision", "plans", "store_id")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    revision: int
    plans: _containers.RepeatedCompositeFieldContainer[DeploymentPlan]
    store_id: str
    def __init__(self, revision: _Optional[int] = ..., plans: _Optional[_Iterable[_Union[DeploymentPlan, _Mapping]]] = ..., store_id: _Optional[str] = ...) -> None: ...
