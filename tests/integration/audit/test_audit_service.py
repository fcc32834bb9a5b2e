"""Every feature-registry mutation through the real gRPC server lands in the audit log with its actor,
before and after; the Audit service queries (by object, paginated), verifies and exports it, and
reports tampering done with raw SQL."""

from __future__ import annotations

import asyncio
import hashlib
import json

import grpc
import grpc.aio
import pytest
from sqlalchemy import text

from clients.aether.v1 import audit_pb2 as apb
from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.aether.v1.audit_pb2_grpc import AuditStub
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from clients.sdk.audit import AuditClient
from clients.sdk.auth import ChannelSecurity
from clients.sdk.registry import FeatureRegistryClient
from control_plane.db import create_db_engine, pages
from control_plane.server import ControlPlaneServer
from tests.unit.control_plane.builders import entity, metadata, spec, view

ALICE = (("x-aether-actor", "alice"),)

#: (action, object_type, object_id) of each mutation ``_mutate_everything`` makes, in order.
EXPECTED = [
    ("create", "entity", "driver"),
    ("create", "feature_view", "driver_stats"),
    ("update_metadata", "feature_view", "driver_stats"),
    ("update_validation", "feature_view", "driver_stats"),
    ("create_version", "feature_view", "driver_stats"),
    ("deprecate", "feature_view", "driver_stats"),
    ("retire", "feature_view", "driver_stats"),
    ("delete", "feature_view", "driver_stats"),
    ("apply_create", "entity", "rider"),
    ("apply_create", "feature_view", "rider_stats"),
    ("apply_update_metadata", "feature_view", "rider_stats"),
    ("delete", "feature_view", "rider_stats"),
    ("delete", "entity", "rider"),
]


async def _mutate_everything(registry: FeatureRegistryStub) -> None:
    await registry.CreateEntity(pb.CreateEntityRequest(entity=entity()), metadata=ALICE)
    await registry.CreateFeatureView(
        pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata()), metadata=ALICE
    )
    await registry.UpdateFeatureViewMetadata(
        pb.UpdateFeatureViewMetadataRequest(name="driver_stats", metadata=metadata(owner="team-b")),
        metadata=ALICE,
    )
    await registry.UpdateValidation(
        pb.UpdateValidationRequest(name="driver_stats", rules={"trips": pb.ValidationRule(min_value=0)}),
        metadata=ALICE,
    )
    await registry.CreateFeatureViewVersion(
        pb.CreateFeatureViewVersionRequest(spec=spec(features=(("trips", types_pb2.INT64),))), metadata=ALICE
    )
    for rpc in (registry.DeprecateFeatureViewVersion, registry.RetireFeatureViewVersion):
        await rpc(pb.ChangeVersionStatusRequest(name="driver_stats", version=1), metadata=ALICE)
    await registry.DeleteFeatureView(pb.DeleteFeatureViewRequest(name="driver_stats"), metadata=ALICE)
    rider = entity("rider", (("rider_id", types_pb2.INT64),))
    rider_view = view(spec(name="rider_stats", entity="rider"))
    await registry.Apply(pb.ApplyRequest(entities=[rider], views=[rider_view], dry_run=True), metadata=ALICE)
    await registry.Apply(pb.ApplyRequest(entities=[rider], views=[rider_view]), metadata=ALICE)
    await registry.Apply(pb.ApplyRequest(entities=[rider], views=[rider_view]), metadata=ALICE)  # no change
    rider_view.metadata.owner = "team-c"
    await registry.Apply(pb.ApplyRequest(entities=[rider], views=[rider_view]), metadata=ALICE)
    await registry.DeleteFeatureView(pb.DeleteFeatureViewRequest(name="rider_stats"), metadata=ALICE)
    await registry.DeleteEntity(pb.DeleteEntityRequest(name="rider"), metadata=ALICE)


async def _all(audit: AuditStub, where: apb.AuditFilter, page_size: int) -> list[apb.AuditEntry]:
    entries: list[apb.AuditEntry] = []
    token = ""
    while True:
        page = await audit.QueryAudit(
            apb.QueryAuditRequest(filter=where, page_size=page_size, page_token=token)
        )
        entries.extend(page.entries)
        if not page.next_page_token:
            return entries
        token = page.next_page_token


