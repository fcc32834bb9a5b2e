from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ValueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_TYPE_UNSPECIFIED: _ClassVar[ValueType]
    FLOAT32: _ClassVar[ValueType]
    FLOAT64: _ClassVar[ValueType]
    INT32: _ClassVar[ValueType]
    INT64: _ClassVar[ValueType]
    BOOL: _ClassVar[ValueType]
    STRING: _ClassVar[ValueType]

class VersionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_STATUS_UNSPECIFIED: _ClassVar[VersionStatus]
    ACTIVE: _ClassVar[VersionStatus]
    DEPRECATED: _ClassVar[VersionStatus]
    RETIRED: _ClassVar[VersionStatus]
VALUE_TYPE_UNSPECIFIED: ValueType
FLOAT32: ValueType
FLOAT64: ValueType
INT32: ValueType
INT64: ValueType
BOOL: ValueType
STRING: ValueType
VERSION_STATUS_UNSPECIFIED: VersionStatus
ACTIVE: VersionStatus
DEPRECATED: VersionStatus
RETIRED: VersionStatus
