"""Stage 1: register the zone entity and its feature views (weather, calendar, the bookings stream with
windowed aggregations) from ``features.yaml``; a second apply shows the registry is idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.sdk.registry import FeatureRegistryClient
from control_plane.demo.progress import Say
from control_plane.features.definitions import load_definitions

DEFINITIONS = Path(__file__).with_name("features.yaml")


@dataclass(frozen=True)
class Registered:
    views: dict[str, pb.FeatureView]
    second_apply_changes: int


def register_features(address: str, say: Say) -> Registered:
    definitions = load_definitions(DEFINITIONS)
    with FeatureRegistryClient(address) as registry:
        plan = registry.apply_request(definitions.request)
        again = registry.apply_request(definitions.request)
        changes = sum(1 for s in again.steps if s.action != pb.NO_CHANGE)
        views = {v.spec.name: registry.get_feature_view(v.spec.name) for v in definitions.request.views}
    say(f"[1/8] registered {', '.join(f'{s.kind} {s.name}' for s in plan.steps)}")
    say(f"      applying the same file again changes {changes} objects (idempotent)")
    return Registered(views, changes)
