"""One pipelined RESP connection to Redis (an ``asyncio.Protocol``), the unit :class:`data_plane
.redis_client.RedisClient` pools, and the packing of commands into RESP2.

Replies are parsed by ``hiredis.Reader`` in ``data_received``; each connection keeps a FIFO of the futures
of the commands in flight on it (replies arrive in request order), one deadline timer, and the commands
sent during one turn of the event loop, written together (see :meth:`RedisConnection.send`). The rules it
keeps are listed in :mod:`data_plane.redis_client`'s docstring.
"""

from __future__ import annotations

import asyncio
import collections
import math
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import hiredis

from data_plane.redis_errors import RedisUnavailable, reply_error


class Tracking(Protocol):
    """What hears about keys that changed (the near cache)."""

    def invalidate(self, keys: list[bytes] | None) -> None:
        """``keys`` changed in Redis (None: all of them, a flush)."""

    def reset(self) -> None:
        """A tracking connection closed: changes may have gone unheard."""


OnReply = Callable[[Any], None]


def pack_command(*args: bytes) -> bytes:
    """RESP2 encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


def pack_mget(keys: Sequence[bytes]) -> bytes:
    parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
    for key in keys:
        parts.append(b"$%d\r\n%s\r\n" % (len(key), key))
    return b"".join(parts)


class RedisConnection(asyncio.Protocol):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        url: str,
        tracking: Tracking | None = None,
        on_lost: Callable[[RedisConnection], None] | None = None,
        hung_after_s: float = 0.5,
    ) -> None:
        self._loop = loop
        # How long a command may go unanswered before Redis is taken for hung and the connection closes
        # (a command allowed longer gets its own timeout). A command's own deadline, often far shorter
        # (its caller's gRPC deadline), fails that command alone: see _check_deadlines.
        self._hung_after_s = hung_after_s
        self._url = url  # redacted: named in the errors of replies
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._tracking = tracking
        self._on_lost = on_lost
        # Redis announces changes of the keys read here (set once the handshake turned tracking on).
        self.tracks = False
        self.fileno = -1
        self.last_heard = loop.time()  # when a byte last arrived (the heartbeat's measure of silence)
        # In flight, oldest first: each command's future, its deadline (loop time), its timeout, what to
        # call with its reply as it is read (before anything after it), and when its silence means Redis
        # is hung (loop time).
        self.pending: collections.deque[tuple[asyncio.Future[Any], float, float, OnReply | None, float]] = (
            collections.deque()
        )
        # One timer per connection, due at the earliest deadline it knows of (see send).
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0
        self.is_open = False
        # Commands sent during one turn of the event loop, written together at its end (see send).
        self._unwritten: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock is not None:
            self.fileno = sock.fileno()
        self.is_open = True

    def data_received(self, data: bytes) -> None:
        self.last_heard = self._loop.time()
        self._reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(RedisUnavailable(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if type(reply) is hiredis.PushNotification:  # out of band (RESP3): not a command's reply
                self._pushed(reply)
                continue
            if not pending:  # a reply nobody asked for: the stream is out of step, start over
                self.close(RedisUnavailable("unexpected reply from Redis"))
                return
            future, _, _, on_reply, _ = pending.popleft()
            if on_reply is not None and self.tracks and not isinstance(reply, hiredis.ReplyError):
                on_reply(reply)
            if not future.done():  # done: its caller was cancelled, the reply is dropped in its place
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(reply_error(str(reply), self._url))
                else:
                    future.set_result(reply)

    def _pushed(self, push: list[Any]) -> None:
        if self.tracks and self._tracking is not None and push and push[0] == b"invalidate":
            keys = push[1] if len(push) > 1 else None
            self._tracking.invalidate(keys if isinstance(keys, list) else None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_pending(RedisUnavailable(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail_pending(self, error: Exception) -> None:
        self.is_open = False
        if self.tracks:  # changes of the keys read here can no longer be heard
            self.tracks = False
            if self._tracking is not None:
                self._tracking.reset()
        if self._on_lost is not None:
            self._on_lost(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.pending:
            future = self.pending.popleft()[0]
            if not future.done():
                future.set_exception(error)

    def send(self, payload: bytes, timeout_s: float, on_reply: OnReply | None = None) -> asyncio.Future[Any]:
        """Queues one command; its reply resolves the future, or RedisUnavailable after ``timeout_s``.
        ``on_reply`` is called with a reply that is not an error, on a tracking connection, as it is read.

        On an idle connection (nothing in flight) the command is written at once: a lone request should
        not wait for the loop's next turn. Behind commands still in flight, commands sent in the same turn
        of the event loop leave in one write: under concurrency one system call carries many requests'
        commands (a write cost ~15 % of a loaded server's time). Either way the commands reach Redis in
        the order of their futures.

        Deadlines: rather than a timer per command (creating and cancelling one costs ~7 µs when caches
        are cold, as they are between a server's requests), the connection keeps one timer at the
        earliest deadline it knows of and arms an earlier one only for a command due sooner; when it
        fires it fails the commands that are overdue, else moves on to the next deadline. A command past
        its own deadline fails alone (its reply, when it comes, is read and dropped); the connection
        closes, failing every command on it, only when one has gone unanswered past the hung limit
        (``hung_after_s``, or its own timeout when that is longer), even when its caller was cancelled:
        one caller's short deadline must not fail the reads pipelined beside it."""
        assert self._transport is not None
        loop = self._loop
        future = loop.create_future()
        now = loop.time()
        deadline = now + timeout_s
        idle = not self.pending  # then nothing is unwritten either: writing now keeps the order
        self.pending.append((future, deadline, timeout_s, on_reply, now + max(timeout_s, self._hung_after_s)))
        if self._watchdog is None or deadline < self._watchdog_at:
            self._arm(deadline)
        if idle:
            self._transport.write(payload)
            return future
        if not self._unwritten:
            self._loop.call_soon(self._write)
        self._unwritten.append(payload)
        return future

    def _arm(self, deadline: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(deadline, self._check_deadlines)
        self._watchdog_at = deadline

    def _check_deadlines(self) -> None:
        """A command past its deadline fails alone. One unanswered past the hung limit means the stream's
        state is unknown (Redis may be hung): the connection closes and fails every command on it; the
        next request dials a fresh one."""
        self._watchdog = None
        if not self.pending:
            return
        # uvloop's timers round to whole milliseconds and may fire a fraction early; then nothing is
        # overdue yet and the timer is re-armed at the same deadline (a short spin, only near a timeout).
        now = self._loop.time()
        hung = [timeout_s for _, _, timeout_s, _, hung_at in self.pending if hung_at <= now]
        if hung:
            limit = max(hung[0], self._hung_after_s)
            self.close(RedisUnavailable(f"Redis did not answer within {limit * 1000:.0f} ms"))
            return
        due = math.inf
        for future, deadline, timeout_s, _, hung_at in self.pending:
            if not future.done():
                if deadline <= now:
                    future.set_exception(
                        RedisUnavailable(f"Redis did not answer within {timeout_s * 1000:.0f} ms")
                    )
                else:
                    due = min(due, deadline)
            due = min(due, hung_at)
        self._arm(due)

    def _write(self) -> None:
        payload = self._unwritten[0] if len(self._unwritten) == 1 else b"".join(self._unwritten)
        self._unwritten.clear()
        if self.is_open and self._transport is not None:
            self._transport.write(payload)

    def close(self, error: Exception | None = None) -> None:
        self._fail_pending(error or RedisUnavailable("connection closed"))
        if self._transport is not None:
            self._transport.close()
