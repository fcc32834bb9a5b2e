"""ModelInfer inputs decoded from typed ``contents``: every integer datatype gets exactly the values sent, and
a value its datatype cannot hold is refused (INVALID_ARGUMENT naming the input, the datatype and the value),
never wrapped; checked against a brute-force reference of each datatype's range."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from clients.inference import grpc_predict_v2_pb2 as pb
from data_plane.api.oip_tensors import decode_inputs

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
