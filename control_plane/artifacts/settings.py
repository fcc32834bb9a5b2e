"""Where the artifact store lives: ``AETHER_ARTIFACTS_ROOT`` (a local path or a pyarrow.fs URI such as
``s3://bucket/prefix``), by default ``$AETHER_HOME/artifacts``.

Credentials: best left out of the URI and given the way the filesystem's client reads them from the
environment (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, the
``~/.aws`` files or an instance role). Credentials written into the URI
(``s3://KEY:SECRET@bucket/prefix``, percent-encoded) are accepted and used by the control plane, but
never shown or kept: an artifact's URI, stored with its model version or run and returned by the APIs,
is the URI without them. Whoever reads artifacts by that URI (the data plane loading a model) needs its
own credentials from its environment, which an artifact URI cannot leak."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clients.uris import redact_uri
from control_plane.artifacts.store import ArtifactStore


@dataclass(frozen=True)
class ArtifactSettings:
    root: str

    def __repr__(self) -> str:  # settings end up in logs and tracebacks: never with credentials
        return f"ArtifactSettings(root={redact_uri(self.root)!r})"

    @classmethod
    def from_env(cls, home: Path, environ: Mapping[str, str] | None = None) -> ArtifactSettings:
        env = os.environ if environ is None else environ
        return cls(root=env.get("AETHER_ARTIFACTS_ROOT") or str(home / "artifacts"))


def store_for(home: Path, environ: Mapping[str, str] | None = None) -> ArtifactStore:
    """The artifact store a control plane whose state folder is ``home`` uses."""
    return ArtifactStore(ArtifactSettings.from_env(home, environ).root)
