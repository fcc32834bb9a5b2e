"""Aether's exception tree. Every error carries its gRPC status code; this is the one place where the
mapping between exceptions and status codes lives, in both directions:

* servers raise these from their transport-free cores, and the :func:`maps_errors` decorator turns them
  into the matching status and message on the wire (a transient failure of the metadata database
  becomes UNAVAILABLE, see :mod:`clients.database_errors`; Redis down, timing out or loading becomes
  UNAVAILABLE and its credentials refused FAILED_PRECONDITION, see :mod:`clients.redis_errors`; any other
  unexpected exception INTERNAL);
* clients turn a :class:`grpc.RpcError` back into the same class with :func:`from_rpc_error`.

Every status a server sends through :func:`abort` carries :data:`ANSWERED_METADATA` in its trailing
metadata, so that a client can tell a status the server answered (``UNAVAILABLE: metadata database
unavailable``: the server runs, its database does not) from one gRPC made up on the client's side because
it could not reach the server (:attr:`AetherError.answered`); both are UNAVAILABLE.

    AetherError
    ├── InvalidArgument        INVALID_ARGUMENT     the request is malformed; retrying will not help
    │   └── InvalidAddress                              an SDK client's address to dial is malformed
    ├── NotFound               NOT_FOUND            a named entity, view, version, model... does not exist
    ├── AlreadyExists          ALREADY_EXISTS
    ├── FailedPrecondition     FAILED_PRECONDITION  the system is not in a state that allows the operation
    │   └── OfflineStoreMisconfigured                   the offline store refused for its setup or files
    ├── Aborted                ABORTED              a conditional write lost to a concurrent one: re-read
    ├── ResourceExhausted      RESOURCE_EXHAUSTED   a limit was exceeded (the message states the limit)
    ├── Unavailable            UNAVAILABLE          a dependency (Redis, the control plane) cannot be reached
    │   └── OfflineStoreUnavailable                     the offline store's filesystem failed (disk full, I/O)
    ├── DeadlineExceeded       DEADLINE_EXCEEDED
    ├── Unauthenticated        UNAUTHENTICATED
    ├── PermissionDenied       PERMISSION_DENIED
    ├── DataLoss               DATA_LOSS            stored bytes are corrupt (checksum, fingerprint)
    └── Internal               INTERNAL             a bug; the message says where
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, NoReturn

import grpc
import grpc.aio

from clients.database_errors import database_unavailable
from clients.redis_errors import redis_status

_log = logging.getLogger("aether.errors")


class AetherError(Exception):
    """Base class of every error Aether raises on purpose."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        #: Whether an Aether server sent this status (see the module doc): False for one raised where it
        #: happened, or made up by gRPC on the client's side (the server could not be reached).
        self.answered = False


