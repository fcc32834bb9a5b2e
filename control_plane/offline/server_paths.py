"""Where a caller may make the control plane read entity rows and write training sets: under one root.

``GetHistoricalFeatures`` takes ``entity_rows_path`` (a Parquet file the server reads) and ``output_path``
(where the server writes the training set). Taken as given, they let any caller read or overwrite any
file the server's user can reach (``../`` and absolute paths included: a config file, the metadata
database). Both are confined to the *datasets root*: ``AETHER_DATASETS_ROOT``, by default
``$AETHER_HOME/datasets`` (where the demo already writes its entity rows). A relative path is taken
relative to the root; an absolute one, or a ``..`` that leaves the root once symbolic links are
followed, is PERMISSION_DENIED naming the path and the root. With a URI root (``s3://bucket/datasets``,
options such as ``?endpoint_override=…`` included) a path is a plain key relative to it, or the root's URI
without credentials or options followed by one (:func:`_key_fault` says what a plain key is); the URI the
server opens is built from the root's parts and the key, so a caller can change neither the store nor its
options. With a local root every URI is refused."""

from __future__ import annotations

import errno
import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote

from clients.errors import InvalidArgument, PermissionDenied
from clients.uris import redact_uri
from control_plane.offline.roots import open_filesystem

DATASETS_ROOT_VARIABLE = "AETHER_DATASETS_ROOT"


def datasets_root(home: Path, environ: Mapping[str, str] | None = None) -> str:
    """``AETHER_DATASETS_ROOT`` (an empty value counts as unset), else ``<home>/datasets``."""
    env = os.environ if environ is None else environ
    return env.get(DATASETS_ROOT_VARIABLE) or str(home / "datasets")


def confined(path: str, root: str, what: str) -> str:
    """``path`` (the request's ``what`` field) as the server should use it: inside ``root``, or
    PermissionDenied saying why not; InvalidArgument for a path no file can have (a NUL byte, a name
    too long, a symbolic-link loop, an unknown ``~user``), which failed the RPC as INTERNAL."""
    if "\x00" in path:
        raise InvalidArgument(f"{what} contains a NUL byte, which no file name can hold")
    if "://" in root:
        return _under_uri_root(path, root, what)
    base = Path(root).expanduser().resolve()
    if "://" in path:
        open_filesystem(path)  # a URI pyarrow refuses is INVALID_ARGUMENT, as before, its credentials unshown
        raise PermissionDenied(
            f"{what}: a URI is outside the datasets root {base} (not shown: it may hold credentials); give a"
            f" path under the root ({DATASETS_ROOT_VARIABLE})"
        )
    # resolve() follows symbolic links and removes '..', so what is checked is where the file really is.
    resolved = _resolved(base, path, what)
    if not resolved.is_relative_to(base):
        raise PermissionDenied(
            f"{what} {path!r} is outside the datasets root {base} (it resolves to {resolved}); give a path"
            f" under the root, or relative to it ({DATASETS_ROOT_VARIABLE})"
        )
    return str(resolved)


def _resolved(base: Path, path: str, what: str) -> Path:
    try:
        # RuntimeError: a symbolic-link loop, or '~user' for a user that does not exist.
        resolved = (base / Path(path).expanduser()).resolve()
        # resolve() does not say when a name is longer than the file system takes: lstat() does.
        resolved.lstat()
    except RuntimeError as exc:
        raise InvalidArgument(f"{what} {path!r} cannot be resolved: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidArgument(
                f"{what} is too long for a file name ({len(path)} characters; {exc.strerror})"
            ) from None
        # Missing (an output still to write), or unreadable: the caller reports it, naming the path.
    return resolved


