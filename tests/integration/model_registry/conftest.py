"""A real control plane serving the model registry, the artifact store and experiment tracking, with
the model registry's guard plugged into the feature registry. It runs on its own event loop in a
background thread, so the synchronous SDK and plain threads can call it from the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy.orm import Session

from clients.aether.v1 import feature_registry_pb2 as fpb
from clients.aether.v1 import tracking_pb2 as tpb
from clients.aether.v1 import types_pb2
from clients.aether.v1.tracking_pb2_grpc import TrackingStub
from clients.sdk.models import ModelRegistryClient
from clients.sdk.registry import FeatureRegistryClient
from control_plane.api import tracking
from control_plane.api.context import ServiceModule
from control_plane.api.model_registry import services
from control_plane.model_registry.feature_guard import ModelFeatureGuard
from control_plane.model_registry.guards import ModelUser
from control_plane.retraining.model_guard import PromotionModelGuard
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from tests.support import threaded_plane


class Deployments:
    """Stands in for the deployments of issue 8 through the registry's real plug-in point: an in-memory
    table of which deployment serves which model version, consulted by deletes and lineage."""

    def __init__(self) -> None:
        self.serving: dict[tuple[str, int], list[str]] = {}

    def references(self, session: Session, model: str, version: int | None) -> list[ModelUser]:
        return [
            ModelUser("deployment", name, f"serves {used_model} version {used_version}")
            for (used_model, used_version), names in sorted(self.serving.items())
            if used_model == model and version in (None, used_version)
            for name in names
        ]


class ThreadedControlPlane(threaded_plane.ThreadedControlPlane):
    """The model registry's services with ``deployments`` as the deployment guard and the real guard of
    retraining promotions in progress (as the control plane has it), tracking, and ``more``."""

    def __init__(
        self, settings: ControlPlaneSettings, deployments: Deployments, more: Sequence[ServiceModule] = ()
    ) -> None:
        services_ = [*services([deployments, PromotionModelGuard()]), tracking.add_to_server, *more]
        super().__init__(start_server(settings, guards=[ModelFeatureGuard()], services=services_))


@dataclass
class Plane:
    address: str
    home: Path
    db_url: str
    deployments: Deployments


@pytest.fixture
def plane(tmp_path: Path, db_url: str) -> Iterator[Plane]:
    home = tmp_path / "home"
    settings = ControlPlaneSettings(
        home=home, db_url=db_url, listen_addr="127.0.0.1:0", shutdown_grace_s=0.5, watch_poll_interval_s=0.1
    )
    deployments = Deployments()
    server = ThreadedControlPlane(settings, deployments)
    yield Plane(server.address, home, db_url, deployments)
    server.stop()


@pytest.fixture
def models(plane: Plane) -> Iterator[ModelRegistryClient]:
    with ModelRegistryClient(plane.address, actor="alice", timeout=20) as client:
        yield client


@pytest.fixture
def features(plane: Plane) -> Iterator[FeatureRegistryClient]:
    with FeatureRegistryClient(plane.address, timeout=20) as client:
        yield client


def rider_view(*features: str, uri: str = "s3://lake/riders.parquet") -> fpb.FeatureViewSpec:
    return fpb.FeatureViewSpec(
        name="rider_stats",
        entity="rider",
        ttl_seconds=3600,
        source=fpb.Source(kind="batch", uri=uri, timestamp_field="ts"),
        features=[fpb.Feature(name=name, value_type=types_pb2.FLOAT32) for name in features],
    )


@pytest.fixture
def rider_stats(features: FeatureRegistryClient) -> str:
    """Feature view ``rider_stats`` at versions 1 (trips) and 2 (trips, rating)."""
    features.create_entity(
        fpb.Entity(name="rider", join_keys=[fpb.JoinKey(name="rider_id", value_type=types_pb2.INT64)])
    )
    features.create_feature_view(rider_view("trips"), fpb.FeatureViewMetadata(owner="growth"))
    features.create_feature_view_version(rider_view("trips", "rating"))
    return "rider_stats"


@pytest.fixture
def make_run(plane: Plane) -> Iterator[Callable[..., str]]:
    """Creates a tracked run (through the tracking service) and returns its id."""
    channel = grpc.insecure_channel(plane.address)
    stub = TrackingStub(channel)  # type: ignore[no-untyped-call]

    def make(experiment: str = "eta", params: dict[str, str] | None = None) -> str:
        try:
            experiment_id = stub.GetExperiment(tpb.GetExperimentRequest(name=experiment)).experiment_id
        except grpc.RpcError:
            experiment_id = stub.CreateExperiment(tpb.CreateExperimentRequest(name=experiment)).experiment_id
        run = stub.CreateRun(
            tpb.CreateRunRequest(experiment_id=experiment_id, name="train", params=params or {})
        )
        return str(run.run_id)

    yield make
    channel.close()
