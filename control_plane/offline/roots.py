"""Where the offline store lives: its default root (``AETHER_OFFLINE_ROOT``, else under ``AETHER_HOME``)
and the pyarrow filesystem and base path a root (a local path or a URI) names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pyarrow.fs as pafs

from clients.errors import InvalidArgument
from clients.uris import MISPLACED_CREDENTIALS, misplaced_credentials, redact_text


def default_offline_root(environ: Mapping[str, str] | None = None) -> str:
    """``AETHER_OFFLINE_ROOT``, else ``$AETHER_HOME/offline`` (``AETHER_HOME`` defaults to ``~/.aether``)."""
    env = os.environ if environ is None else environ
    configured = env.get("AETHER_OFFLINE_ROOT")
    if configured:
        return configured
    home = Path(env.get("AETHER_HOME") or Path.home() / ".aether").expanduser()
    return str(home / "offline")


def open_filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of ``root``: a URI goes through ``FileSystem.from_uri``, anything
    else is a local path (made absolute, so the store does not depend on the working directory). A local
    base path is resolved (symlinks followed) whether given as a path or a ``file://`` URI."""
    if "://" in root:
        try:
            if misplaced_credentials(root):
                raise ValueError(MISPLACED_CREDENTIALS)
            filesystem, path = pafs.FileSystem.from_uri(root)
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            # pyarrow quotes the whole URI it refused, and one it cannot parse may hide a credential where
            # redact_uri cannot find it (a secret key with a raw '/'): never shown (clients.uris).
            reason = redact_text(str(exc).replace(root, "<the URI>"), root)
            raise InvalidArgument(
                f"cannot open the URI given (not shown: it may hold credentials): {reason}. Percent-encode "
                "'/', '+', ':' and '@' in credentials written into a URI, or leave them out and give them "
                "in the environment (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
            ) from None
        if isinstance(filesystem, pafs.LocalFileSystem):
            # A file:// root names the same folder as its plain path: one base path for both, else a
            # writer given one form and a reader the other disagree on every path an intent names.
            return filesystem, str(Path(path).resolve())
        return filesystem, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
