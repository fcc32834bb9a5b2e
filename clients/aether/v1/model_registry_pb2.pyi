from clients.aether.v1 import feature_registry_pb2 as _feature_registry_pb2
from clients.aether.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApprovalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPROVAL_STATUS_UNSPECIFIED: _ClassVar[ApprovalStatus]
    PENDING_MANUAL_APPROVAL: _ClassVar[ApprovalStatus]
    APPROVED: _ClassVar[ApprovalStatus]
    REJECTED: _ClassVar[ApprovalStatus]
APPROVAL_STATUS_UNSPECIFIED: ApprovalStatus
PENDING_MANUAL_APPROVAL: ApprovalStatus
APPROVED: ApprovalStatus
REJECTED: ApprovalStatus

class ArtifactRef(_message.Message):
    __slots__ = ("sha256", "size", "uri")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    uri: str
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ..., uri: _Optional[str] = ...) -> None: ...

class UploadArtifactRequest(_message.Message):
    __slots__ = ("sha256", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class DownloadArtifactRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class StatArtifactRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class RegisteredModel(_message.Message):
    __slots__ = ("name", "description", "tags", "latest_version", "aliases", "created_at_us", "updated_at_us")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    latest_version: int
    aliases: _containers.ScalarMap[str, int]
    created_at_us: int
    updated_at_us: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., latest_version: _Optional[int] = ..., aliases: _Optional[_Mapping[str, int]] = ..., created_at_us: _Optional[int] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelSignature(_message.Message):
    __slots__ = ("inputs", "outputs", "imputes_missing", "classes")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    IMPUTES_MISSING_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    imputes_missing: bool
    classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., imputes_missing: _Optional[bool] = ..., classes: _Optional[_Iterable[str]] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("hash", "query")
    HASH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    hash: str
    query: str
    def __init__(self, hash: _Optional[str] = ..., query: _Optional[str] = ...) -> None: ...

class ApprovalRecord(_message.Message):
    __slots__ = ("status", "actor", "reason", "decided_at_us")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_US_FIELD_NUMBER: _ClassVar[int]
    status: ApprovalStatus
    actor: str
    reason: str
    decided_at_us: int
    def __init__(self, status: _Optional[_Union[ApprovalStatus, str]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., decided_at_us: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model_name", "version", "run_id", "artifact", "signature", "dataset", "feature_refs", "hyperparameters", "metrics", "git_commit", "description", "approval", "aliases", "created_by", "created_at_us", "updated_at_us")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FEATURE_REFS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    GIT_COMMIT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    run_id: str
    artifact: ArtifactRef
    signature: ModelSignature
    dataset: DatasetInfo
    feature_refs: _containers.RepeatedScalarFieldContainer[str]
    hyperparameters: _containers.ScalarMap[str, str]
    metrics: _containers.ScalarMap[str, float]
    git_commit: str
    description: str
    approval: ApprovalRecord
    aliases: _containers.RepeatedScalarFieldContainer[str]
    created_by: str
    created_at_us: int
    updated_at_us: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., run_id: _Optional[str] = ..., artifact: _Optional[_Union[ArtifactRef, _Mapping]] = ..., signature: _Optional[_Union[ModelSignature, _Mapping]] = ..., dataset: _Optional[_Union[DatasetInfo, _Mapping]] = ..., feature_refs: _Optional[_Iterable[str]] = ..., hyperparameters: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., git_commit: _Optional[str] = ..., description: _Optional[str] = ..., approval: _Optional[_Union[ApprovalRecord, _Mapping]] = ..., aliases: _Optional[_Iterable[str]] = ..., created_by: _Optional[str] = ..., created_at_us: _Optional[int] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class CreateRegisteredModelRequest(_message.Message):
    __slots__ = ("name", "description", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetRegisteredModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRegisteredModelsRequest(_message.Message):
    __slots__ = ("name_prefix", "tags", "page_size", "page_token")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name_prefix: str
    tags: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, name_prefix: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRegisteredModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[RegisteredModel]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[RegisteredModel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteRegisteredModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteRegisteredModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "run_id", "artifact_sha256", "signature", "dataset", "feature_refs", "hyperparameters", "metrics", "git_commit", "description", "create_model")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FEATURE_REFS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    GIT_COMMIT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_MODEL_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    run_id: str
    artifact_sha256: str
    signature: ModelSignature
    dataset: DatasetInfo
    feature_refs: _containers.RepeatedScalarFieldContainer[str]
    hyperparameters: _containers.ScalarMap[str, str]
    metrics: _containers.ScalarMap[str, float]
    git_commit: str
    description: str
    create_model: bool
    def __init__(self, model_name: _Optional[str] = ..., run_id: _Optional[str] = ..., artifact_sha256: _Optional[str] = ..., signature: _Optional[_Union[ModelSignature, _Mapping]] = ..., dataset: _Optional[_Union[DatasetInfo, _Mapping]] = ..., feature_refs: _Optional[_Iterable[str]] = ..., hyperparameters: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., git_commit: _Optional[str] = ..., description: _Optional[str] = ..., create_model: _Optional[bool] = ...) -> None: ...

class GetModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version", "alias")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    alias: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., alias: _Optional[str] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("model_name", "status", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    status: ApprovalStatus
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., status: _Optional[_Union[ApprovalStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReviewModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version", "decision", "reason")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    decision: ApprovalStatus
    reason: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., decision: _Optional[_Union[ApprovalStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteModelVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("model_name", "alias", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("model_name", "alias")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class DeleteAliasResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckDeployableRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeploymentRef(_message.Message):
    __slots__ = ("name", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class PromotionRef(_message.Message):
    __slots__ = ("name", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RunLineage(_message.Message):
    __slots__ = ("run_id", "experiment", "status", "params", "start_time_us", "end_time_us")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_US_FIELD_NUMBER: _ClassVar[int]
    END_TIME_US_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    experiment: str
    status: str
    params: _containers.ScalarMap[str, str]
    start_time_us: int
    end_time_us: int
    def __init__(self, run_id: _Optional[str] = ..., experiment: _Optional[str] = ..., status: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., start_time_us: _Optional[int] = ..., end_time_us: _Optional[int] = ...) -> None: ...

class FeatureViewLineage(_message.Message):
    __slots__ = ("name", "version", "status", "entity", "features_used", "feature_count", "ttl_seconds", "source", "owner", "offline_location", "offline_files", "offline_files_sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    FEATURES_USED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FILES_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FILES_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    status: _types_pb2.VersionStatus
    entity: str
    features_used: _containers.RepeatedScalarFieldContainer[str]
    feature_count: int
    ttl_seconds: int
    source: _feature_registry_pb2.Source
    owner: str
    offline_location: str
    offline_files: int
    offline_files_sha256: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[_Union[_types_pb2.VersionStatus, str]] = ..., entity: _Optional[str] = ..., features_used: _Optional[_Iterable[str]] = ..., feature_count: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., source: _Optional[_Union[_feature_registry_pb2.Source, _Mapping]] = ..., owner: _Optional[str] = ..., offline_location: _Optional[str] = ..., offline_files: _Optional[int] = ..., offline_files_sha256: _Optional[str] = ...) -> None: ...

class MaterializedDataset(_message.Message):
    __slots__ = ("recorded", "output_path", "row_count", "created_at", "entity_rows_sha256")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ROWS_SHA256_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    output_path: str
    row_count: int
    created_at: str
    entity_rows_sha256: str
    def __init__(self, recorded: _Optional[bool] = ..., output_path: _Optional[str] = ..., row_count: _Optional[int] = ..., created_at: _Optional[str] = ..., entity_rows_sha256: _Optional[str] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("deployments", "model_version", "run", "dataset", "feature_views", "materialized", "promotions")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VIEWS_FIELD_NUMBER: _ClassVar[int]
    MATERIALIZED_FIELD_NUMBER: _ClassVar[int]
    PROMOTIONS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentRef]
    model_version: ModelVersion
    run: RunLineage
    dataset: DatasetInfo
    feature_views: _containers.RepeatedCompositeFieldContainer[FeatureViewLineage]
    materialized: MaterializedDataset
    promotions: _containers.RepeatedCompositeFieldContainer[PromotionRef]
    def __init__(self, deployments: _Optional[_Iterable[_Union[DeploymentRef, _Mapping]]] = ..., model_version: _Optional[_Union[ModelVersion, _Mapping]] = ..., run: _Optional[_Union[RunLineage, _Mapping]] = ..., dataset: _Optional[_Union[DatasetInfo, _Mapping]] = ..., feature_views: _Optional[_Iterable[_Union[FeatureViewLineage, _Mapping]]] = ..., materialized: _Optional[_Union[MaterializedDataset, _Mapping]] = ..., promotions: _Optional[_Iterable[_Union[PromotionRef, _Mapping]]] = ...) -> None: ...

class FindUsagesRequest(_message.Message):
    __slots__ = ("feature_view", "version")
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    version: int
    def __init__(self, feature_view: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class FeatureUsage(_message.Message):
    __slots__ = ("model_name", "version", "feature_refs", "approval_status", "deployments", "promotions")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_REFS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    PROMOTIONS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    feature_refs: _containers.RepeatedScalarFieldContainer[str]
    approval_status: ApprovalStatus
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentRef]
    promotions: _containers.RepeatedCompositeFieldContainer[PromotionRef]
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., feature_refs: _Optional[_Iterable[str]] = ..., approval_status: _Optional[_Union[ApprovalStatus, str]] = ..., deployments: _Optional[_Iterable[_Union[DeploymentRef, _Mapping]]] = ..., promotions: _Optional[_Iterable[_Union[PromotionRef, _Mapping]]] = ...) -> None: ...

class FindUsagesResponse(_message.Message):
    __slots__ = ("usages",)
    USAGES_FIELD_NUMBER: _ClassVar[int]
    usages: _containers.RepeatedCompositeFieldContainer[FeatureUsage]
    def __init__(self, usages: _Optional[_Iterable[_Union[FeatureUsage, _Mapping]]] = ...) -> None: ...
