from clients.aether.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_ACTION_UNSPECIFIED: _ClassVar[PlanAction]
    NO_CHANGE: _ClassVar[PlanAction]
    CREATE: _ClassVar[PlanAction]
    NEW_VERSION: _ClassVar[PlanAction]
    UPDATE_METADATA: _ClassVar[PlanAction]
PLAN_ACTION_UNSPECIFIED: PlanAction
NO_CHANGE: PlanAction
CREATE: PlanAction
NEW_VERSION: PlanAction
UPDATE_METADATA: PlanAction

class JoinKey(_message.Message):
    __slots__ = ("name", "value_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: _types_pb2.ValueType
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[_types_pb2.ValueType, str]] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("name", "join_keys", "description", "created_at_us")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOIN_KEYS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    name: str
    join_keys: _containers.RepeatedCompositeFieldContainer[JoinKey]
    description: str
    created_at_us: int
    def __init__(self, name: _Optional[str] = ..., join_keys: _Optional[_Iterable[_Union[JoinKey, _Mapping]]] = ..., description: _Optional[str] = ..., created_at_us: _Optional[int] = ...) -> None: ...

class ValidationRule(_message.Message):
    __slots__ = ("min_value", "max_value", "allowed_values", "max_null_fraction")
    MIN_VALUE_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_NULL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    min_value: float
    max_value: float
    allowed_values: _containers.RepeatedScalarFieldContainer[int]
    max_null_fraction: float
    def __init__(self, min_value: _Optional[float] = ..., max_value: _Optional[float] = ..., allowed_values: _Optional[_Iterable[int]] = ..., max_null_fraction: _Optional[float] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "value_type", "description", "validation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: _types_pb2.ValueType
    description: str
    validation: ValidationRule
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[_types_pb2.ValueType, str]] = ..., description: _Optional[str] = ..., validation: _Optional[_Union[ValidationRule, _Mapping]] = ...) -> None: ...

