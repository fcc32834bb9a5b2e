"""Data-plane settings from AETHER_* variables."""

from __future__ import annotations

from pathlib import Path

from data_plane.settings import DataPlaneSettings


def test_defaults_put_the_snapshot_under_aether_home() -> None:
    settings = DataPlaneSettings.from_env({"AETHER_HOME": "/srv/aether"})
    assert settings.snapshot_path == Path("/srv/aether/registry_snapshot.pb")
    assert settings.listen == "127.0.0.1:50052" and settings.control_plane_addr == "127.0.0.1:50051"
    assert (settings.max_rows_per_request, settings.max_features_per_request) == (1000, 10_000)


def test_variables_override_the_defaults() -> None:
    settings = DataPlaneSettings.from_env(
        {
            "AETHER_DATA_PLANE_ADDR": "0.0.0.0:7000",
            "AETHER_REDIS_URL": "redis://cache:6380/2",
            "AETHER_CONTROL_PLANE_ADDR": "cp:50051",
            "AETHER_REGISTRY_SNAPSHOT_PATH": "/tmp/snap.pb",
            "AETHER_REDIS_TIMEOUT_S": "0.1",
            "AETHER_MAX_ROWS_PER_REQUEST": "10",
        }
    )
    assert settings.listen == "0.0.0.0:7000" and settings.redis_url == "redis://cache:6380/2"
    assert settings.control_plane_addr == "cp:50051" and settings.snapshot_path == Path("/tmp/snap.pb")
    assert settings.redis_timeout_s == 0.1 and settings.max_rows_per_request == 10
