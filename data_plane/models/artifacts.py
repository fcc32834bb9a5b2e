"""Fetching a model artifact for loading: from a local path or a ``pyarrow.fs`` URI (the artifact store's
object, e.g. ``file:///…`` or ``s3://…``), verified against its sha256 before anything parses it.

Artifact URIs from the registry carry no credentials: the data plane reaches the object store with its own,
from its environment (for S3: ``AWS_ACCESS_KEY_ID``…, ``~/.aws``, an instance role). A URI that does carry
some (a hand-written ``AETHER_MODEL_CONFIG``) is used as given, and shown without them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from clients.errors import DataLoss, InvalidArgument, NotFound, Unavailable
from clients.uris import MISPLACED_CREDENTIALS, misplaced_credentials, redact_text, redact_uri


def read_artifact(uri: str, what: str = "model artifact") -> bytes:
    """The bytes at ``uri`` (a path or a URI), named ``what`` in errors."""
    if "://" not in uri:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{what} {uri} does not exist") from None
    import pyarrow.fs  # only for remote URIs: keeps the import off the common local path

    shown = redact_uri(uri)
    try:
        if misplaced_credentials(uri):
            raise ValueError(MISPLACED_CREDENTIALS)
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    except ValueError as exc:
        # pyarrow quotes a URI it cannot parse whole, and such a URI may hide a credential where
        # redact_uri cannot find it (a secret with a raw '/'): it is not shown at all.
        detail = redact_text(str(exc).replace(uri, "<the URI>"), uri)
        raise InvalidArgument(
            f"a {what} URI (not shown: it may hold credentials) cannot be opened: {detail}"
        ) from None
    except OSError as exc:  # parsed, but the store could not be reached (S3 region lookup)
        raise Unavailable(f"{what} {shown} could not be read: {redact_text(str(exc), uri)}") from None
    try:
        with filesystem.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        raise NotFound(f"{what} {shown} does not exist") from None
    except OSError as exc:
        raise Unavailable(f"{what} {shown} could not be read: {redact_text(str(exc), uri)}") from None


def fetch_verified(uri: str, sha256: str) -> bytes:
    """The artifact's bytes; DATA_LOSS when they do not hash to ``sha256``."""
    data = read_artifact(uri)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.lower():
        raise DataLoss(
            f"model artifact {redact_uri(uri)} has sha256 {actual}, expected {sha256}: refusing to load it"
        )
    return data
