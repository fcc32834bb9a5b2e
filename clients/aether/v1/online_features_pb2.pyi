from clients.aether.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESENT: _ClassVar[FeatureStatus]
    MISSING: _ClassVar[FeatureStatus]
    STALE: _ClassVar[FeatureStatus]
PRESENT: FeatureStatus
MISSING: FeatureStatus
STALE: FeatureStatus

class EntityRow(_message.Message):
    __slots__ = ("keys",)
    class KeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.ScalarMap[str, str]
    def __init__(self, keys: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetOnlineFeaturesRequest(_message.Message):
    __slots__ = ("features", "rows")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[EntityRow]
    def __init__(self, features: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[EntityRow, _Mapping]]] = ...) -> None: ...

class FeatureColumnSpec(_message.Message):
    __slots__ = ("name", "value_type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_type: _types_pb2.ValueType
    def __init__(self, name: _Optional[str] = ..., value_type: _Optional[_Union[_types_pb2.ValueType, str]] = ...) -> None: ...

class FeatureBlock(_message.Message):
    __slots__ = ("view", "version", "columns", "values", "statuses", "event_timestamps_us")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIMESTAMPS_US_FIELD_NUMBER: _ClassVar[int]
    view: str
    version: int
    columns: _containers.RepeatedCompositeFieldContainer[FeatureColumnSpec]
    values: bytes
    statuses: bytes
    event_timestamps_us: bytes
    def __init__(self, view: _Optional[str] = ..., version: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[FeatureColumnSpec, _Mapping]]] = ..., values: _Optional[bytes] = ..., statuses: _Optional[bytes] = ..., event_timestamps_us: _Optional[bytes] = ...) -> None: ...

class GetOnlineFeaturesResponse(_message.Message):
    __slots__ = ("row_count", "blocks")
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    row_count: int
    blocks: _containers.RepeatedCompositeFieldContainer[FeatureBlock]
    def __init__(self, row_count: _Optional[int] = ..., blocks: _Optional[_Iterable[_Union[FeatureBlock, _Mapping]]] = ...) -> None: ...
