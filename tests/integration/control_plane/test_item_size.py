"""Every item the control plane accepts can be read back through gRPC's default 4 MiB receive limit (which
the control plane and the SDK keep, as every other gRPC client has it): a write received within the limit
made an item read back larger (ids, timestamps, a page's envelope), so a description sent just under 4 MiB
was stored and then failed every Get and List for good (RESOURCE_EXHAUSTED on the client)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from clients.aether.v1 import feature_registry_pb2 as fr
from clients.aether.v1 import model_registry_pb2 as mr
from clients.aether.v1 import tracking_pb2 as tr
from clients.aether.v1 import types_pb2
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from clients.aether.v1.model_registry_pb2_grpc import ModelRegistryStub
from clients.aether.v1.tracking_pb2_grpc import TrackingStub
from control_plane.api import model_registry, tracking
from control_plane.db.pages import MAX_ITEM_BYTES
from tests.integration.tracking.conftest import ThreadedControlPlane, settings_for

#: gRPC's default receive limit: the most a write request can be, and the most a reply can be.
RECEIVE_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Kind:
    """One kind of item: its create request and the item it writes (from a name and a description), how
    to send the request, read the item, and list the items."""

    request: Callable[[str, str], Message]
    item: Callable[[str, str], Message]
    create: Callable[[grpc.Channel, Any], object]
    get: Callable[[grpc.Channel, str], Message]
    listed: Callable[[grpc.Channel], list[str]]  # names on the first page


def _stub(stub: type, channel: grpc.Channel) -> Any:
    return stub(channel)


def _entity(name: str, description: str) -> fr.Entity:
    key = fr.JoinKey(name="id", value_type=types_pb2.INT64)
    return fr.Entity(name=name, join_keys=[key], description=description)


KINDS = {
    "experiment": Kind(
        lambda name, text: tr.CreateExperimentRequest(name=name, description=text),
        lambda name, text: tr.Experiment(name=name, description=text),
        lambda channel, item: _stub(TrackingStub, channel).CreateExperiment(item),
        lambda channel, name: _stub(TrackingStub, channel).GetExperiment(tr.GetExperimentRequest(name=name)),
        lambda ch: [
            e.name for e in _stub(TrackingStub, ch).ListExperiments(tr.ListExperimentsRequest()).experiments
        ],
    ),
    "registered model": Kind(
        lambda name, text: mr.CreateRegisteredModelRequest(name=name, description=text),
        lambda name, text: mr.RegisteredModel(name=name, description=text),
        lambda channel, item: _stub(ModelRegistryStub, channel).CreateRegisteredModel(item),
        lambda channel, name: _stub(ModelRegistryStub, channel).GetRegisteredModel(
            mr.GetRegisteredModelRequest(name=name)
        ),
        lambda ch: [
            m.name
            for m in _stub(ModelRegistryStub, ch)
            .ListRegisteredModels(mr.ListRegisteredModelsRequest())
            .models
        ],
    ),
    "entity": Kind(
        lambda name, text: fr.CreateEntityRequest(entity=_entity(name, text)),
        _entity,
        lambda channel, request: _stub(FeatureRegistryStub, channel).CreateEntity(request),
        lambda channel, name: _stub(FeatureRegistryStub, channel).GetEntity(fr.GetEntityRequest(name=name)),
        lambda ch: [
            e.name for e in _stub(FeatureRegistryStub, ch).ListEntities(fr.ListEntitiesRequest()).entities
        ],
    ),
}


def sized(build: Callable[[str], Message], size: int) -> str:
    """The description that makes ``build(description)`` exactly ``size`` bytes."""
    text = "d" * (size - build("").ByteSize())
    while build(text).ByteSize() > size:  # the length's own varint grew
        text = text[:-1]
    assert build(text).ByteSize() == size
    return text


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    home = tmp_path_factory.mktemp("plane")
    settings = settings_for(home / "home", f"sqlite:///{home / 'aether.db'}")
    plane = ThreadedControlPlane(settings, (tracking.add_to_server, model_registry.add_to_server))
    try:
        with grpc.insecure_channel(plane.address) as opened:  # gRPC's default limits, as any client
            yield opened
    finally:
        plane.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_the_largest_item_accepted_reads_back_whole(kind: str, channel: grpc.Channel) -> None:
    spec = KINDS[kind]
    name = kind.replace(" ", "_")

    # A request as large as gRPC receives: refused, or else readable (it was stored, then unreadable).
    whole = f"{name}_whole"
    request = sized(lambda text: spec.request(whole, text), RECEIVE_LIMIT)
    try:
        spec.create(channel, spec.request(whole, request))
    except grpc.RpcError as refused:
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused
        assert f"over the limit of {MAX_ITEM_BYTES:,} bytes" in str(refused.details())
    else:
        assert spec.get(channel, whole).description == request  # type: ignore[attr-defined]

    # The largest accepted item reads back by Get and on a List page; a byte more is refused.
    largest = f"{name}_largest"
    text = sized(lambda text: spec.item(largest, text), MAX_ITEM_BYTES)
    with pytest.raises(grpc.RpcError) as over:
        spec.create(channel, spec.request(largest, text + "d"))
    assert over.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    spec.create(channel, spec.request(largest, text))
    assert spec.get(channel, largest).description == text  # type: ignore[attr-defined]
    assert largest in spec.listed(channel)
