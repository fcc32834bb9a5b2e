"""Definitions the registry must refuse, over a real control-plane gRPC server on both backends: a view
that could be stored but never materialized must be refused at registration, with the field's path."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from control_plane.features.durations import MAX_DURATION_S
from tests.unit.control_plane.builders import entity, metadata, spec, view

pytestmark = pytest.mark.integration


async def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


def windowed(window_seconds: int) -> pb.FeatureViewSpec:
    aggregation = pb.Aggregation(column="fare", function="sum", window_seconds=window_seconds, output="fares")
    return spec(features=[("fares", types_pb2.FLOAT64)], aggregations=[aggregation])


async def test_a_window_longer_than_int64_microseconds_is_refused(stub: FeatureRegistryStub) -> None:
    # The stream materializer keeps a window in int64 microseconds: one of 2**62 s was registered, and
    # then every event the materializer applied failed (OverflowError in the window kernel's arguments).
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))

    details = await refused(
        stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=windowed(2**62), metadata=metadata())),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("spec.aggregations[0].window_seconds:"), details
    assert str(MAX_DURATION_S) in details and str(2**62) in details
    details = await refused(
        stub.Apply(pb.ApplyRequest(views=[view(windowed(MAX_DURATION_S + 1))])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("views[0].spec.aggregations[0].window_seconds:"), details

    longest = await stub.CreateFeatureView(
        pb.CreateFeatureViewRequest(spec=windowed(MAX_DURATION_S), metadata=metadata())
    )
    assert longest.spec.aggregations[0].window_seconds == MAX_DURATION_S


async def test_a_timestamp_field_named_like_a_join_key_is_refused(stub: FeatureRegistryStub) -> None:
    # One column cannot be both the record's key and its event time: with an int64 key every record of
    # such a view was quarantined ("driver_id: 1 is of type int64, not a time-zone-aware timestamp").
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
    keyed = pb.Source(kind="batch", uri="data/driver_stats.parquet", timestamp_field="driver_id")

    details = await refused(
        stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec(source=keyed), metadata=metadata())),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("spec.source.timestamp_field:"), details
    assert "'driver_id'" in details and "join key" in details
    details = await refused(
        stub.Apply(pb.ApplyRequest(views=[view(spec(source=keyed))])), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details.startswith("views[0].spec.source.timestamp_field:"), details

    await stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata()))
    details = await refused(
        stub.CreateFeatureViewVersion(pb.CreateFeatureViewVersionRequest(spec=spec(source=keyed))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith("spec.source.timestamp_field:"), details
    listed = await stub.ListFeatureViewVersions(pb.ListFeatureViewVersionsRequest(name="driver_stats"))
    assert [version.version for version in listed.versions] == [1]


async def test_reordering_aggregations_in_the_file_makes_no_new_version(stub: FeatureRegistryStub) -> None:
    # The materializer lays a view's values out in feature order (plan_for orders the aggregations by
    # their outputs) and the fingerprint covers the features alone: listing the same aggregations in
    # another order changes nothing stored, yet each such apply made a new, empty version.
    counted = pb.Aggregation(column="trip_id", function="count", window_seconds=3600, output="trips")
    rated = pb.Aggregation(column="rating", function="mean", window_seconds=600, output="rating_10m")
    features = [("trips", types_pb2.INT64), ("rating_10m", types_pb2.FLOAT64)]
    stream = pb.Source(kind="stream", uri="driver_events", timestamp_field="event_ts")
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
    first = await stub.Apply(
        pb.ApplyRequest(views=[view(spec(features=features, source=stream, aggregations=[counted, rated]))])
    )
    assert [step.version for step in first.steps] == [1]

    swapped = spec(features=features, source=stream, aggregations=[rated, counted])
    again = await stub.Apply(pb.ApplyRequest(views=[view(swapped)]))

    assert [(step.action, step.version) for step in again.steps] == [(pb.NO_CHANGE, 1)], again
    details = await refused(
        stub.CreateFeatureViewVersion(pb.CreateFeatureViewVersionRequest(spec=swapped)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "nothing versioned changed" in details
    longer = pb.Aggregation(column="rating", function="mean", window_seconds=900, output="rating_10m")
    changed = await stub.Apply(
        pb.ApplyRequest(views=[view(spec(features=features, source=stream, aggregations=[longer, counted]))])
    )
    assert [(step.action, step.version) for step in changed.steps] == [(pb.NEW_VERSION, 2)], changed


async def test_a_file_back_at_the_served_version_after_a_rollback_makes_no_new_version(
    stub: FeatureRegistryStub,
) -> None:
    # Version 2 was rolled back (deprecated, retired), so version 1 is served again; the file, reverted to
    # version 1's definition, was compared with version 2 and made version 3, a copy of version 1 with
    # nothing materialized, which every reader of the latest version then moved to.
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
    await stub.Apply(pb.ApplyRequest(views=[view(spec())]))
    await stub.Apply(pb.ApplyRequest(views=[view(spec(ttl_seconds=60))]))
    for change in (stub.DeprecateFeatureViewVersion, stub.RetireFeatureViewVersion):
        await change(pb.ChangeVersionStatusRequest(name="driver_stats", version=2))

    described = spec(descriptions={"trips": "trips in the last hour"})
    again = await stub.Apply(pb.ApplyRequest(views=[view(described)]))

    assert [(step.action, step.version) for step in again.steps] == [(pb.UPDATE_METADATA, 1)], again
    served = await stub.GetFeatureView(pb.GetFeatureViewRequest(name="driver_stats"))
    assert (served.version, served.latest_version) == (1, 2)
    assert served.spec.features[0].description == "trips in the last hour"
    # The retired definition itself, applied again, is a new version: a retired one never serves again.
    back = await stub.Apply(pb.ApplyRequest(views=[view(spec(ttl_seconds=60))]))
    assert [(step.action, step.version) for step in back.steps] == [(pb.NEW_VERSION, 3)], back
