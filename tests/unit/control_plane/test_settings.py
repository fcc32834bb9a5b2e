from __future__ import annotations

from pathlib import Path

from control_plane.settings import ControlPlaneSettings


def test_defaults_live_under_aether_home_which_is_created(tmp_path: Path) -> None:
    home = tmp_path / "state" / "aether"
    settings = ControlPlaneSettings.from_env({"AETHER_HOME": str(home)})
    assert home.is_dir()
    assert settings.home == home
    assert settings.db_url == f"sqlite:///{home / 'aether.db'}"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.listen_addr == "127.0.0.1:50051"


def test_environment_overrides(tmp_path: Path) -> None:
    settings = ControlPlaneSettings.from_env(
        {
            "AETHER_HOME": str(tmp_path),
            "AETHER_DB_URL": "postgresql+psycopg://aether@db/aether",
            "AETHER_REDIS_URL": "redis://cache:6380/1",
            "AETHER_CONTROL_PLANE_ADDR": "0.0.0.0:6000",
        }
    )
    assert (settings.db_url, settings.redis_url, settings.listen_addr) == (
        "postgresql+psycopg://aether@db/aether",
        "redis://cache:6380/1",
        "0.0.0.0:6000",
    )
