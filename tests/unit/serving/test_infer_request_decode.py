"""ModelInfer inputs decoded from the request, against brute-force references: typed ``contents`` of every
integer datatype give exactly the values sent, and a value the datatype cannot hold is refused
(INVALID_ARGUMENT naming the input, the datatype and the value), never wrapped; shapes that cannot be a
tensor (a zero-size shape with huge other dimensions, too many dimensions) are INVALID_ARGUMENT naming the
input, never a numpy error (INTERNAL); a model version is a string of ASCII digits or names no version
(NOT_FOUND), never a failed ``int`` (INTERNAL)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument, NotFound
from clients.inference import grpc_predict_v2_pb2 as pb
from data_plane.api.inference_v2 import parse_version
from data_plane.api.oip_tensors import MAX_RANK, decode_inputs

# Each integer datatype, the repeated field that carries it and that field's own range.
_U32, _I32 = (0, 2**32 - 1), (-(2**31), 2**31 - 1)
_INTEGER_FIELDS: dict[str, tuple[str, tuple[int, int]]] = {
    "UINT8": ("uint_contents", _U32),
    "UINT16": ("uint_contents", _U32),
    "UINT32": ("uint_contents", _U32),
    "UINT64": ("uint64_contents", (0, 2**64 - 1)),
    "INT8": ("int_contents", _I32),
    "INT16": ("int_contents", _I32),
    "INT32": ("int_contents", _I32),
    "INT64": ("int64_contents", (-(2**63), 2**63 - 1)),
}
# The reference: what each datatype holds, written out rather than asked of numpy.
_HOLDS = {
    "UINT8": (0, 255),
    "UINT16": (0, 65535),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-128, 127),
    "INT16": (-32768, 32767),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}


def _typed(datatype: str, values: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    field, _ = _INTEGER_FIELDS[datatype]
    tensor = request.inputs.add(name="t", datatype=datatype, shape=[len(values)])
    getattr(tensor.contents, field).extend(values)
    return request


@st.composite
def _case(draw: st.DrawFn) -> tuple[str, list[int]]:
    datatype = draw(st.sampled_from(sorted(_INTEGER_FIELDS)))
    _, (field_low, field_high) = _INTEGER_FIELDS[datatype]
    low, high = _HOLDS[datatype]
    # Mostly values at and around the datatype's edges (clipped to what the field can carry), some anywhere.
    edges = [v for v in (low - 1, low, high, high + 1) if field_low <= v <= field_high]
    value = st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(field_low, field_high))
    return datatype, draw(st.lists(value, min_size=1, max_size=6))


@settings(max_examples=400, deadline=None)
@given(_case())
def test_typed_integers_decode_exactly_or_are_refused_naming_the_value(case: tuple[str, list[int]]) -> None:
    datatype, values = case
    low, high = _HOLDS[datatype]
    outside = [v for v in values if not low <= v <= high]
    if not outside:
        (array,) = decode_inputs(_typed(datatype, values)).values()
        assert array.dtype.name == datatype.lower() and array.tolist() == values
        return
    with pytest.raises(InvalidArgument) as info:
        decode_inputs(_typed(datatype, values))
    message = info.value.message
    assert "'t'" in message and datatype in message and str(outside[0]) in message
    assert f"{low}..{high}" in message


def test_uint8_300_is_refused_not_wrapped_to_44() -> None:
    message = r"input 't': UINT8 value 300 .* out of range; UINT8 holds 0\.\.255"
    with pytest.raises(InvalidArgument, match=message):
        decode_inputs(_typed("UINT8", [300, 7]))


def _empty(shape: list[int], raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="t", datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"")
    return request


_DIMENSION = st.one_of(
    st.integers(0, 2**63 - 1),  # anything the int64 field carries
    st.sampled_from([0, 1, 2**15, 2**16, 2**31 - 1, 2**31, 2**62]),
    st.integers(1, 64),
)
_ZERO_SIZE = st.lists(_DIMENSION, min_size=1, max_size=5).flatmap(
    lambda dims: st.integers(0, len(dims)).map(lambda at: [*dims[:at], 0, *dims[at:]])
)


@settings(max_examples=300, deadline=None)
@given(shape=_ZERO_SIZE, raw=st.booleans())
def test_a_zero_size_shape_decodes_or_is_refused_naming_the_shape(shape: list[int], raw: bool) -> None:
    held = 1
    for size in shape:
        held *= size or 1
    if held <= 2**31 - 1:  # what a tensor with data could have (a message is under 2 GiB)
        assert decode_inputs(_empty(shape, raw))["t"].shape == tuple(shape)
        return
    with pytest.raises(InvalidArgument) as info:
        decode_inputs(_empty(shape, raw))
    assert "'t'" in info.value.message and str(shape) in info.value.message


@pytest.mark.parametrize("raw", [True, False])
def test_too_many_dimensions_are_refused_before_the_element_count_is_computed(raw: bool) -> None:
    assert decode_inputs(_empty([1] * (MAX_RANK - 1) + [0], raw))["t"].ndim == MAX_RANK
    with pytest.raises(InvalidArgument, match=f"'t': shape has {MAX_RANK + 1} dimensions"):
        decode_inputs(_empty([1] * MAX_RANK + [0], raw))
    # math.prod over these took seconds of the event loop; now refused at once.
    with pytest.raises(InvalidArgument, match="30001 dimensions"):
        decode_inputs(_empty([2**62] * 30_000 + [0], raw))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=25), st.text(alphabet="0123456789²³¹٣߃₂", max_size=25)))
def test_a_version_is_ascii_digits_or_names_no_version(text: str) -> None:
    if not text:
        assert parse_version("m", text) is None
    elif len(text) <= 19 and all(c in "0123456789" for c in text):
        assert parse_version("m", text) == int(text)
    else:
        with pytest.raises(NotFound, match="has no version"):
            parse_version("m", text)


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "1\u00b2", "9" * 5000])
def test_unicode_digits_and_endless_digit_strings_name_no_version(text: str) -> None:
    with pytest.raises(NotFound, match="has no version"):
        parse_version("m", text)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=24))
def test_raw_bool_bytes_are_0_or_1_or_refused(data: bytes) -> None:
    """numpy took any byte as a bool and ONNX Runtime computed with it (Not(0x02) is 0x03, still true)."""
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[data])
    request.inputs.add(name="flags", datatype="BOOL", shape=[1, len(data)])
    bad = [i for i, byte in enumerate(data) if byte > 1]
    if not bad:
        assert decode_inputs(request)["flags"].tolist() == [[byte == 1 for byte in data]]
        return
    with pytest.raises(InvalidArgument) as info:
        decode_inputs(request)
    message = info.value.message
    assert "'flags'" in message and f"BOOL byte {data[bad[0]]} (element {bad[0]} " in message, message
