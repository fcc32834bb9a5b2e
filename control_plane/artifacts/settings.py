"""Where the artifact store lives: ``AETHER_ARTIFACTS_ROOT`` (a local path or a pyarrow.fs URI such as
``s3://bucket/prefix``), by default ``$AETHER_HOME/artifacts``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from control_plane.artifacts.store import ArtifactStore


@dataclass(frozen=True)
class ArtifactSettings:
    root: str

    @classmethod
    def from_env(cls, home: Path, environ: Mapping[str, str] | None = None) -> ArtifactSettings:
        env = os.environ if environ is None else environ
        return cls(root=env.get("AETHER_ARTIFACTS_ROOT") or str(home / "artifacts"))


def store_for(home: Path, environ: Mapping[str, str] | None = None) -> ArtifactStore:
    """The artifact store a control plane whose state folder is ``home`` uses."""
    return ArtifactStore(ArtifactSettings.from_env(home, environ).root)
