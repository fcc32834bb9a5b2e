"""The hand-written response encoding parses to the same message protobuf itself would build."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import online_features_pb2 as pb
from data_plane.wire import block_prefix, encode_response, varint

columns = st.lists(st.tuples(st.text(max_size=20), st.integers(0, 6)), max_size=30)
blocks = st.lists(
    st.tuples(st.text(max_size=10), st.integers(0, 2**32 - 1), columns, st.binary(max_size=300),
              st.binary(max_size=40), st.binary(max_size=40)),
    max_size=4,
)  # fmt: skip


@given(st.integers(0, 2**32 - 1), blocks)
def test_encoded_response_equals_protobufs_own(row_count: int, cases: list) -> None:  # type: ignore[type-arg]
    expected = pb.GetOnlineFeaturesResponse(row_count=row_count)
    encoded_blocks = []
    for view, version, cols, values, statuses, timestamps in cases:
        expected.blocks.add(
            view=view,
            version=version,
            columns=[pb.FeatureColumnSpec(name=n, value_type=t) for n, t in cols],
            values=values,
            statuses=statuses,
            event_timestamps_us=timestamps,
        )
        encoded_blocks.append((block_prefix(view, version, cols), values, statuses, timestamps))
    encoded = encode_response(row_count, encoded_blocks)
    assert pb.GetOnlineFeaturesResponse.FromString(encoded) == expected
    assert encoded == expected.SerializeToString(deterministic=True)


@given(st.integers(0, 2**64 - 1))
def test_varint_matches_protobuf(value: int) -> None:
    message = pb.FeatureBlock(version=value & 0xFFFFFFFF)
    if value & 0xFFFFFFFF:
        assert message.SerializeToString() == b"\x10" + varint(value & 0xFFFFFFFF)
    assert len(varint(value)) == max(1, (value.bit_length() + 6) // 7)
