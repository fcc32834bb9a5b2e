"""Fetching a model artifact for loading: from a local path or a ``pyarrow.fs`` URI (the artifact store's
object, e.g. ``file:///…`` or ``s3://…``), verified against its sha256 before anything parses it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from clients.errors import DataLoss, NotFound, Unavailable


def read_artifact(uri: str) -> bytes:
    if "://" not in uri:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"model artifact {uri} does not exist") from None
    import pyarrow.fs  # only for remote URIs: keeps the import off the common local path

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        raise NotFound(f"model artifact {uri} does not exist") from None
    except OSError as exc:
        raise Unavailable(f"model artifact {uri} could not be read: {exc}") from None


def fetch_verified(uri: str, sha256: str) -> bytes:
    """The artifact's bytes; DATA_LOSS when they do not hash to ``sha256``."""
    data = read_artifact(uri)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.lower():
        raise DataLoss(f"model artifact {uri} has sha256 {actual}, expected {sha256}: refusing to load it")
    return data
