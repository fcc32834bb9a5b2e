from clients.aether.v1 import deployments_pb2 as _deployments_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluationGates(_message.Message):
    __slots__ = ("metric", "max_relative_degradation", "latency_budget_ms", "max_latency_ratio", "min_holdout_rows", "holdout_seconds")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MAX_RELATIVE_DEGRADATION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_HOLDOUT_ROWS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    max_relative_degradation: float
    latency_budget_ms: float
    max_latency_ratio: float
    min_holdout_rows: int
    holdout_seconds: float
    def __init__(self, metric: _Optional[str] = ..., max_relative_degradation: _Optional[float] = ..., latency_budget_ms: _Optional[float] = ..., max_latency_ratio: _Optional[float] = ..., min_holdout_rows: _Optional[int] = ..., holdout_seconds: _Optional[float] = ...) -> None: ...

class PromotionPolicy(_message.Message):
    __slots__ = ("manual_approval", "shadow_seconds", "min_agreement", "canary")
    MANUAL_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    manual_approval: bool
    shadow_seconds: float
    min_agreement: float
    canary: _deployments_pb2.CanaryPolicy
    def __init__(self, manual_approval: _Optional[bool] = ..., shadow_seconds: _Optional[float] = ..., min_agreement: _Optional[float] = ..., canary: _Optional[_Union[_deployments_pb2.CanaryPolicy, _Mapping]] = ...) -> None: ...

class TriggerConfig(_message.Message):
    __slots__ = ("deployment", "enabled", "schedule", "performance_metric", "performance_threshold", "drift", "drift_alone", "new_labels", "cooldown_seconds", "entity_rows_path", "data_window_seconds", "max_rejected_fraction", "min_rows", "gates", "promotion", "updated_by", "updated_at_us", "revision")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_METRIC_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    DRIFT_ALONE_FIELD_NUMBER: _ClassVar[int]
    NEW_LABELS_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ROWS_PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_REJECTED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    enabled: bool
    schedule: str
    performance_metric: str
    performance_threshold: float
    drift: bool
    drift_alone: bool
    new_labels: int
    cooldown_seconds: float
    entity_rows_path: str
    data_window_seconds: float
    max_rejected_fraction: float
    min_rows: int
    gates: EvaluationGates
    promotion: PromotionPolicy
    updated_by: str
    updated_at_us: int
    revision: int
    def __init__(self, deployment: _Optional[str] = ..., enabled: _Optional[bool] = ..., schedule: _Optional[str] = ..., performance_metric: _Optional[str] = ..., performance_threshold: _Optional[float] = ..., drift: _Optional[bool] = ..., drift_alone: _Optional[bool] = ..., new_labels: _Optional[int] = ..., cooldown_seconds: _Optional[float] = ..., entity_rows_path: _Optional[str] = ..., data_window_seconds: _Optional[float] = ..., max_rejected_fraction: _Optional[float] = ..., min_rows: _Optional[int] = ..., gates: _Optional[_Union[EvaluationGates, _Mapping]] = ..., promotion: _Optional[_Union[PromotionPolicy, _Mapping]] = ..., updated_by: _Optional[str] = ..., updated_at_us: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class ConfigureTriggersRequest(_message.Message):
    __slots__ = ("config", "expected_revision")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    config: TriggerConfig
    expected_revision: int
    def __init__(self, config: _Optional[_Union[TriggerConfig, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class GetTriggerConfigRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class TriggerNowRequest(_message.Message):
    __slots__ = ("deployment", "reason")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    reason: str
    def __init__(self, deployment: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TriggerDecision(_message.Message):
    __slots__ = ("id", "deployment", "at_us", "triggered", "rules", "reasons", "outcome", "job_id", "actor")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    AT_US_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    id: int
    deployment: str
    at_us: int
    triggered: bool
    rules: _containers.RepeatedScalarFieldContainer[str]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    outcome: str
    job_id: str
    actor: str
    def __init__(self, id: _Optional[int] = ..., deployment: _Optional[str] = ..., at_us: _Optional[int] = ..., triggered: _Optional[bool] = ..., rules: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[str]] = ..., outcome: _Optional[str] = ..., job_id: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("deployment", "triggered_only", "limit", "page_token")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_ONLY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    triggered_only: bool
    limit: int
    page_token: str
    def __init__(self, deployment: _Optional[str] = ..., triggered_only: _Optional[bool] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[TriggerDecision]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[TriggerDecision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("id", "deployment", "model_name", "champion_version", "challenger_version", "passed", "reasons", "metric", "champion_metrics", "challenger_metrics", "champion_p95_ms", "challenger_p95_ms", "holdout_rows", "holdout_source", "job_id", "decision_id", "promotion_status", "promotion_reason", "agreement_rate", "created_at_us", "updated_at_us")
    class ChampionMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ChallengerMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_METRICS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_METRICS_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_P95_MS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_P95_MS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_ROWS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_STATUS_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_REASON_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    id: int
    deployment: str
    model_name: str
    champion_version: int
    challenger_version: int
    passed: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    metric: str
    champion_metrics: _containers.ScalarMap[str, float]
    challenger_metrics: _containers.ScalarMap[str, float]
    champion_p95_ms: float
    challenger_p95_ms: float
    holdout_rows: int
    holdout_source: str
    job_id: str
    decision_id: int
    promotion_status: str
    promotion_reason: str
    agreement_rate: float
    created_at_us: int
    updated_at_us: int
    def __init__(self, id: _Optional[int] = ..., deployment: _Optional[str] = ..., model_name: _Optional[str] = ..., champion_version: _Optional[int] = ..., challenger_version: _Optional[int] = ..., passed: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., metric: _Optional[str] = ..., champion_metrics: _Optional[_Mapping[str, float]] = ..., challenger_metrics: _Optional[_Mapping[str, float]] = ..., champion_p95_ms: _Optional[float] = ..., challenger_p95_ms: _Optional[float] = ..., holdout_rows: _Optional[int] = ..., holdout_source: _Optional[str] = ..., job_id: _Optional[str] = ..., decision_id: _Optional[int] = ..., promotion_status: _Optional[str] = ..., promotion_reason: _Optional[str] = ..., agreement_rate: _Optional[float] = ..., created_at_us: _Optional[int] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class ListEvaluationsRequest(_message.Message):
    __slots__ = ("deployment", "limit", "page_token")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    limit: int
    page_token: str
    def __init__(self, deployment: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEvaluationsResponse(_message.Message):
    __slots__ = ("evaluations", "next_page_token")
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    evaluations: _containers.RepeatedCompositeFieldContainer[Evaluation]
    next_page_token: str
    def __init__(self, evaluations: _Optional[_Iterable[_Union[Evaluation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
