"""The online read's request split against protobuf's own parser: the scan of the leading run of
references (kernels/wire_scan.py) and split_request must give the same references and rows as a full
parse, whatever order the fields come in, and plans compiled from the bytes equal plans from strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import online_features_pb2 as pb
from data_plane.api.online_features import RequestSplitter, split_request
from data_plane.catalog import Catalog
from kernels.wire_scan import leading_run
from tests.unit.data_plane.registry_builders import floats, snapshot, view

refs = st.lists(st.text(min_size=0, max_size=200), max_size=60)
rows = st.lists(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3), max_size=5)


def _request(features: list[str], entity_rows: list[dict[str, str]]) -> pb.GetOnlineFeaturesRequest:
    request = pb.GetOnlineFeaturesRequest(features=features)
    for keys in entity_rows:
        request.rows.add().keys.update(keys)
    return request


@settings(deadline=None)  # the first example compiles the numba kernel
@given(refs, rows)
def test_the_leading_run_is_exactly_the_serialized_references(
    features: list[str], entity_rows: list[dict[str, str]]
) -> None:
    data = _request(features, entity_rows).SerializeToString()
    end, count = leading_run(data, 1)
    assert count == len(features)
    assert end == len(pb.GetOnlineFeaturesRequest(features=features).SerializeToString())


@settings(deadline=None)
@given(refs, rows, st.data())
def test_split_gives_what_a_full_parse_gives_in_any_field_order(
    features: list[str], entity_rows: list[dict[str, str]], data: st.DataObject
) -> None:
    # Serialize each entry on its own and shuffle: a valid encoding any serializer might produce.
    pieces = [pb.GetOnlineFeaturesRequest(features=[f]).SerializeToString() for f in features]
    pieces += [_request([], [keys]).SerializeToString() for keys in entity_rows]
    wire_bytes = b"".join(data.draw(st.permutations(pieces)))
    expected = pb.GetOnlineFeaturesRequest.FromString(wire_bytes)
    features_wire, count, message = split_request(wire_bytes)
    got_refs = list(pb.GetOnlineFeaturesRequest.FromString(features_wire).features) if features_wire else []
    if features_wire:
        assert count == len(got_refs) and not message.features
    else:
        got_refs = list(message.features)
    assert got_refs == list(expected.features)
    assert [dict(r.keys) for r in message.rows] == [dict(r.keys) for r in expected.rows]


def _parts(split: tuple[bytes, int, pb.GetOnlineFeaturesRequest]) -> tuple[bytes, int, bytes]:
    features_wire, count, message = split
    return features_wire, count, message.SerializeToString(deterministic=True)


# Requests built from a few shared reference lists, so that one often starts with the previous one's run
# (the memo's hit), extends it by more references, or shares only some of it.
shared_refs = st.lists(st.sampled_from(["a", "b:x", "b@2:y", "c" * 130, ""]), max_size=6)


@settings(deadline=None)
@given(st.lists(st.tuples(shared_refs, rows, st.booleans()), min_size=1, max_size=12))
def test_the_memo_of_the_last_run_splits_as_split_request_does(
    requests: list[tuple[list[str], list[dict[str, str]], bool]],
) -> None:
    splitter = RequestSplitter()
    for features, entity_rows, interleave in requests:
        data = _request(features, entity_rows).SerializeToString()
        if interleave and features:  # a reference after the rows: not one leading run
            data += pb.GetOnlineFeaturesRequest(features=features[:1]).SerializeToString()
        assert _parts(splitter.split(data)) == _parts(split_request(data))


def test_the_memo_answers_with_the_bytes_object_it_holds() -> None:
    """The plan cache then hashes nothing new: its key is the same object as last time."""
    splitter = RequestSplitter()
    first = splitter.split(_request(["driver:f0", "trip"], [{"driver_id": "1"}]).SerializeToString())
    second = splitter.split(_request(["driver:f0", "trip"], [{"driver_id": "2"}]).SerializeToString())
    assert second[0] is first[0]
    assert [dict(r.keys) for r in second[2].rows] == [{"driver_id": "2"}]
    longer = splitter.split(_request(["driver:f0", "trip", "x"], []).SerializeToString())
    assert longer[1] == 3  # starts with the memo's run but goes on: scanned again


def test_a_truncated_entry_is_reported_as_malformed() -> None:
    data = pb.GetOnlineFeaturesRequest(features=["driver:trips", "driver:rating"]).SerializeToString()
    assert leading_run(data[:-3], 1) == (-1, 0)
    assert leading_run(b"", 1) == (0, 0)
    assert leading_run(b"\x12\x00", 1) == (0, 0)  # starts with field 2: no leading run of field 1


def test_plans_from_bytes_equal_plans_from_strings() -> None:
    catalog = Catalog(snapshot(view("driver", floats(3)), view("trip", floats(2))))
    references = ["driver:f0", "trip", "driver@1:f2"]
    features_wire, count, _ = split_request(_request(references, [{"driver_id": "1"}]).SerializeToString())
    assert count == 3
    assert catalog.plan_for_wire(features_wire) == catalog.plan(references)
    assert catalog.plan_for_wire(features_wire) is catalog.plan_for_wire(bytes(features_wire))  # cached