class InvalidArgument(AetherError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidAddress(InvalidArgument, ValueError):
    """An address an SDK client was made with that is not one to dial (``clients.addresses``): refused
    when the client is made, before gRPC takes it. A ValueError too, as Python's own checks of an
    argument raise."""


class NotFound(AetherError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AetherError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AetherError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(AetherError):
    """A write conditional on what the caller read (an expected revision) found it changed by another
    writer meanwhile; nothing was written. Read again, re-apply the change and retry."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(AetherError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(AetherError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AetherError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(AetherError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AetherError):
    code = grpc.StatusCode.PERMISSION_DENIED


class DataLoss(AetherError):
    code = grpc.StatusCode.DATA_LOSS


class Internal(AetherError):
    code = grpc.StatusCode.INTERNAL


class OfflineStoreUnavailable(Unavailable, OSError):
    """The offline store's filesystem failed in a way that may pass (a full disk, an I/O error, an object
    store not answering). Raised only at the offline store's boundary (``control_plane.offline``), wrapping
    the OSError, so an OSError anywhere else (a bug) stays INTERNAL; an OSError still, so the store's own
    handlers (clean-ups, per-view loops) catch it as before."""


class OfflineStoreMisconfigured(FailedPrecondition, OSError):
    """The offline store's filesystem refused it for a fault of its setup (a file where a folder belongs
    or the reverse, no permission, an object store's credentials refused or its bucket missing, a
    read-only filesystem) or of a file in it (bytes that are not Parquet): waiting does not help. See
    :class:`OfflineStoreUnavailable`."""


class OfflineFileUndecodable(OfflineStoreMisconfigured):
    """Of :class:`OfflineStoreMisconfigured`, a stored file whose bytes do not decode (damaged pages or
    footer, bytes that are not Parquet), as opposed to a store that refuses access (permissions,
    credentials, a missing bucket, a file where a folder belongs). Apart because the advice differs: a
    damaged file's rows are gone however the store is set up, but a refused read succeeds once the
    setup is fixed, and advice to discard what waits on it (a batch run's online part) lost it for good."""


#: The OS errors of an offline store that a setting or an operator must fix (FAILED_PRECONDITION); any
#: other errno is one that may pass (UNAVAILABLE).
_SETUP_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS})
#: Of an OSError without an errno (an object store's error, a stored file that does not decode), words,
#: compared in lower case, that name a fault waiting does not mend: credentials refused or not allowed
#: (pyarrow's S3 filesystem names the AWS error, "AWS Error ACCESS_DENIED during GetObject operation", or
#: the HTTP status of one it has no name for, "UNKNOWN (HTTP status 403)"; its GCS filesystem the
#: google::cloud status, "UNAUTHENTICATED: ..."; its Azure filesystem the service's error code,
#: "Azure Error: [AuthorizationFailure] 403 ..."), or a bucket or container that does not exist.
_REFUSED_WORDS = (
    "access_denied", "accessdenied", "access denied", "permission denied", "permission_denied",
    "unauthenticated", "http status 401", "http status 403", "invalid_access_key_id", "invalidaccesskeyid",
    "signature_does_not_match", "signaturedoesnotmatch", "invalid_signature", "incomplete_signature",
    "expired_token", "expiredtoken", "invalid_client_token_id", "missing_authentication_token",
    "unrecognized_client", "authenticationfailed", "authorizationfailure", "authorizationpermissionmismatch",
    "invalidauthenticationinfo", "insufficientaccountpermissions", "accountisdisabled",
    "no_such_bucket", "nosuchbucket", "bucket does not exist", "containernotfound", "filesystemnotfound",
    "container does not exist",
)  # fmt: skip
#: Words of an object store's client (pyarrow's S3, GCS and Azure filesystems): its error is one of the
#: remote store, and any not refused above may pass (an outage: "google::cloud::Status(UNAVAILABLE: Retry
#: policy exhausted ...", "Azure Error: [] Fail to get a new connection"; throttling; a key listed and gone
#: when read, which a new listing no longer names), whatever other words it holds.
_REMOTE_WORDS = ("aws error", "google::cloud::status(", "azure error", "http status", "curl error")
#: Words of pyarrow's Parquet reader for stored bytes that do not decode ("Couldn't deserialize thrift",
#: "Parquet magic bytes not found", "Invalid column metadata (corrupt file?)", "ZSTD decompression
#: failed", "Malformed levels", "Unexpected end of stream: Page was smaller ..."): the file must be dealt
#: with. Read only in an error that is not an object store's (above), where "invalid" says nothing of a file.
_UNDECODABLE_WORDS = (
    "deserialize thrift", "magic bytes", "corrupt", "invalid", "malformed", "decompression failed",
    "unexpected end of stream", "unsupported", "not yet implemented", "mismatch", "do not match",
    "must be before", "ipc", "parquet", "flatbuffer",
)  # fmt: skip


def offline_store_error(
    store: str, doing: str, error: OSError | ValueError
) -> OfflineStoreUnavailable | OfflineStoreMisconfigured:
    """The error of the offline store at ``store`` (its root, without credentials) failing to ``doing``
    with ``error`` (the filesystem's OSError, named whole in the message): the one place that maps the
    store's OS errors to status codes. By errno where there is one (pyarrow sets it on a local
    filesystem's errors, and on its GCS filesystem's refusals). Without one (an object store's error, or a
    Parquet file's bytes that do not decode), FAILED_PRECONDITION only for an error known not to pass
    (:data:`_REFUSED_WORDS`; :data:`_UNDECODABLE_WORDS` outside an object store's error), and UNAVAILABLE
    for any other: such an error is most likely a remote store's network fault, and one rule naming the
    transient ones answered an outage of GCS or Azure (words of their own) "do not retry", which blocked
    retraining as if an operator had to act; a permanent one retried still shows its message. A
    ValueError is pyarrow's ArrowInvalid (or a decoder's error) reading a stored file: the file must be
    dealt with, FAILED_PRECONDITION; it and the undecodable words are :class:`OfflineFileUndecodable`."""
    message = f"the offline store {store} could not {doing}: {type(error).__name__}: {error}"
    if not isinstance(error, OSError):
        return OfflineFileUndecodable(message)
    if error.errno is not None:
        if error.errno in _SETUP_ERRNOS:
            return OfflineStoreMisconfigured(message)
        return OfflineStoreUnavailable(message)
    text = str(error).lower()
    if any(word in text for word in _REFUSED_WORDS):
        return OfflineStoreMisconfigured(message)
    if not any(word in text for word in _REMOTE_WORDS) and any(word in text for word in _UNDECODABLE_WORDS):
        return OfflineFileUndecodable(message)
    return OfflineStoreUnavailable(message)


_BY_CODE: dict[grpc.StatusCode, type[AetherError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        DataLoss,
        Internal,
    )
}


#: The trailing metadata of every status an Aether server sends (see the module doc).
ANSWERED_METADATA = (("x-aether-answered", "1"),)


