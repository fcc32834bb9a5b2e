"""Tensors of the Open Inference Protocol v2 to numpy and back: datatype names, ``raw_input_contents``
(zero-copy ``numpy.frombuffer``) and typed ``contents`` in; the ``ModelInferResponse`` out as wire bytes.

Why the response is written as bytes (:func:`encode_response`, registered with an identity serializer):
building the message and having gRPC serialize it cost a loaded server ~50 µs of CPU per request
(measured: a bare server doing decode + ONNX Runtime + encode served 10–15 % more requests/s at 32
callers when it returned bytes). Everything but the id, the shapes and the tensors is the same on every
answer of a model version and is serialized once (``_prefix``, ``_output_metadata``)."""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

import numpy as np

from clients.errors import InvalidArgument
from clients.inference import grpc_predict_v2_pb2 as pb
from data_plane.runtime.base import Array
from data_plane.wire import varint

DATATYPE_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_DATATYPE: dict[str, str] = {dtype.name: name for name, dtype in DATATYPE_TO_NUMPY.items()}
_LITTLE_ENDIAN: dict[str, np.dtype[Any]] = {
    name: d.newbyteorder("<") for name, d in DATATYPE_TO_NUMPY.items()
}

# Which repeated field of InferTensorContents carries each datatype (FP16 travels only as raw bytes).
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
# The narrow integer datatypes travel in 32-bit fields (uint_contents, int_contents), which hold values the
# datatype cannot: numpy's cast would wrap them silently (UINT8 300 becomes 44), so they are range-checked.
# The other integer datatypes have a field of exactly their width.
_NARROW_RANGE: dict[str, tuple[int, int]] = {
    name: (int(np.iinfo(DATATYPE_TO_NUMPY[name]).min), int(np.iinfo(DATATYPE_TO_NUMPY[name]).max))
    for name in ("UINT8", "UINT16", "INT8", "INT16")
}


# By dtype object: a dict lookup, where ``dtype.name`` is computed in Python on every access.
_DATATYPE_OF_DTYPE: dict[np.dtype[Any], str] = {dtype: name for name, dtype in DATATYPE_TO_NUMPY.items()}
# Native byte order is little-endian here: arrays in it go on the wire as they are.
_NATIVE_IS_WIRE = sys.byteorder == "little"


def datatype_of(dtype_name: str) -> str:
    return NUMPY_TO_DATATYPE.get(dtype_name, "BYTES")


def _numpy_dtype(tensor: Any) -> np.dtype[Any]:
    dtype = DATATYPE_TO_NUMPY.get(tensor.datatype)
    if dtype is None:
        raise InvalidArgument(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported; "
            f"expected one of {sorted(DATATYPE_TO_NUMPY)}"
        )
    return dtype


# numpy 1 builds arrays of at most 32 dimensions (numpy 2: 64); no model input comes near. Checked before
# the element count is computed: math.prod over thousands of huge dimensions (a few hundred kB of request)
# is a product of millions of bits that held the event loop for seconds.
MAX_RANK = 32


def _shape(tensor: Any) -> tuple[int, ...]:
    shape = tuple(tensor.shape)
    if len(shape) > MAX_RANK:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape has {len(shape)} dimensions; at most {MAX_RANK} are allowed"
        )
    if min(shape, default=0) < 0:
        raise InvalidArgument(f"input {tensor.name!r}: shape {list(shape)} has a negative dimension")
    return shape


# A tensor with data has no more elements than its message (under 2 GiB) has bytes, which the length
# checks enforce. A zero-size shape escapes them ([2**62, 0] needs no bytes) and numpy then refuses to build
# it; its other dimensions are held to what a tensor with data could have. Checked only for zero-size
# shapes, so a request with data pays nothing for it.
MAX_ELEMENTS = 2**31 - 1