async def test_every_registry_mutation_is_audited_with_actor_before_and_after(
    channel: grpc.aio.Channel,
) -> None:
    registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
    await _mutate_everything(registry)
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # a refused mutation leaves no entry
        await registry.CreateEntity(pb.CreateEntityRequest(entity=entity()), metadata=ALICE)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS

    entries = await _all(audit, apb.AuditFilter(), page_size=0)
    assert [(e.action, e.object_type, e.object_id) for e in entries] == EXPECTED
    assert [e.seq for e in entries] == list(range(1, len(EXPECTED) + 1))
    assert {e.actor for e in entries} == {"alice"}

    created, updated = entries[1], entries[2]
    assert not created.HasField("before_json")
    assert json.loads(created.after_json)["metadata"]["owner"] == "team-a"
    assert json.loads(updated.before_json)["metadata"]["owner"] == "team-a"
    assert json.loads(updated.after_json)["metadata"]["owner"] == "team-b"
    retired = json.loads(entries[6].after_json)
    assert (retired["version"], retired["status"]) == (1, "RETIRED")
    assert not entries[7].HasField("after_json")


async def test_query_by_object_pages_and_time_range(channel: grpc.aio.Channel) -> None:
    registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
    await _mutate_everything(registry)
    everything = await _all(audit, apb.AuditFilter(), page_size=0)

    driver_stats = await _all(audit, apb.AuditFilter(object_type="feature_view", object_id="driver_stats"), 2)
    assert [e.seq for e in driver_stats] == [
        e.seq for e in everything if (e.object_type, e.object_id) == ("feature_view", "driver_stats")
    ]
    assert len(driver_stats) == 7
    entities = await _all(audit, apb.AuditFilter(object_type="entity"), 1)
    assert [e.object_id for e in entities] == ["driver", "rider", "rider"]

    middle = everything[5].timestamp_us
    since = await _all(audit, apb.AuditFilter(since_us=middle), 4)
    until = await _all(audit, apb.AuditFilter(until_us=middle), 4)
    assert [e.seq for e in until + since] == [e.seq for e in everything]

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await audit.QueryAudit(apb.QueryAuditRequest(filter=apb.AuditFilter(object_id="x")))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_verify_and_export_report_tampering(
    server: ControlPlaneServer, channel: grpc.aio.Channel
) -> None:
    registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
    await _mutate_everything(registry)
    intact = await audit.VerifyAudit(apb.VerifyAuditRequest())
    assert (intact.ok, intact.entries_checked, intact.head_seq, intact.first_bad_seq) == (
        True,
        len(EXPECTED),
        len(EXPECTED),
        0,
    )
    exported = [e async for chunk in audit.ExportAudit(apb.ExportAuditRequest()) for e in chunk.entries]
    assert [e.seq for e in exported] == list(range(1, len(EXPECTED) + 1))
    assert exported[-1].hash == intact.head_hash

    engine = create_db_engine(server.context.settings.db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4"))
    finally:
        engine.dispose()
    broken = await audit.VerifyAudit(apb.VerifyAuditRequest())
    assert (broken.ok, broken.first_bad_seq, broken.entries_checked) == (False, 4, 3)
    assert "entry 4" in broken.reason


@pytest.mark.parametrize("token", ["²", "٣", "99999999999999999999", "-1", "+1", " 1", "1\n"])
async def test_malformed_page_tokens_are_invalid_arguments(channel: grpc.aio.Channel, token: str) -> None:
    """Unicode digits passed str.isdigit() and then failed int(); a number past 64 bits overflowed the
    bound ``seq`` parameter: both were INTERNAL."""
    audit = AuditStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await audit.QueryAudit(apb.QueryAuditRequest(page_token=token))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is malformed: not a token this server gave out" in str(bad.value.details())


async def test_a_page_token_is_good_only_for_its_filter(channel: grpc.aio.Channel) -> None:
    """The token was the bare ``seq`` of the page's last entry, which named no filter: one from a query
    of feature views given to a query of entities silently skipped the entities' entries up to that
    ``seq``. It now carries its filter, and a bare number (what releases before gave out) is refused
    with a word to start again."""
    registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
    await _mutate_everything(registry)
    views = apb.AuditFilter(object_type="feature_view")
    first = await audit.QueryAudit(apb.QueryAuditRequest(filter=views, page_size=2))
    assert [e.seq for e in first.entries] == [2, 3] and first.next_page_token
    for other in (
        apb.AuditFilter(object_type="entity"),
        apb.AuditFilter(object_type="feature_view", refused=False),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await audit.QueryAudit(apb.QueryAuditRequest(filter=other, page_token=first.next_page_token))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token belongs to a different filter" in str(bad.value.details())
    rest = await audit.QueryAudit(apb.QueryAuditRequest(filter=views, page_token=first.next_page_token))
    assert [e.object_type for e in rest.entries] == ["feature_view"] * 8 and rest.entries[0].seq == 4
    with pytest.raises(grpc.aio.AioRpcError) as bare:
        await audit.QueryAudit(apb.QueryAuditRequest(filter=views, page_token="3"))
    assert bare.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "start again from the first page" in str(bare.value.details())


async def _large_updates(registry: FeatureRegistryStub, description_chars: int) -> None:
    """Eight entries: an entity, a view and six updates of its description, each entry holding the
    description before and after it (about twice ``description_chars`` bytes)."""
    await registry.CreateEntity(pb.CreateEntityRequest(entity=entity()), metadata=ALICE)
    await registry.CreateFeatureView(pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata()))
    for letter in "abcdef":
        request = pb.UpdateFeatureViewMetadataRequest(
            name="driver_stats", metadata=metadata(description=letter * description_chars)
        )
        await registry.UpdateFeatureViewMetadata(request, metadata=ALICE)


async def test_a_page_of_large_entries_is_cut_by_size(channel: grpc.aio.Channel) -> None:
    # Each update's entry holds the description before and after it: six of ~1.4 MB took more than
    # gRPC's 4 MiB in one page of the default 100, and every QueryAudit failed RESOURCE_EXHAUSTED.
    # (Entries are now bounded at 1 MiB, so these are ~0.8 MB: six still outgrow one message.)
    registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
    await _large_updates(registry, 400_000)
    first = await audit.QueryAudit(apb.QueryAuditRequest())
    assert 0 < len(first.entries) < 8 and first.next_page_token
    assert first.ByteSize() <= pages.MAX_PAGE_BYTES
    entries = await _all(audit, apb.AuditFilter(), page_size=0)
    assert [e.seq for e in entries] == list(range(1, 9))


async def test_export_chunks_of_large_entries_are_cut_by_size(channel: grpc.aio.Channel) -> None:
    # Six entries of ~0.8 MB went out in one stream message of ~4.8 MB: over gRPC's 4 MiB, so the
    # export failed RESOURCE_EXHAUSTED for good while QueryAudit paged the same entries.
    registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
    await _large_updates(registry, 400_000)
    chunks = [chunk async for chunk in audit.ExportAudit(apb.ExportAuditRequest())]
    assert len(chunks) > 1
    assert all(chunk.entries and chunk.ByteSize() <= pages.MAX_PAGE_BYTES for chunk in chunks)
    assert [e.seq for chunk in chunks for e in chunk.entries] == list(range(1, 9))


async def test_an_entry_too_large_for_grpc_is_stored_with_markers(channel: grpc.aio.Channel) -> None:
    # A view's 2,000,000-character description is allowed; its edit stored the view before and after,
    # 4.3 MB of JSON once quotes and newlines were escaped: one entry past gRPC's 4 MiB, so no page
    # and no export reaching it could be read, even one entry at a time.
    registry, audit = FeatureRegistryStub(channel), AuditStub(channel)  # type: ignore[no-untyped-call]
    line = 'a line of documentation with a "quoted" word\n'
    first = (line * 45_000)[:2_000_000]
    await registry.CreateEntity(pb.CreateEntityRequest(entity=entity()), metadata=ALICE)
    await registry.CreateFeatureView(
        pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata(description=first)), metadata=ALICE
    )
    request = pb.UpdateFeatureViewMetadataRequest(
        name="driver_stats", metadata=metadata(description=first.upper(), owner="team-b")
    )
    await registry.UpdateFeatureViewMetadata(request, metadata=ALICE)

    entries = await _all(audit, apb.AuditFilter(), page_size=1)
    assert [e.action for e in entries] == ["create", "create", "update_metadata"]
    before, after = json.loads(entries[2].before_json), json.loads(entries[2].after_json)
    digest = hashlib.sha256(first.encode()).hexdigest()
    assert before["metadata"]["description"] == {"omitted_sha256": digest, "bytes": 2_000_000}
    assert (before["metadata"]["owner"], after["metadata"]["owner"]) == ("team-a", "team-b")
    assert after["metadata"]["description"]["bytes"] == 2_000_000
    exported = [e async for chunk in audit.ExportAudit(apb.ExportAuditRequest()) for e in chunk.entries]
    assert [e.hash for e in exported] == [e.hash for e in entries]
    assert (await audit.VerifyAudit(apb.VerifyAuditRequest())).ok


@pytest.mark.parametrize("actor", ["José", "alice\n", "50% off", "李"])
async def test_an_sdk_actor_gRPC_metadata_cannot_carry_is_recorded_as_it_is(
    server: ControlPlaneServer, actor: str
) -> None:
    """The SDK client sent its actor unencoded: a non-ASCII one ("José") or one with a newline failed
    every call with INTERNAL "Invalid metadata". Now the call succeeds and the audit log names the actor
    (a newline, which no name holds, dropped). The sync client runs on a thread beside the server's loop."""

    def create_and_read() -> list[str]:
        with FeatureRegistryClient(server.address, security=ChannelSecurity(), actor=actor) as client:
            client.create_entity(entity())
        with AuditClient(server.address, security=ChannelSecurity()) as audit:
            return [entry.actor for entry in audit.entries()]

    assert await asyncio.to_thread(create_and_read) == [actor.strip()]
