"""ModelInfer answers are written as wire bytes (``encode_response``); they must be exactly what protobuf
would serialize for the same response, for any outputs, shapes, byte orders and request ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clients.inference import grpc_predict_v2_pb2 as pb
from data_plane.api.oip_tensors import DATATYPE_TO_NUMPY, encode_response


def _reference(
    name: str, version: str, request_id: str, outputs: dict[str, np.ndarray], requested: list[str]
) -> pb.ModelInferResponse:
    """The response built through protobuf's own API (what the servicer did before it wrote bytes)."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for output in requested or list(outputs):
        array = outputs[output]
        datatype = next(k for k, v in DATATYPE_TO_NUMPY.items() if v == array.dtype.newbyteorder("="))
        response.outputs.add(name=output, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return response


_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_])
_ARRAYS = st.tuples(_DTYPES, st.sampled_from(["<", ">"])).flatmap(
    lambda d: hnp.arrays(
        np.dtype(d[0]).newbyteorder(d[1]), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)
    )
)
_NAMES = st.text(alphabet="abcxyz_é", min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    name=_NAMES,
    version=st.sampled_from(["1", "17", "300"]),
    request_id=st.one_of(st.just(""), st.text(max_size=300)),
    outputs=st.dictionaries(_NAMES, _ARRAYS, min_size=1, max_size=3),
    data=st.data(),
)
def test_bytes_equal_protobuf_s_serialization(
    name: str, version: str, request_id: str, outputs: dict[str, np.ndarray], data: st.DataObject
) -> None:
    requested = data.draw(st.one_of(st.just([]), st.lists(st.sampled_from(sorted(outputs)), unique=True)))
    ours = encode_response(name, version, request_id, outputs, requested)
    expected = _reference(name, version, request_id, outputs, requested)
    assert pb.ModelInferResponse.FromString(ours) == expected
    assert ours == expected.SerializeToString(deterministic=True)
