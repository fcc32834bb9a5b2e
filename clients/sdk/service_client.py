"""What every synchronous Aether client shares, of the control plane and of the data plane: one channel to
``target`` (plain or TLS, see :func:`clients.sdk.auth.open_channel`), a per-call timeout, the caller's
``x-aether-actor`` metadata, use as a context manager, and failed calls raised as the matching
:mod:`clients.errors` exception.

Each service's client subclasses :class:`ServiceClient`, makes its generated stubs from ``self._channel``
in :meth:`ServiceClient._open_stubs`, sets ``DEFAULT_TIMEOUT_S`` and ``CHANNEL_OPTIONS`` where its calls
differ from the defaults, and calls the stubs through :meth:`ServiceClient._call` (unary),
:meth:`ServiceClient._call_streaming` (client streaming) or :meth:`ServiceClient._stream` (server
streaming)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import quote

import grpc

from clients.addresses import dial_address_problem
from clients.errors import AetherError, InvalidAddress, from_rpc_error
from clients.sdk.auth import ChannelSecurity, open_channel

_Response = TypeVar("_Response")
_Client = TypeVar("_Client", bound="ServiceClient")

# Names the caller in the audit log when auth is off; with auth on, the token's principal does and this
# header is ignored (control_plane/api/identity.py reads it).
ACTOR_METADATA_KEY = "x-aether-actor"
# gRPC metadata values are printable ASCII: any other character (a login name "José", a stray newline)
# failed every call with INTERNAL "Invalid metadata". Those are percent-encoded, and '%' itself; every
# other printable ASCII character goes as it is, so an ASCII actor reads the same to an older server.
_SENT_AS_IS = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")


def actor_header(actor: str) -> str:
    """``actor`` as the ``x-aether-actor`` header carries it (the server percent-decodes it)."""
    return quote(actor, safe=_SENT_AS_IS)


class ServiceClient(ABC):
    """A client of one server at ``target`` (``host:port`` or a gRPC target URI; anything else is
    :class:`~clients.errors.InvalidAddress` here, see :mod:`clients.addresses`). ``security`` is the token
    and TLS setting (default: from ``AETHER_TOKEN``/``AETHER_TLS_CA``); ``actor`` names the caller in the
    audit log when auth is off; ``timeout`` bounds each unary call (default: the client's
    ``DEFAULT_TIMEOUT_S``). ``channel``: an open channel to use instead (see :meth:`sharing`), which this
    client then does not close; its security is the channel's own, so ``security`` cannot be given with
    it."""

    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    CHANNEL_OPTIONS: ClassVar[tuple[tuple[str, Any], ...]] = ()  # e.g. message size limits

    def __init__(
        self,
        target: str,
        *,
        security: ChannelSecurity | None = None,
        actor: str | None = None,
        timeout: float | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        if channel is not None and security is not None:
            raise ValueError("security applies to a channel the client opens, not to one it is given")
        if channel is None and (problem := dial_address_problem(target)) is not None:
            # Here, not at the first call: gRPC takes any text, and a typo failed later and opaquely.
            raise InvalidAddress(f"{type(self).__name__} address: {problem}")
        self.target = target
        self.actor = actor
        # None only where a subclass sets it so (an artifact transfer with no bound).
        self.timeout: float | None = self.DEFAULT_TIMEOUT_S if timeout is None else timeout
        self._owns_channel = channel is None
        if channel is None:
            channel = open_channel(target, security, list(self.channel_options(target)))
        self._channel = channel
        self._metadata: tuple[tuple[str, str], ...] = (
            ((ACTOR_METADATA_KEY, actor_header(actor)),) if actor else ()
        )
        self._open_stubs()

    @classmethod
    def channel_options(cls, target: str) -> tuple[tuple[str, Any], ...]:
        """The options of a channel this client opens to ``target`` (``CHANNEL_OPTIONS`` unless a client
        chooses by target)."""
        return cls.CHANNEL_OPTIONS

    @abstractmethod
    def _open_stubs(self) -> None:
        """Makes the service's stubs from ``self._channel`` (called last in ``__init__``)."""

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def sharing(self, client_type: type[_Client]) -> _Client:
        """A client of another service of the same server over this client's channel (so with its token
        and TLS), with its actor and the other client's own default timeout. Closing it leaves the
        channel open; closing this client closes it."""
        return client_type(self.target, actor=self.actor, channel=self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        response_type: type[_Response],
        timeout: float | None = None,
    ) -> _Response:
        """One unary call with this client's metadata and timeout (or ``timeout``, when given); the answer
        must be a ``response_type`` (a wrong stub wiring fails loudly, not later with an attribute
        error)."""
        try:
            response = method(
                request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if not isinstance(response, response_type):
            raise TypeError(f"expected {response_type.__name__}, got {type(response).__name__}")
        return response

    def _call_streaming(
        self, method: Callable[..., Any], requests: Iterable[Any], response_type: type[_Response]
    ) -> _Response:
        """One client-streaming call of ``requests``, like :meth:`_call`. gRPC draws the requests on a
        thread of its own and reports an exception raised there only as UNKNOWN "Exception iterating
        requests!"; that exception (an unreadable file, a row that does not convert) is raised here instead,
        so that the caller learns what went wrong."""
        failures: list[Exception] = []
        try:
            return self._call(method, _noting_failures(requests, failures), response_type)
        except AetherError:
            if failures:
                raise failures[0] from None
            raise

    def _stream_streaming(
        self, method: Callable[..., Any], requests: Iterable[Any], timeout: float | None
    ) -> Iterator[Any]:
        """The messages of one bidirectional call of ``requests``, like :meth:`_stream`; an exception
        raised drawing the requests is raised as itself, as in :meth:`_call_streaming`."""
        failures: list[Exception] = []
        try:
            yield from self._stream(method, _noting_failures(requests, failures), timeout)
        except AetherError:
            if failures:
                raise failures[0] from None
            raise

    def _stream(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Iterator[Any]:
        """The messages of one server-streaming call (``timeout`` None: as long as it takes)."""
        try:
            yield from method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


def _noting_failures(requests: Iterable[Any], failures: list[Exception]) -> Iterator[Any]:
    """``requests``, with an exception raised drawing them appended to ``failures`` (gRPC's thread would
    report it only as UNKNOWN "Exception iterating requests!")."""
    try:
        yield from requests
    except Exception as error:
        failures.append(error)
        raise
