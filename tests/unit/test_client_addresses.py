"""Every SDK client checks the address it is given when it is made, as ``aetherctl`` checks
``--control-plane`` (one rule, ``clients/addresses.py``). gRPC took any text: a host without a port dialled
443, ``http://host:port`` and an empty address failed only at the first call, with an opaque UNAVAILABLE
or UNKNOWN, and a port past 65535 was taken modulo 65536 (another port). No server is needed: the refusal
comes before any channel is opened."""

from __future__ import annotations

import pytest

from clients.errors import InvalidAddress, InvalidArgument
from clients.sdk.artifacts import ArtifactClient
from clients.sdk.audit import AuditClient
from clients.sdk.deployments import DeploymentsClient
from clients.sdk.inference import InferenceClient
from clients.sdk.ingestion import IngestionClient
from clients.sdk.jobs import JobsClient
from clients.sdk.models import ModelRegistryClient
from clients.sdk.monitoring import MonitoringClient
from clients.sdk.offline import OfflineFeaturesClient
from clients.sdk.online import OnlineFeaturesClient
from clients.sdk.registry import FeatureRegistryClient
from clients.sdk.retraining import RetrainingClient
from clients.sdk.service_client import ServiceClient
from clients.sdk.tracking import TrackingClient

EXPECTED = "expected HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:50051)"

CLIENTS: list[type[ServiceClient]] = [
    ArtifactClient,
    AuditClient,
    DeploymentsClient,
    FeatureRegistryClient,
    IngestionClient,
    InferenceClient,
    JobsClient,
    ModelRegistryClient,
    MonitoringClient,
    OfflineFeaturesClient,
    OnlineFeaturesClient,
    RetrainingClient,
    TrackingClient,
]


def test_every_client_of_the_sdk_is_covered() -> None:
    of_the_sdk = {cls for cls in ServiceClient.__subclasses__() if cls.__module__.startswith("clients.")}
    assert of_the_sdk == set(CLIENTS)


@pytest.mark.parametrize("client_type", CLIENTS, ids=lambda client_type: client_type.__name__)
@pytest.mark.parametrize(
    "address",
    ["", "localhost", "127.0.0.1", "http://127.0.0.1:50051", "127.0.0.1:99999", "127.0.0.1:0", ":50051",
     "a:b:50051", " 127.0.0.1:50051", "[::1]"],
)  # fmt: skip
def test_a_malformed_address_is_refused_when_the_client_is_made(
    client_type: type[ServiceClient], address: str
) -> None:
    with pytest.raises(InvalidAddress) as refused:
        client_type(address)
    assert str(refused.value) == f"{client_type.__name__} address: {EXPECTED}, got {address!r}"
    # In the documented tree, and a ValueError as Python's own checks of an argument are.
    assert isinstance(refused.value, InvalidArgument) and isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    "address", ["127.0.0.1:50051", "localhost:1", "[::1]:65535", "dns:///aether.internal:443", "unix:/tmp/s"]
)
def test_well_formed_addresses_and_grpc_targets_are_taken(address: str) -> None:
    with TrackingClient(address) as client:
        assert client.target == address
