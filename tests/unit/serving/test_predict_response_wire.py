"""Predict answers are written as wire bytes (``encode_response``); they must be exactly what protobuf
serializes for the message ``to_response`` builds (which PredictBatch still uses), for any outputs, row
facts, versions, variants and request ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clients.aether.v1 import inference_pb2 as pb
from data_plane.api.predict import encode_response, to_response
from data_plane.feature_vector import RowFacts
from data_plane.models.spec import ModelSpec
from data_plane.predictor import Prediction

_ARRAYS = hnp.arrays(
    st.sampled_from([np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.uint8)]),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
_ROWS = st.lists(
    st.builds(RowFacts, st.booleans(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=5
)


@settings(max_examples=200, deadline=None)
@given(
    outputs=st.dictionaries(st.text(min_size=1, max_size=6), _ARRAYS, max_size=3),
    name=st.text(max_size=10),
    version=st.integers(1, 2**40),
    variant=st.text(max_size=8),
    request_id=st.text(max_size=40),
    rows=_ROWS,
)
def test_bytes_equal_the_message_s_serialization(
    outputs: dict[str, np.ndarray],
    name: str,
    version: int,
    variant: str,
    request_id: str,
    rows: list[RowFacts],
) -> None:
    spec = ModelSpec(name=name, version=version, artifact_sha256="", artifact_uri="", inputs=(), outputs=())
    prediction = Prediction(outputs, spec, variant, request_id, tuple(rows))
    ours = encode_response(prediction)
    expected = to_response(prediction)
    assert pb.PredictResponse.FromString(ours) == expected
    assert ours == expected.SerializeToString(deterministic=True)
