"""Where the data plane of `aetherctl dev up` keeps its registry snapshot: its command line and
environment (control_plane.cli.local_stack) read by the data plane's own settings."""

from __future__ import annotations

from pathlib import Path

from control_plane.cli.local_stack import Service, _services, service_environment
from control_plane.cli.settings import CliSettings
from data_plane.__main__ import parse_args


def _data_plane_snapshot(tmp_path: Path, environ: dict[str, str]) -> Path:
    """The snapshot path the stack's data plane would use, started as `dev up` starts it."""
    settings = CliSettings.from_env({**environ, "AETHER_HOME": str(tmp_path / "home")})
    service: Service = next(
        s for s in _services(settings, tmp_path / "dev", starting=False) if s.key == "data-plane"
    )
    assert service.command[1:3] == ["-m", "data_plane"]
    env = service_environment(service, settings, environ)
    return parse_args(service.command[3:], env)[0].snapshot_path


def test_dev_up_keeps_the_snapshot_where_the_variable_says(tmp_path: Path) -> None:
    """`dev up` passed --snapshot-path $AETHER_HOME/registry_snapshot.pb, which overrode the variable:
    the snapshot (and deployment_plans.pb beside it) went where the README says it does not."""
    wanted = tmp_path / "elsewhere" / "reg.pb"
    assert _data_plane_snapshot(tmp_path, {"AETHER_REGISTRY_SNAPSHOT_PATH": str(wanted)}) == wanted
    # Unset (or empty): under the stack's home, as before.
    default = tmp_path / "home" / "registry_snapshot.pb"
    assert _data_plane_snapshot(tmp_path, {}) == default
    assert _data_plane_snapshot(tmp_path, {"AETHER_REGISTRY_SNAPSHOT_PATH": ""}) == default
