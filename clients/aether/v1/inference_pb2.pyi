from clients.aether.v1 import online_features_pb2 as _online_features_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Fallback(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FALLBACK_NONE: _ClassVar[Fallback]
    FALLBACK_DEFAULTS: _ClassVar[Fallback]
FALLBACK_NONE: Fallback
FALLBACK_DEFAULTS: Fallback

class RequestFeatures(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("deployment", "routing_key", "rows", "request_features", "request_id")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FEATURES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    routing_key: str
    rows: _containers.RepeatedCompositeFieldContainer[_online_features_pb2.EntityRow]
    request_features: _containers.RepeatedCompositeFieldContainer[RequestFeatures]
    request_id: str
    def __init__(self, deployment: _Optional[str] = ..., routing_key: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[_online_features_pb2.EntityRow, _Mapping]]] = ..., request_features: _Optional[_Iterable[_Union[RequestFeatures, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class OutputTensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RowInfo(_message.Message):
    __slots__ = ("fallback", "missing_features", "stale_features")
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    MISSING_FEATURES_FIELD_NUMBER: _ClassVar[int]
    STALE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    fallback: Fallback
    missing_features: int
    stale_features: int
    def __init__(self, fallback: _Optional[_Union[Fallback, str]] = ..., missing_features: _Optional[int] = ..., stale_features: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("outputs", "model_name", "model_version", "variant", "request_id", "rows")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[OutputTensor]
    model_name: str
    model_version: int
    variant: str
    request_id: str
    rows: _containers.RepeatedCompositeFieldContainer[RowInfo]
    def __init__(self, outputs: _Optional[_Iterable[_Union[OutputTensor, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., variant: _Optional[str] = ..., request_id: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[RowInfo, _Mapping]]] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[PredictRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[PredictRequest, _Mapping]]] = ...) -> None: ...

class PredictResult(_message.Message):
    __slots__ = ("code", "message", "response")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    response: PredictResponse
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., response: _Optional[_Union[PredictResponse, _Mapping]] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PredictResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PredictResult, _Mapping]]] = ...) -> None: ...