def from_rpc_error(error: grpc.RpcError) -> AetherError:
    """The Aether exception for a failed call, keeping the server's message."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    err = error_with_code(code, details or code.name)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    err.answered = any(tuple(item) == ANSWERED_METADATA[0] for item in trailing or ())
    return err


#: The most bytes a status message may take as gRPC sends it (the ``grpc-message`` trailer, percent-encoded:
#: a character other than printable ASCII costs 3 bytes per UTF-8 byte). Messages name what the caller sent,
#: at any length; past the receiver's metadata limit (8 KiB soft, 16 KiB hard by default) gRPC dropped the
#: whole status and the caller got RESOURCE_EXHAUSTED "Stream removed" instead of, say, NOT_FOUND.
MAX_STATUS_MESSAGE_BYTES = 4096
# Any character costs at most this many bytes on the wire (4 UTF-8 bytes, each percent-encoded).
_MAX_CHAR_BYTES = 12


def _wire_bytes(char: str) -> int:
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8", "surrogatepass"))


def _cut_marker(characters: int) -> str:
    return f"... [{characters} more characters cut]"


def status_message(text: str, limit: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    """``text`` as a status message: whole when it fits ``limit`` bytes on the wire, else cut on a
    character boundary and ended by a marker saying how many characters were cut, the whole within
    ``limit``. Costs O(limit), whatever the length of ``text``."""
    if len(text) * _MAX_CHAR_BYTES <= limit:
        return text
    used = 0
    for char in text:
        used += _wire_bytes(char)
        if used > limit:
            break
    else:
        return text
    budget = limit - len(_cut_marker(len(text)))  # the marker is ASCII, and never longer than this
    kept, used = 0, 0
    for char in text:
        used += _wire_bytes(char)
        if used > budget:
            break
        kept += 1
    return text[:kept] + _cut_marker(len(text) - kept)


async def abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str) -> NoReturn:
    """Ends the call with ``code`` and ``message`` cut to :data:`MAX_STATUS_MESSAGE_BYTES`: every abort of
    both planes goes through here, so none can lose its status to gRPC's metadata limit."""
    await context.abort(code, status_message(message), ANSWERED_METADATA)
    raise AssertionError("context.abort returned")  # grpc.aio's abort always raises AbortError


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status and message :func:`maps_errors` gives ``exc``: an :class:`AetherError`'s own, or those
    of a failure of a dependency that is not a bug (below); None for anything else, which is INTERNAL.
    A core that must say more of such a failure (what it had done before it) builds on this, so the
    mapping stays here."""
    if isinstance(exc, AetherError):
        return exc.code, exc.message
    unavailable = database_unavailable(exc)  # locked, down, restarting: retryable, not a bug
    if unavailable is not None:
        return grpc.StatusCode.UNAVAILABLE, unavailable
    return redis_status(exc)  # Redis loading, down, or the URL's password: not a bug


def error_with_code(code: grpc.StatusCode, message: str) -> AetherError:
    """The :class:`AetherError` subclass of ``code`` carrying ``message`` (a plain AetherError with the
    code for one without a subclass)."""
    cls = _BY_CODE.get(code, AetherError)
    error = cls(message)
    if cls is AetherError:
        error.code = code  # type: ignore[misc]  # keep the exact status for codes without a subclass
    return error


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    if isinstance(exc, AetherError):
        await abort(context, exc.code, exc.message)
    known = status_of(exc)
    if known is not None:
        _log.warning("%s: %s", method, known[1], exc_info=exc)
        await abort(context, *known)
    _log.exception("unexpected error in %s", method, exc_info=exc)
    await abort(context, grpc.StatusCode.INTERNAL, internal_message(method, exc))


#: The most of an unexpected error's own text an INTERNAL status carries.
INTERNAL_DETAIL_CHARS = 300


def internal_message(method: str, exc: BaseException) -> str:
    """What the caller of ``method`` is told of an unexpected error: its type and the first line of its
    text, cut to ``INTERNAL_DETAIL_CHARS``. The whole of it (a database error's SQL statement and bound
    values, a traceback) goes to the server's log only: it is the server's internals, and may hold other
    callers' data."""
    text = str(exc).strip().partition("\n")[0]
    if len(text) > INTERNAL_DETAIL_CHARS:
        text = text[:INTERNAL_DETAIL_CHARS] + "…"
    return f"internal error in {method}: {type(exc).__name__}: {text}"


def maps_errors(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a grpc.aio servicer method (coroutine or async generator): an :class:`AetherError` it
    raises becomes its status code and message; anything else becomes INTERNAL and is logged.

    A decorator rather than a server interceptor: grpc.aio calls interceptors on every RPC, which costs
    microseconds on the latency path; the decorator wraps each method once, at class definition."""
    method = behavior.__qualname__
    if inspect.isasyncgenfunction(behavior):

        @functools.wraps(behavior)
        async def stream_wrapper(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in behavior(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return stream_wrapper

    @functools.wraps(behavior)
    async def unary_wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await behavior(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return unary_wrapper
