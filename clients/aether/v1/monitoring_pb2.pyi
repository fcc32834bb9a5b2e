from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftTest(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_TEST_UNSPECIFIED: _ClassVar[DriftTest]
    DRIFT_TEST_PSI: _ClassVar[DriftTest]
    DRIFT_TEST_JSD: _ClassVar[DriftTest]
    DRIFT_TEST_KS: _ClassVar[DriftTest]
    DRIFT_TEST_WASSERSTEIN: _ClassVar[DriftTest]

class MultipleTestingCorrection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MULTIPLE_TESTING_CORRECTION_UNSPECIFIED: _ClassVar[MultipleTestingCorrection]
    MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG: _ClassVar[MultipleTestingCorrection]
    MULTIPLE_TESTING_CORRECTION_BONFERRONI: _ClassVar[MultipleTestingCorrection]
    MULTIPLE_TESTING_CORRECTION_NONE: _ClassVar[MultipleTestingCorrection]

class WindowKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_KIND_UNSPECIFIED: _ClassVar[WindowKind]
    WINDOW_KIND_COUNT: _ClassVar[WindowKind]
    WINDOW_KIND_TIME: _ClassVar[WindowKind]

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_CLASSIFICATION: _ClassVar[TaskType]
    TASK_TYPE_REGRESSION: _ClassVar[TaskType]

class DriftStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_STATUS_UNSPECIFIED: _ClassVar[DriftStatus]
    DRIFT_STATUS_NO_DRIFT: _ClassVar[DriftStatus]
    DRIFT_STATUS_DRIFT: _ClassVar[DriftStatus]
    DRIFT_STATUS_INSUFFICIENT_DATA: _ClassVar[DriftStatus]
    DRIFT_STATUS_NO_REFERENCE: _ClassVar[DriftStatus]
    DRIFT_STATUS_SCHEMA_MISMATCH: _ClassVar[DriftStatus]

class PerformanceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERFORMANCE_STATUS_UNSPECIFIED: _ClassVar[PerformanceStatus]
    PERFORMANCE_STATUS_INSUFFICIENT_LABELS: _ClassVar[PerformanceStatus]
    PERFORMANCE_STATUS_OK: _ClassVar[PerformanceStatus]
    PERFORMANCE_STATUS_DEGRADED: _ClassVar[PerformanceStatus]
DRIFT_TEST_UNSPECIFIED: DriftTest
DRIFT_TEST_PSI: DriftTest
DRIFT_TEST_JSD: DriftTest
DRIFT_TEST_KS: DriftTest
DRIFT_TEST_WASSERSTEIN: DriftTest
MULTIPLE_TESTING_CORRECTION_UNSPECIFIED: MultipleTestingCorrection
MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG: MultipleTestingCorrection
MULTIPLE_TESTING_CORRECTION_BONFERRONI: MultipleTestingCorrection
MULTIPLE_TESTING_CORRECTION_NONE: MultipleTestingCorrection
WINDOW_KIND_UNSPECIFIED: WindowKind
WINDOW_KIND_COUNT: WindowKind
WINDOW_KIND_TIME: WindowKind
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_CLASSIFICATION: TaskType
TASK_TYPE_REGRESSION: TaskType
DRIFT_STATUS_UNSPECIFIED: DriftStatus
DRIFT_STATUS_NO_DRIFT: DriftStatus
DRIFT_STATUS_DRIFT: DriftStatus
DRIFT_STATUS_INSUFFICIENT_DATA: DriftStatus
DRIFT_STATUS_NO_REFERENCE: DriftStatus
DRIFT_STATUS_SCHEMA_MISMATCH: DriftStatus
PERFORMANCE_STATUS_UNSPECIFIED: PerformanceStatus
PERFORMANCE_STATUS_INSUFFICIENT_LABELS: PerformanceStatus
PERFORMANCE_STATUS_OK: PerformanceStatus
PERFORMANCE_STATUS_DEGRADED: PerformanceStatus

class MonitorConfig(_message.Message):
    __slots__ = ("deployment", "disabled", "test", "threshold", "correction", "drift_share", "window_kind", "window_rows", "window_seconds", "min_samples", "webhook_url", "task", "prediction_output", "positive_class", "decision_threshold", "performance_window_seconds", "performance_step_seconds", "min_labels", "alert_metric", "alert_threshold", "updated_by", "updated_at_us", "performance_step_set", "revision")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    DRIFT_SHARE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_KIND_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_CLASS_FIELD_NUMBER: _ClassVar[int]
    DECISION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_LABELS_FIELD_NUMBER: _ClassVar[int]
    ALERT_METRIC_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_STEP_SET_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    disabled: bool
    test: DriftTest
    threshold: float
    correction: MultipleTestingCorrection
    drift_share: float
    window_kind: WindowKind
    window_rows: int
    window_seconds: float
    min_samples: int
    webhook_url: str
    task: TaskType
    prediction_output: str
    positive_class: int
    decision_threshold: float
    performance_window_seconds: float
    performance_step_seconds: float
    min_labels: int
    alert_metric: str
    alert_threshold: float
    updated_by: str
    updated_at_us: int
    performance_step_set: bool
    revision: int
    def __init__(self, deployment: _Optional[str] = ..., disabled: _Optional[bool] = ..., test: _Optional[_Union[DriftTest, str]] = ..., threshold: _Optional[float] = ..., correction: _Optional[_Union[MultipleTestingCorrection, str]] = ..., drift_share: _Optional[float] = ..., window_kind: _Optional[_Union[WindowKind, str]] = ..., window_rows: _Optional[int] = ..., window_seconds: _Optional[float] = ..., min_samples: _Optional[int] = ..., webhook_url: _Optional[str] = ..., task: _Optional[_Union[TaskType, str]] = ..., prediction_output: _Optional[str] = ..., positive_class: _Optional[int] = ..., decision_threshold: _Optional[float] = ..., performance_window_seconds: _Optional[float] = ..., performance_step_seconds: _Optional[float] = ..., min_labels: _Optional[int] = ..., alert_metric: _Optional[str] = ..., alert_threshold: _Optional[float] = ..., updated_by: _Optional[str] = ..., updated_at_us: _Optional[int] = ..., performance_step_set: _Optional[bool] = ..., revision: _Optional[int] = ...) -> None: ...

class ConfigureMonitorRequest(_message.Message):
    __slots__ = ("config", "expected_revision")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    config: MonitorConfig
    expected_revision: int
    def __init__(self, config: _Optional[_Union[MonitorConfig, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class GetMonitorConfigRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("name", "score", "drifted", "insufficient", "psi", "jensen_shannon", "ks_statistic", "ks_pvalue", "ks_pvalue_adjusted", "wasserstein", "n_current", "missing_current", "not_compared", "logged_column", "paired_by_position")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    INSUFFICIENT_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    JENSEN_SHANNON_FIELD_NUMBER: _ClassVar[int]
    KS_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_ADJUSTED_FIELD_NUMBER: _ClassVar[int]
    WASSERSTEIN_FIELD_NUMBER: _ClassVar[int]
    N_CURRENT_FIELD_NUMBER: _ClassVar[int]
    MISSING_CURRENT_FIELD_NUMBER: _ClassVar[int]
    NOT_COMPARED_FIELD_NUMBER: _ClassVar[int]
    LOGGED_COLUMN_FIELD_NUMBER: _ClassVar[int]
    PAIRED_BY_POSITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    score: float
    drifted: bool
    insufficient: bool
    psi: float
    jensen_shannon: float
    ks_statistic: float
    ks_pvalue: float
    ks_pvalue_adjusted: float
    wasserstein: float
    n_current: int
    missing_current: int
    not_compared: str
    logged_column: str
    paired_by_position: bool
    def __init__(self, name: _Optional[str] = ..., score: _Optional[float] = ..., drifted: _Optional[bool] = ..., insufficient: _Optional[bool] = ..., psi: _Optional[float] = ..., jensen_shannon: _Optional[float] = ..., ks_statistic: _Optional[float] = ..., ks_pvalue: _Optional[float] = ..., ks_pvalue_adjusted: _Optional[float] = ..., wasserstein: _Optional[float] = ..., n_current: _Optional[int] = ..., missing_current: _Optional[int] = ..., not_compared: _Optional[str] = ..., logged_column: _Optional[str] = ..., paired_by_position: _Optional[bool] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("id", "deployment", "model_name", "version", "window_start_us", "window_end_us", "n_rows", "status", "test", "threshold", "correction", "drifted_share", "drift_share_threshold", "features", "prediction_status", "outputs", "created_at_us", "late_rows", "mismatched_rows")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_US_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_US_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_SHARE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    LATE_ROWS_FIELD_NUMBER: _ClassVar[int]
    MISMATCHED_ROWS_FIELD_NUMBER: _ClassVar[int]
    id: int
    deployment: str
    model_name: str
    version: int
    window_start_us: int
    window_end_us: int
    n_rows: int
    status: DriftStatus
    test: DriftTest
    threshold: float
    correction: MultipleTestingCorrection
    drifted_share: float
    drift_share_threshold: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    prediction_status: DriftStatus
    outputs: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    created_at_us: int
    late_rows: int
    mismatched_rows: int
    def __init__(self, id: _Optional[int] = ..., deployment: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., window_start_us: _Optional[int] = ..., window_end_us: _Optional[int] = ..., n_rows: _Optional[int] = ..., status: _Optional[_Union[DriftStatus, str]] = ..., test: _Optional[_Union[DriftTest, str]] = ..., threshold: _Optional[float] = ..., correction: _Optional[_Union[MultipleTestingCorrection, str]] = ..., drifted_share: _Optional[float] = ..., drift_share_threshold: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., prediction_status: _Optional[_Union[DriftStatus, str]] = ..., outputs: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., created_at_us: _Optional[int] = ..., late_rows: _Optional[int] = ..., mismatched_rows: _Optional[int] = ...) -> None: ...

class GetDriftReportsRequest(_message.Message):
    __slots__ = ("deployment", "since_us", "until_us", "limit", "page_token")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_US_FIELD_NUMBER: _ClassVar[int]
    UNTIL_US_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    since_us: int
    until_us: int
    limit: int
    page_token: str
    def __init__(self, deployment: _Optional[str] = ..., since_us: _Optional[int] = ..., until_us: _Optional[int] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetDriftReportsResponse(_message.Message):
    __slots__ = ("reports", "next_page_token")
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[DriftReport]
    next_page_token: str
    def __init__(self, reports: _Optional[_Iterable[_Union[DriftReport, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("request_id", "row", "label", "deployment")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    row: int
    label: float
    deployment: str
    def __init__(self, request_id: _Optional[str] = ..., row: _Optional[int] = ..., label: _Optional[float] = ..., deployment: _Optional[str] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("feedback",)
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    feedback: _containers.RepeatedCompositeFieldContainer[Feedback]
    def __init__(self, feedback: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("recorded", "joined", "orphaned", "orphaned_total")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    ORPHANED_FIELD_NUMBER: _ClassVar[int]
    ORPHANED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    joined: int
    orphaned: int
    orphaned_total: int
    def __init__(self, recorded: _Optional[int] = ..., joined: _Optional[int] = ..., orphaned: _Optional[int] = ..., orphaned_total: _Optional[int] = ...) -> None: ...

class GetPerformanceRequest(_message.Message):
    __slots__ = ("deployment", "since_us", "until_us")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_US_FIELD_NUMBER: _ClassVar[int]
    UNTIL_US_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    since_us: int
    until_us: int
    def __init__(self, deployment: _Optional[str] = ..., since_us: _Optional[int] = ..., until_us: _Optional[int] = ...) -> None: ...

class PerformanceWindow(_message.Message):
    __slots__ = ("start_us", "end_us", "n_predictions", "n_labels", "status", "metrics", "n_invalid_predictions")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    START_US_FIELD_NUMBER: _ClassVar[int]
    END_US_FIELD_NUMBER: _ClassVar[int]
    N_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    N_LABELS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    N_INVALID_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    start_us: int
    end_us: int
    n_predictions: int
    n_labels: int
    status: PerformanceStatus
    metrics: _containers.ScalarMap[str, float]
    n_invalid_predictions: int
    def __init__(self, start_us: _Optional[int] = ..., end_us: _Optional[int] = ..., n_predictions: _Optional[int] = ..., n_labels: _Optional[int] = ..., status: _Optional[_Union[PerformanceStatus, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., n_invalid_predictions: _Optional[int] = ...) -> None: ...

class GetPerformanceResponse(_message.Message):
    __slots__ = ("deployment", "task", "alert_metric", "alert_threshold", "windows", "orphaned_feedback", "unscored", "since_us", "until_us", "range_cut")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ALERT_METRIC_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    ORPHANED_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    UNSCORED_FIELD_NUMBER: _ClassVar[int]
    SINCE_US_FIELD_NUMBER: _ClassVar[int]
    UNTIL_US_FIELD_NUMBER: _ClassVar[int]
    RANGE_CUT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    task: TaskType
    alert_metric: str
    alert_threshold: float
    windows: _containers.RepeatedCompositeFieldContainer[PerformanceWindow]
    orphaned_feedback: int
    unscored: _containers.RepeatedCompositeFieldContainer[UnscoredPredictions]
    since_us: int
    until_us: int
    range_cut: bool
    def __init__(self, deployment: _Optional[str] = ..., task: _Optional[_Union[TaskType, str]] = ..., alert_metric: _Optional[str] = ..., alert_threshold: _Optional[float] = ..., windows: _Optional[_Iterable[_Union[PerformanceWindow, _Mapping]]] = ..., orphaned_feedback: _Optional[int] = ..., unscored: _Optional[_Iterable[_Union[UnscoredPredictions, _Mapping]]] = ..., since_us: _Optional[int] = ..., until_us: _Optional[int] = ..., range_cut: _Optional[bool] = ...) -> None: ...

class UnscoredPredictions(_message.Message):
    __slots__ = ("model_name", "version", "output", "n_labels", "reason")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    N_LABELS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    output: str
    n_labels: int
    reason: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., output: _Optional[str] = ..., n_labels: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RegisterReferenceProfileRequest(_message.Message):
    __slots__ = ("model_name", "version", "artifact_sha256", "output_artifact_sha256")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    artifact_sha256: str
    output_artifact_sha256: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., artifact_sha256: _Optional[str] = ..., output_artifact_sha256: _Optional[str] = ...) -> None: ...

class ReferenceProfileInfo(_message.Message):
    __slots__ = ("model_name", "version", "artifact_sha256", "feature_names", "output_artifact_sha256", "output_names", "n_rows", "created_by", "created_at_us")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAMES_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    artifact_sha256: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    output_artifact_sha256: str
    output_names: _containers.RepeatedScalarFieldContainer[str]
    n_rows: int
    created_by: str
    created_at_us: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., artifact_sha256: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., output_artifact_sha256: _Optional[str] = ..., output_names: _Optional[_Iterable[str]] = ..., n_rows: _Optional[int] = ..., created_by: _Optional[str] = ..., created_at_us: _Optional[int] = ...) -> None: ...
