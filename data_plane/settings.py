"""Settings of one data-plane process: one frozen object, read from ``AETHER_*`` variables (CLI flags
override them with ``dataclasses.replace``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def aether_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("AETHER_HOME") or Path.home() / ".aether").expanduser()


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    listen: str = "127.0.0.1:50052"
    redis_url: str = "redis://127.0.0.1:6379/0"
    control_plane_addr: str = "127.0.0.1:50051"
    # The last registry snapshot, so that a restart serves while the control plane is unreachable.
    snapshot_path: Path = Path("registry_snapshot.pb")  # from_env puts it under AETHER_HOME
    # Cap on one Redis wait; a shorter gRPC deadline shortens it further.
    redis_timeout_s: float = 0.5
    redis_pool_size: int = 4
    max_rows_per_request: int = 1000
    max_features_per_request: int = 10_000
    plan_cache_size: int = 1024
    # The largest answer allowed by the limits: 1,000 rows x 10,000 int64 features + statuses ~ 90 MB.
    max_message_bytes: int = 128 * 1024 * 1024
    watch_backoff_initial_s: float = 0.1
    watch_backoff_max_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DataPlaneSettings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            listen=env.get("AETHER_DATA_PLANE_ADDR", defaults.listen),
            redis_url=env.get("AETHER_REDIS_URL", defaults.redis_url),
            control_plane_addr=env.get("AETHER_CONTROL_PLANE_ADDR", defaults.control_plane_addr),
            snapshot_path=Path(
                env.get("AETHER_REGISTRY_SNAPSHOT_PATH") or aether_home(env) / "registry_snapshot.pb"
            ).expanduser(),
            redis_timeout_s=float(env.get("AETHER_REDIS_TIMEOUT_S", defaults.redis_timeout_s)),
            redis_pool_size=int(env.get("AETHER_REDIS_POOL_SIZE", defaults.redis_pool_size)),
            max_rows_per_request=int(env.get("AETHER_MAX_ROWS_PER_REQUEST", defaults.max_rows_per_request)),
            max_features_per_request=int(
                env.get("AETHER_MAX_FEATURES_PER_REQUEST", defaults.max_features_per_request)
            ),
        )
