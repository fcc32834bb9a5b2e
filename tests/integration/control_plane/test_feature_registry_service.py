"""The FeatureRegistry service over a real grpc.aio server: answers, status codes and messages, health
and reflection."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from control_plane.db import pages
from control_plane.server import ControlPlaneServer
from tests.support.grpc_core import pending_registered_method_requests
from tests.unit.control_plane.builders import entity, metadata, spec, view

pytestmark = pytest.mark.integration


async def expect_status(call: object, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    for fragment in fragments:
        assert fragment in details
    return details


async def test_create_get_and_list_round_trip(stub: FeatureRegistryStub) -> None:
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
    created = await stub.CreateFeatureView(
        pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata(owner="ml"))
    )

    got = await stub.GetFeatureView(pb.GetFeatureViewRequest(name="driver_stats"))
    listed = await stub.ListFeatureViews(pb.ListFeatureViewsRequest(owner="ml"))

    assert got == created and got.spec == spec() and got.version == 1
    assert list(listed.views) == [created]
    assert (await stub.GetEntity(pb.GetEntityRequest(name="driver"))).join_keys[0].name == "driver_id"


async def test_versions_and_metadata_over_the_wire(stub: FeatureRegistryStub) -> None:
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
    await stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata()))
    v2 = await stub.CreateFeatureViewVersion(pb.CreateFeatureViewVersionRequest(spec=spec(ttl_seconds=5)))
    edited = await stub.UpdateFeatureViewMetadata(
        pb.UpdateFeatureViewMetadataRequest(name="driver_stats", feature_descriptions={"trips": "count"})
    )
    validated = await stub.UpdateValidation(
        pb.UpdateValidationRequest(
            name="driver_stats", version=1, rules={"rating": pb.ValidationRule(max_value=5)}
        )
    )
    versions = await stub.ListFeatureViewVersions(pb.ListFeatureViewVersionsRequest(name="driver_stats"))

    assert v2.version == 2 and edited.version == 2 and edited.metadata.owner == "team-a"
    assert edited.spec.features[0].description == "count"
    assert validated.version == 1 and validated.spec.features[1].validation.max_value == 5
    assert [v.spec.ttl_seconds for v in versions.versions] == [3600, 5]


async def test_errors_carry_their_status_code_and_name_the_culprit(stub: FeatureRegistryStub) -> None:
    await expect_status(
        stub.GetFeatureView(pb.GetFeatureViewRequest(name="nope")), grpc.StatusCode.NOT_FOUND, "'nope'"
    )
    await expect_status(
        stub.GetEntity(pb.GetEntityRequest(name="ghost")), grpc.StatusCode.NOT_FOUND, "'ghost'"
    )
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity()))
    await expect_status(
        stub.CreateEntity(pb.CreateEntityRequest(entity=entity())), grpc.StatusCode.ALREADY_EXISTS, "'driver'"
    )
    string_feature = spec(features=[("name", types_pb2.STRING)])
    await expect_status(
        stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=string_feature)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "spec.features[0].value_type: unsupported type string",
    )
    await stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec()))
    await expect_status(
        stub.GetFeatureView(pb.GetFeatureViewRequest(name="driver_stats", version=9)),
        grpc.StatusCode.NOT_FOUND,
        "no version 9",
    )
    await expect_status(
        stub.DeleteEntity(pb.DeleteEntityRequest(name="driver")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "used by feature views driver_stats",
    )
    await expect_status(
        stub.RetireFeatureViewVersion(pb.ChangeVersionStatusRequest(name="driver_stats", version=1)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is ACTIVE",
    )
    await expect_status(
        stub.CreateFeatureViewVersion(pb.CreateFeatureViewVersionRequest(spec=spec())),
        grpc.StatusCode.FAILED_PRECONDITION,
        "nothing versioned changed",
    )


async def test_apply_over_the_wire_is_all_or_nothing(stub: FeatureRegistryStub) -> None:
    good = pb.ApplyRequest(entities=[entity()], views=[view(spec())])
    bad = pb.ApplyRequest(entities=[entity()], views=[view(spec()), view(spec(name="other", entity="drivr"))])

    details = await expect_status(stub.Apply(bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith("views[1].spec.entity: entity 'drivr' not found")
    assert not (await stub.ListEntities(pb.ListEntitiesRequest())).entities

    first = await stub.Apply(good)
    second = await stub.Apply(good)
    assert first.applied and [step.action for step in first.steps] == [pb.CREATE, pb.CREATE]
    assert [step.action for step in second.steps] == [pb.NO_CHANGE, pb.NO_CHANGE]


async def test_delete_view_then_entity(stub: FeatureRegistryStub) -> None:
    await stub.Apply(pb.ApplyRequest(entities=[entity()], views=[view(spec())]))
    await stub.DeleteFeatureView(pb.DeleteFeatureViewRequest(name="driver_stats"))
    await stub.DeleteEntity(pb.DeleteEntityRequest(name="driver"))
    await expect_status(
        stub.DeleteFeatureView(pb.DeleteFeatureViewRequest(name="driver_stats")), grpc.StatusCode.NOT_FOUND
    )
    assert not (await stub.ListEntities(pb.ListEntitiesRequest())).entities


async def test_health_reports_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "aether.v1.FeatureRegistry"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    async for response in responses:
        names = {service.name for service in response.list_services_response.service}
        assert {"aether.v1.FeatureRegistry", "grpc.health.v1.Health"} <= names
        break
    else:
        raise AssertionError("no reflection answer")


async def test_no_method_is_registered_with_grpc_core(server: ControlPlaneServer) -> None:
    # Every method registered with gRPC core would cost every call an asyncio.wait over one more pending
    # request (clients.server_handlers); the control plane serves them all through generic handlers.
    assert pending_registered_method_requests() == 0


async def _every_page(list_page: Any, request: Any, field: str) -> list[Any]:
    """The items of every page of a listing, checking that each page fits its byte bound."""
    items: list[Any] = []
    while True:
        page = await list_page(request)
        assert getattr(page, field) and page.ByteSize() <= pages.MAX_PAGE_BYTES + 16
        items += getattr(page, field)
        if not page.next_page_token:
            return items
        request.page_token = page.next_page_token


async def test_lists_are_cut_into_pages_by_size_and_lose_nothing(stub: FeatureRegistryStub) -> None:
    # Descriptions have no size bound: five entities, five views and five versions of a view with
    # 1,000,000-character descriptions made 5 MB replies, over gRPC's 4 MiB, and each listing failed
    # RESOURCE_EXHAUSTED for good.
    large = "d" * 1_000_000
    names = [f"e{index}" for index in range(5)]
    for name in names:
        await stub.CreateEntity(pb.CreateEntityRequest(entity=entity(name=name, description=large)))
    views = [f"v{index}" for index in range(5)]
    for name in views:
        big = pb.CreateFeatureViewRequest(spec=spec(name=name, entity="e0"), metadata=metadata(large, "big"))
        await stub.CreateFeatureView(big)
    await stub.CreateFeatureView(
        pb.CreateFeatureViewRequest(spec=spec(name="zz_small", entity="e0"), metadata=metadata(owner="ml"))
    )
    for ttl in range(1, 5):  # versions 2 to 5 of v0: each carries the view's description
        await stub.CreateFeatureViewVersion(
            pb.CreateFeatureViewVersionRequest(spec=spec("v0", "e0", ttl_seconds=ttl))
        )

    # A client that predates paging gets the first page, where before it got nothing at all.
    first = await stub.ListFeatureViews(pb.ListFeatureViewsRequest())
    assert [view.spec.name for view in first.views] == views[:2] and first.next_page_token
    listed = await _every_page(stub.ListFeatureViews, pb.ListFeatureViewsRequest(), "views")
    assert [view.spec.name for view in listed] == [*views, "zz_small"]
    owned = await _every_page(stub.ListFeatureViews, pb.ListFeatureViewsRequest(owner="big"), "views")
    assert [view.spec.name for view in owned] == views
    entities = await _every_page(stub.ListEntities, pb.ListEntitiesRequest(), "entities")
    assert [found.name for found in entities] == names
    versions = await _every_page(
        stub.ListFeatureViewVersions, pb.ListFeatureViewVersionsRequest(name="v0"), "versions"
    )
    assert [found.version for found in versions] == [1, 2, 3, 4, 5]

    # page_size bounds the count as well; 0 is the byte bound alone.
    one = await stub.ListFeatureViewVersions(pb.ListFeatureViewVersionsRequest(name="v0", page_size=1))
    assert [found.version for found in one.versions] == [1] and one.next_page_token
    small = await stub.ListFeatureViews(pb.ListFeatureViewsRequest(owner="ml", page_size=5))
    assert [view.spec.name for view in small.views] == ["zz_small"] and not small.next_page_token

    # A token belongs to its listing and query: elsewhere it would skip or repeat items.
    foreign = pb.ListFeatureViewsRequest(owner="big", page_token=first.next_page_token)
    await expect_status(stub.ListFeatureViews(foreign), grpc.StatusCode.INVALID_ARGUMENT, "different filter")
    other_view = pb.ListFeatureViewVersionsRequest(name="v1", page_token=one.next_page_token)
    await expect_status(
        stub.ListFeatureViewVersions(other_view), grpc.StatusCode.INVALID_ARGUMENT, "different view"
    )
    await expect_status(
        stub.ListEntities(pb.ListEntitiesRequest(page_token=first.next_page_token)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not by ListEntities",
    )
    await expect_status(
        stub.ListEntities(pb.ListEntitiesRequest(page_size=1001)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size must be 0 (no bound) to 1000, got 1001",
    )


async def test_a_listing_reads_on_past_its_first_chunk_of_rows(stub: FeatureRegistryStub) -> None:
    # Rows are read 32 at a time while a page fills: 70 small entities are one page, or three of 30.
    names = sorted(f"entity_{index}" for index in range(70))
    for name in names:
        await stub.CreateEntity(pb.CreateEntityRequest(entity=entity(name=name)))
    whole = await stub.ListEntities(pb.ListEntitiesRequest())
    assert [found.name for found in whole.entities] == names and not whole.next_page_token
    paged = await _every_page(stub.ListEntities, pb.ListEntitiesRequest(page_size=30), "entities")
    assert [found.name for found in paged] == names


async def test_a_write_that_would_make_a_view_too_large_to_list_is_refused(stub: FeatureRegistryStub) -> None:
    """Two description updates, each under gRPC's limit, made one view a 5 MB message: the second update
    was committed yet reported RESOURCE_EXHAUSTED, and from then on no listing could get past that view
    (a page always carries its first item). Such a write is now INVALID_ARGUMENT and changes nothing."""
    await stub.CreateEntity(pb.CreateEntityRequest(entity=entity(name="e0")))
    await stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec(name="a_big", entity="e0")))
    await stub.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec(name="b_small", entity="e0")))
    first = (await stub.GetFeatureView(pb.GetFeatureViewRequest(name="a_big"))).spec.features[0].name
    half = "d" * 1_200_000
    await stub.UpdateFeatureViewMetadata(
        pb.UpdateFeatureViewMetadataRequest(name="a_big", metadata=metadata(half, "ml"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.UpdateFeatureViewMetadata(
            pb.UpdateFeatureViewMetadataRequest(name="a_big", feature_descriptions={first: half})
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "feature view 'a_big' version 1 would take" in (refused.value.details() or "")
    kept = await stub.GetFeatureView(pb.GetFeatureViewRequest(name="a_big"))
    assert kept.spec.features[0].description != half  # nothing was changed
    listed = await _every_page(stub.ListFeatureViews, pb.ListFeatureViewsRequest(), "views")
    assert [found.spec.name for found in listed] == ["a_big", "b_small"]
