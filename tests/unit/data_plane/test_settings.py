"""Data-plane settings from AETHER_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.sdk.auth import ChannelSecurity
from clients.tls import ServerTls
from data_plane.__main__ import parse_args
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


def test_drain_unload_and_security_come_from_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("reader-token\n", encoding="utf-8")
    settings = DataPlaneSettings.from_env(
        {
            "AETHER_DRAIN_DELAY_S": "1.5",
            "AETHER_DRAIN_GRACE_S": "20",
            "AETHER_UNLOAD_GRACE_S": "3",
            "AETHER_TLS_CERT": "/etc/aether/server.pem",
            "AETHER_TLS_KEY": "/etc/aether/server.key",
            "AETHER_TOKEN_FILE": str(token_file),
            "AETHER_TLS_CA": "/etc/aether/ca.pem",
            "AETHER_TLS_SERVER_NAME": "control-plane.internal",
        }
    )
    assert (settings.drain_delay_s, settings.drain_grace_s, settings.unload_grace_s) == (1.5, 20.0, 3.0)
    assert settings.tls == ServerTls(Path("/etc/aether/server.pem"), Path("/etc/aether/server.key"))
    assert settings.channel_security == ChannelSecurity(
        token="reader-token", ca_path=Path("/etc/aether/ca.pem"), server_name="control-plane.internal"
    )
    assert "reader-token" not in repr(settings)  # the secret never reaches a log line


def test_without_security_variables_the_data_plane_is_plaintext_and_sends_no_token() -> None:
    settings = DataPlaneSettings.from_env({})
    assert settings.tls is None and settings.channel_security == ChannelSecurity()
    assert (settings.drain_delay_s, settings.drain_grace_s) == (0.5, 5.0)
    with pytest.raises(ValueError, match="AETHER_TLS_CERT and AETHER_TLS_KEY"):
        DataPlaneSettings.from_env({"AETHER_TLS_CERT": "/etc/aether/server.pem"})


def test_drain_flags_override_the_settings() -> None:
    settings, workers = parse_args(["--drain-delay-s", "0.1", "--drain-grace-s", "30", "--workers", "2"])
    assert (settings.drain_delay_s, settings.drain_grace_s, workers) == (0.1, 30.0, 2)