def _check_zero_size(tensor: Any, shape: tuple[int, ...]) -> None:
    elements = math.prod(size for size in shape if size)
    if elements > MAX_ELEMENTS:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {list(shape)} is too large: its non-zero dimensions hold "
            f"{elements} elements, more than the {MAX_ELEMENTS} a tensor may have"
        )


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, Array]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "it must hold one per input, in order"
        )
    arrays: dict[str, Array] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise InvalidArgument(f"input {tensor.name!r} is given twice")
        if raw:
            dtype = _LITTLE_ENDIAN.get(tensor.datatype) or _numpy_dtype(tensor)
            shape = _shape(tensor)
            count = math.prod(shape)
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"input {tensor.name!r} has contents although raw_input_contents is used"
                )
            data = raw[index]
            if len(data) != count * dtype.itemsize:
                raise InvalidArgument(
                    f"input {tensor.name!r}: {len(data)} raw bytes for shape {list(shape)} of "
                    f"{tensor.datatype}; expected {count * dtype.itemsize}"
                )
            if not count:
                _check_zero_size(tensor, shape)
            if dtype.kind == "b" and data.translate(None, b"\x00\x01"):
                _refuse_bool_bytes(tensor, data)
            arrays[tensor.name] = np.frombuffer(data, dtype=dtype).reshape(shape)
            continue
        dtype = _numpy_dtype(tensor)
        shape = _shape(tensor)
        count = math.prod(shape)
        field_name = _CONTENTS_FIELD.get(tensor.datatype)
        if field_name is None:
            raise InvalidArgument(
                f"input {tensor.name!r}: {tensor.datatype} must be sent as raw_input_contents"
            )
        values = getattr(tensor.contents, field_name)
        if len(values) != count:
            raise InvalidArgument(
                f"input {tensor.name!r}: contents.{field_name} has {len(values)} values for shape "
                f"{list(shape)}; expected {count}"
            )
        if not count:
            _check_zero_size(tensor, shape)
        bounds = _NARROW_RANGE.get(tensor.datatype)
        array = np.array(values, dtype=dtype) if bounds is None else _narrowed(tensor, values, dtype, bounds)
        arrays[tensor.name] = array.reshape(shape)
    return arrays


# A raw BOOL element is one byte, 0 or 1 (as Triton and KServe define it). numpy takes any byte as a
# bool without looking, and ONNX Runtime computes with the byte as it is: Not(0x02) is 0x03, still true.


def _refuse_bool_bytes(tensor: Any, data: bytes) -> None:
    index = len(data) - len(data.lstrip(b"\x00\x01"))
    raise InvalidArgument(
        f"input {tensor.name!r}: BOOL byte {data[index]} (element {index} of its raw contents) is not a "
        "boolean; BOOL elements are one byte, 0 or 1"
    )


def _narrowed(tensor: Any, values: Any, dtype: np.dtype[Any], bounds: tuple[int, int]) -> Array:
    """Typed contents of a narrow integer datatype, refused when a value is outside its range."""
    wide = np.array(values, dtype=np.int64)
    low, high = bounds
    outside = (wide < low) | (wide > high)
    if outside.any():
        index = int(np.argmax(outside))
        raise InvalidArgument(
            f"input {tensor.name!r}: {tensor.datatype} value {int(wide[index])} (element {index} of its "
            f"contents) is out of range; {tensor.datatype} holds {low}..{high}"
        )
    return wide.astype(dtype)


# ModelInferResponse: model_name = 1, model_version = 2, id = 3, outputs = 5, raw_output_contents = 6
# (all length-delimited); fields go out in field-number order, as protobuf writes them.
_ID_TAG = b"\x1a"
_OUTPUTS_TAG = b"\x2a"
_RAW_OUTPUT_TAG = b"\x32"


@functools.lru_cache(maxsize=256)
def _prefix(model_name: str, model_version: str) -> bytes:
    return pb.ModelInferResponse(model_name=model_name, model_version=model_version).SerializeToString()


@functools.lru_cache(maxsize=1024)
def _output_metadata(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    return pb.ModelInferResponse.InferOutputTensor(
        name=name, datatype=datatype, shape=shape
    ).SerializeToString()


def encode_response(
    model_name: str, model_version: str, request_id: str, outputs: dict[str, Array], requested: list[str]
) -> bytes:
    """The serialized ``ModelInferResponse``: the outputs (all, or those requested, in request order) as
    raw contents, little-endian."""
    parts = [_prefix(model_name, model_version)]
    if request_id:
        encoded_id = request_id.encode()
        parts += (_ID_TAG, varint(len(encoded_id)), encoded_id)
    contents: list[bytes] = []
    for name in requested or outputs:
        array = outputs[name]
        dtype = array.dtype
        datatype = _DATATYPE_OF_DTYPE.get(dtype) or datatype_of(dtype.name)
        metadata = _output_metadata(name, datatype, array.shape)
        parts += (_OUTPUTS_TAG, varint(len(metadata)), metadata)
        if not (_NATIVE_IS_WIRE and dtype.isnative):
            array = array.astype(dtype.newbyteorder("<"), copy=False)
        data = array.tobytes()
        contents += (_RAW_OUTPUT_TAG, varint(len(data)), data)
    return b"".join(parts + contents)
