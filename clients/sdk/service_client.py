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

import grpc

from clients.errors import AetherError, from_rpc_error
from clients.sdk.auth import ChannelSecurity, open_channel

_Response = TypeVar("_Response")

# Names the caller in the audit log when auth is off; with auth on, the token's principal does and this
# header is ignored (control_plane/api/identity.py reads it).
ACTOR_METADATA_KEY = "x-aether-actor"


class ServiceClient(ABC):
    """A client of one server at ``target`` (``host:port``). ``security`` is the token and TLS setting
    (default: from ``AETHER_TOKEN``/``AETHER_TLS_CA``); ``actor`` names the caller in the audit log when
    auth is off; ``timeout`` bounds each unary call (default: the client's ``DEFAULT_TIMEOUT_S``)."""

    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    CHANNEL_OPTIONS: ClassVar[tuple[tuple[str, Any], ...]] = ()  # e.g. message size limits

    def __init__(
        self,
        target: str,
        *,
        security: ChannelSecurity | None = None,
        actor: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.target = target
        self.timeout = self.DEFAULT_TIMEOUT_S if timeout is None else timeout
        self._channel = open_channel(target, security, list(self.CHANNEL_OPTIONS))
        self._metadata: tuple[tuple[str, str], ...] = ((ACTOR_METADATA_KEY, actor),) if actor else ()
        self._open_stubs()

    @abstractmethod
    def _open_stubs(self) -> None:
        """Makes the service's stubs from ``self._channel`` (called last in ``__init__``)."""

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any, response_type: type[_Response]) -> _Response:
        """One unary call with this client's timeout and metadata; the answer must be a
        ``response_type`` (a wrong stub wiring fails loudly, not later with an attribute error)."""
        try:
            response = method(request, timeout=self.timeout, metadata=self._metadata)
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

        def drawn() -> Iterator[Any]:
            try:
                yield from requests
            except Exception as error:
                failures.append(error)
                raise

        try:
            return self._call(method, drawn(), response_type)
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