class Aggregation(_message.Message):
    __slots__ = ("column", "function", "window_seconds", "output")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    column: str
    function: str
    window_seconds: int
    output: str
    def __init__(self, column: _Optional[str] = ..., function: _Optional[str] = ..., window_seconds: _Optional[int] = ..., output: _Optional[str] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("kind", "uri", "timestamp_field")
    KIND_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_FIELD_NUMBER: _ClassVar[int]
    kind: str
    uri: str
    timestamp_field: str
    def __init__(self, kind: _Optional[str] = ..., uri: _Optional[str] = ..., timestamp_field: _Optional[str] = ...) -> None: ...

class FeatureViewSpec(_message.Message):
    __slots__ = ("name", "entity", "features", "source", "ttl_seconds", "aggregations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    entity: str
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    source: Source
    ttl_seconds: int
    aggregations: _containers.RepeatedCompositeFieldContainer[Aggregation]
    def __init__(self, name: _Optional[str] = ..., entity: _Optional[str] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., source: _Optional[_Union[Source, _Mapping]] = ..., ttl_seconds: _Optional[int] = ..., aggregations: _Optional[_Iterable[_Union[Aggregation, _Mapping]]] = ...) -> None: ...

class FeatureViewMetadata(_message.Message):
    __slots__ = ("description", "owner", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    description: str
    owner: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, description: _Optional[str] = ..., owner: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FeatureView(_message.Message):
    __slots__ = ("spec", "metadata", "version", "status", "schema_fingerprint", "latest_version", "created_at_us", "updated_at_us")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    spec: FeatureViewSpec
    metadata: FeatureViewMetadata
    version: int
    status: _types_pb2.VersionStatus
    schema_fingerprint: int
    latest_version: int
    created_at_us: int
    updated_at_us: int
    def __init__(self, spec: _Optional[_Union[FeatureViewSpec, _Mapping]] = ..., metadata: _Optional[_Union[FeatureViewMetadata, _Mapping]] = ..., version: _Optional[int] = ..., status: _Optional[_Union[_types_pb2.VersionStatus, str]] = ..., schema_fingerprint: _Optional[int] = ..., latest_version: _Optional[int] = ..., created_at_us: _Optional[int] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class CreateEntityRequest(_message.Message):
    __slots__ = ("entity",)
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    entity: Entity
    def __init__(self, entity: _Optional[_Union[Entity, _Mapping]] = ...) -> None: ...

class GetEntityRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListEntitiesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntitiesResponse(_message.Message):
    __slots__ = ("entities", "next_page_token")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    next_page_token: str
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteEntityRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteEntityResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateFeatureViewRequest(_message.Message):
    __slots__ = ("spec", "metadata")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    spec: FeatureViewSpec
    metadata: FeatureViewMetadata
    def __init__(self, spec: _Optional[_Union[FeatureViewSpec, _Mapping]] = ..., metadata: _Optional[_Union[FeatureViewMetadata, _Mapping]] = ...) -> None: ...

class GetFeatureViewRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListFeatureViewsRequest(_message.Message):
    __slots__ = ("owner", "tags", "include_retired", "page_size", "page_token")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RETIRED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    tags: _containers.ScalarMap[str, str]
    include_retired: bool
    page_size: int
    page_token: str
    def __init__(self, owner: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., include_retired: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFeatureViewsResponse(_message.Message):
    __slots__ = ("views", "next_page_token")
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    views: _containers.RepeatedCompositeFieldContainer[FeatureView]
    next_page_token: str
    def __init__(self, views: _Optional[_Iterable[_Union[FeatureView, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListFeatureViewVersionsRequest(_message.Message):
    __slots__ = ("name", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFeatureViewVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[FeatureView]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[FeatureView, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFeatureViewMetadataRequest(_message.Message):
    __slots__ = ("name", "metadata", "feature_descriptions")
    class FeatureDescriptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DESCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    metadata: FeatureViewMetadata
    feature_descriptions: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., metadata: _Optional[_Union[FeatureViewMetadata, _Mapping]] = ..., feature_descriptions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpdateValidationRequest(_message.Message):
    __slots__ = ("name", "version", "rules")
    class RulesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ValidationRule
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ValidationRule, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    rules: _containers.MessageMap[str, ValidationRule]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., rules: _Optional[_Mapping[str, ValidationRule]] = ...) -> None: ...

class CreateFeatureViewVersionRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: FeatureViewSpec
    def __init__(self, spec: _Optional[_Union[FeatureViewSpec, _Mapping]] = ...) -> None: ...

class ChangeVersionStatusRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteFeatureViewRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteFeatureViewResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("entities", "views", "dry_run")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    views: _containers.RepeatedCompositeFieldContainer[FeatureView]
    dry_run: bool
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., views: _Optional[_Iterable[_Union[FeatureView, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PlanStep(_message.Message):
    __slots__ = ("kind", "name", "action", "version", "changes")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    action: PlanAction
    version: int
    changes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., action: _Optional[_Union[PlanAction, str]] = ..., version: _Optional[int] = ..., changes: _Optional[_Iterable[str]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("steps", "applied")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[PlanStep]
    applied: bool
    def __init__(self, steps: _Optional[_Iterable[_Union[PlanStep, _Mapping]]] = ..., applied: _Optional[bool] = ...) -> None: ...

class WatchRegistryRequest(_message.Message):
    __slots__ = ("known_revision",)
    KNOWN_REVISION_FIELD_NUMBER: _ClassVar[int]
    known_revision: int
    def __init__(self, known_revision: _Optional[int] = ...) -> None: ...

class RegistrySnapshot(_message.Message):
    __slots__ = ("revision", "entities", "views", "store_id", "max_join_key_bytes")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_JOIN_KEY_BYTES_FIELD_NUMBER: _ClassVar[int]
    revision: int
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    views: _containers.RepeatedCompositeFieldContainer[FeatureView]
    store_id: str
    max_join_key_bytes: int
    def __init__(self, revision: _Optional[int] = ..., entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., views: _Optional[_Iterable[_Union[FeatureView, _Mapping]]] = ..., store_id: _Optional[str] = ..., max_join_key_bytes: _Optional[int] = ...) -> None: ...
