"""A replica's folder (``replica-<n>`` under the fleet's replicas home): what the data plane persists
there, and its seeding before a replica starts.

A new replica's folder is seeded with the newest readable snapshots any replica folder holds (the
registry, the deployment plans): a replica serves from its persisted snapshots while the control plane
is unreachable, so one started during an outage (replacing a crashed one) serves as its peers do instead
of waiting for a control plane that is not there and timing out."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from google.protobuf.message import DecodeError, Message

from clients.aether.v1 import deployments_pb2, feature_registry_pb2

_log = logging.getLogger("aether.control_plane.replicas")

#: The files a replica persists in its folder (--snapshot-path, and data_plane.deployment_watch's
#: PLANS_FILE_NAME next to it) and what each holds. Named here: the control plane imports no data plane.
REGISTRY_FILE = "registry_snapshot.pb"
PERSISTED: tuple[tuple[str, type[Message]], ...] = (
    (REGISTRY_FILE, feature_registry_pb2.RegistrySnapshot),
    ("deployment_plans.pb", deployments_pb2.DeploymentPlanSnapshot),
)


def prepare_folder(home: Path, folder: Path) -> None:
    """Makes a replica's folder, seeded with the newest snapshots of its peers' folders."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, message_type in PERSISTED:
        seeded = seed_file(home, folder, name, message_type)
        if seeded is not None:
            _log.info("seeded %s with %s", folder / name, seeded)


def seed_file(home: Path, folder: Path, name: str, message_type: type[Message]) -> Path | None:
    """Makes ``folder/name`` the newest readable ``name`` of any replica folder under ``home`` (newest by
    modification time, kept by the copy: a replica rewrites its snapshot only when it changes, so the
    newest file is the latest the control plane said, even across a reset of its revisions). The file
    copied, or None when ``folder`` holds the newest already or there is none."""
    candidates = []
    for path in home.glob(f"replica-*/{name}"):
        with contextlib.suppress(FileNotFoundError):
            candidates.append((path.stat().st_mtime_ns, path))
    for _, path in sorted(candidates, reverse=True):
        try:
            stat = path.stat()
            data = path.read_bytes()
            message_type.FromString(data)  # a file the replica would ignore would not serve either
        except (OSError, DecodeError):
            continue
        if path.parent == folder:
            return None
        _replace(folder / name, data, stat.st_mtime_ns)
        return path
    return None


def _replace(path: Path, data: bytes, mtime_ns: int) -> None:
    """Writes ``path`` atomically (a replica reading it sees no file or all of it) with that mtime."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".seed", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.utime(temporary, ns=(mtime_ns, mtime_ns))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