def _under_uri_root(path: str, root: str, what: str) -> str:
    scheme, authority, root_path, options = _root_parts(root)
    # What a caller may write for the root: its location without credentials (as redact_uri shows it).
    public = redact_uri(f"{scheme}://{authority}{root_path}") + "/"
    if "://" not in path:
        relative = path
    elif path.startswith(public):
        relative = path[len(public) :]
    else:
        # Another scheme, bucket, host, port or userinfo: another store, or the same one reached as
        # someone else. Never opened.
        raise PermissionDenied(
            f"{what}: the path given is outside the datasets root (not shown: it may hold credentials);"
            f" give a path under {DATASETS_ROOT_VARIABLE} or relative to it"
        )
    # pyarrow reads a URI's query as the filesystem's options (endpoint_override, scheme, region…): a
    # caller's query sent the server's requests, signed with its credentials, to any host. Only the
    # root's own options are used, so a query or fragment in the caller's text is refused, not dropped.
    if "?" in relative or "#" in relative:
        raise PermissionDenied(
            f"{what}: a path under the datasets root ({DATASETS_ROOT_VARIABLE}) may carry no query or"
            " fragment ('?', '#'; not shown: it may hold credentials): the root's own options are used"
        )
    fault = _key_fault(relative)
    if fault:
        raise PermissionDenied(
            f"{what}: not a plain key under the datasets root ({DATASETS_ROOT_VARIABLE}; not shown: it may"
            f" hold credentials): {fault}"
        )
    # Built from the root's parts, never from the caller's text beyond the key: its scheme, userinfo
    # and host, its path, then the key, then its options. The key is percent-encoded, so what pyarrow
    # decodes is the key itself: a space or an 'é' would otherwise make a URI it cannot parse.
    encoded = f"{root_path}/{quote(relative, safe=_KEY_SAFE)}"
    # The check made on exactly what pyarrow will see: the decoded path is the root's, then the key.
    prefix = unquote(root_path) + "/"
    if unquote(encoded) != prefix + relative:
        raise PermissionDenied(f"{what}: not a plain key under the datasets root ({DATASETS_ROOT_VARIABLE})")
    return f"{scheme}://{authority}{encoded}{options}"


#: Left as they are in a key's URI: '/' between segments and '=' (Hive partitions: ``date=2024-01-01``),
#: which pyarrow reads back unchanged. Every other character but letters, digits and ``_.-~`` is encoded.
_KEY_SAFE = "/="


def _key_fault(key: str) -> str | None:
    """Why ``key`` (a caller's path relative to a URI root) is not a plain object key, or None.

    The key must mean the same to every reader on the way: pyarrow percent-decodes a URI's path
    (``%2e%2e`` is ``..``), and S3 clients collapse ``.``/``..`` segments and empty ones, some read a
    backslash as a separator. Checked before, ``a/%2e%2e/%2e%2e/private/x`` passed and the server read
    ``private/x`` outside the prefix. So a key holds no ``%`` (it is named as it is, never encoded), no
    ``.``, ``..`` or empty segment, no backslash and no control character."""
    if not key:
        return "it is empty"
    if "%" in key:
        return "'%' is refused: give the key as it is named, not percent-encoded"
    if "\\" in key:
        return "backslashes are refused (some clients read them as '/')"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in key):
        return "control characters and lone surrogates are refused"
    if key.startswith("/"):
        return "absolute paths are refused: give the key relative to the root"
    segments = key.split("/")
    if "" in segments:
        return "empty segments ('//', or a trailing '/') are refused"
    if any(segment in (".", "..") for segment in segments):
        return "'.' and '..' segments are refused"
    return None


def _root_parts(root: str) -> tuple[str, str, str, str]:
    """``(scheme, authority, path, options)`` of a URI root: the path without a trailing ``/`` (empty
    for a bucket's top), the options with their leading ``?`` (empty when it has none). The root is the
    operator's, so its text is taken as given."""
    scheme, _, rest = root.partition("://")
    cut = min((rest.index(mark) for mark in "?#" if mark in rest), default=len(rest))
    location, options = rest[:cut], rest[cut:]
    authority, slash, path = location.partition("/")
    return scheme, authority, (slash + path).rstrip("/"), options
