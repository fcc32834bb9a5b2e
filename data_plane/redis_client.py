"""A minimal asyncio Redis client for the read path: MGET/GET (and any command) over RESP2, parsed by
``hiredis.Reader``, with a small pool of pipelined connections (one connection:
:class:`data_plane.redis_connection.RedisConnection`).

Why not ``redis.asyncio``: on this path the client is most of the latency. redis.asyncio spends roughly
100–200 µs of Python per command (connection checkout, command packing, response callbacks, timeout
wrappers); this client writes one pre-packed buffer and resolves one future from ``data_received``, which
costs a few µs on uvloop (``benchmarks/online_features.py`` measures both floors in the same run).

Correctness rules:

* Replies arrive in request order on a connection, so each connection keeps a FIFO of futures and many
  requests may be in flight on it at once (pipelining). A reply always pops the oldest future, even one
  whose caller has given up, so replies never shift onto the wrong caller.
* A request that times out fails alone (its reply, when it comes, is read and dropped): callers' budgets
  are their gRPC deadlines, and one caller's 2 ms deadline closed the connection under every read
  pipelined beside it (UNAVAILABLE for them, and a cleared near cache). Only a command unanswered past
  ``hung_after_s`` (the data plane's ``redis_timeout_s``; a command's own timeout when longer) closes its
  connection: the stream's state is then unknown (Redis may be hung), so the other requests waiting on it
  fail too, and the next request dials a fresh one.
* Connections are dialed lazily, inside the caller's time budget. When Redis is down every request fails
  fast with :class:`RedisUnavailable`; when it is back the next request simply connects again.
* Error replies are sorted by their first word, because callers answer them differently: one that says
  Redis cannot serve *now* (LOADING after a restart, BUSY with a script, a replica whose primary is down)
  is :class:`RedisBusy`, a kind of :class:`RedisUnavailable` (retryable); missing or wrong credentials
  and missing permissions are :class:`RedisMisconfigured` (a setting to fix: waiting will not help), and
  so is a Redis Cluster node, which each dial asks about (``INFO cluster``, sent with the handshake, so
  no read pays for it): a read's one MGET spans hash slots and the writers' script touches a key of
  another slot, so only a single Redis endpoint works (docs/architecture.md, "One Redis endpoint").
* With a :class:`Tracking` listener (the near cache, ``data_plane.near_cache``), each connection speaks
  RESP3 with ``CLIENT TRACKING ON``: Redis pushes an invalidation for every key the connection read once
  that key changes. Pushes are handled in ``data_received`` in stream order, and so is a command's
  ``on_reply`` (where the cache stores what it read), so a reply is always stored before the invalidation
  that follows it. A tracking connection that closes resets the listener; a Redis that refuses tracking
  (older than 6, or an ACL user without ``client``) leaves the client without it, with one warning.
* SWAPDB is the one change of the read database Redis does not announce to tracking clients: each tracking
  connection watches the SWAPDB count instead (``data_plane.db_swaps``), with its handshake and every
  heartbeat, and a count that moved clears the cache. A user not allowed ``INFO`` leaves swaps unseen
  (until the cache's max age), with one warning.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import select
from collections.abc import Awaitable, Sequence
from typing import Any

from clients.redis_address import RedisAddress
from clients.uris import redact_uri
from data_plane.db_swaps import COMMANDSTATS, swap_count
from data_plane.redis_connection import OnReply, RedisConnection, Tracking, pack_command, pack_mget
from data_plane.redis_errors import (
    URL_SETTING,
    RedisCommandError,
    RedisMisconfigured,
    RedisNoPermission,
    RedisUnavailable,
)

_log = logging.getLogger("aether.data_plane.redis")


#: Tracking connections idle this long are pinged; one silent for longer than SILENT_AFTER_S stops the
#: cache from answering until it is heard again, and one whose ping goes unanswered for PING_TIMEOUT_S is
#: closed (clearing the cache). The ping's own timeout is long: reads pipelined behind it fail with it, and
#: a Redis stalled for a second or two must not fail reads allowed longer (each has its own deadline).
HEARTBEAT_S = 0.25
SILENT_AFTER_S = 1.0
PING_TIMEOUT_S = 10.0
_PING = b"*1\r\n$4\r\nPING\r\n"


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Marks a heartbeat ping's failure as seen (its connection is closed by then)."""
    if not future.cancelled():
        future.exception()


class RedisClient:
    """A pool of up to ``pool_size`` pipelined connections to one Redis server; with ``tracking``, each
    asks Redis to announce changes of the keys it reads (see the module's docstring)."""

    def __init__(
        self, url: str, *, pool_size: int = 4, tracking: Tracking | None = None, hung_after_s: float = 0.5
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._hung_after_s = hung_after_s  # a connection's silence that means Redis is hung (see the docs)
        self.address = RedisAddress.from_url(url)
        self.url = redact_uri(url)  # what messages and logs may show: no user name, no password
        self._pool_size = pool_size
        self._connections: list[RedisConnection] = []
        self._dialing = 0
        self._closed = False
        self._tracking = tracking
        self._tracking_refused = False
        # The tracking connections' sockets, to ask (without reading) whether Redis sent anything unread.
        self._poller = select.poll()
        self._polled: dict[int, RedisConnection] = {}
        self._dial_settled = asyncio.Event()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._silent = False
        # SWAPDB watch (data_plane.db_swaps): each tracking connection's last SWAPDB count, the connections
        # with a heartbeat's check in flight, and whether Redis lets this user ask (INFO).
        self._swap_marks: dict[RedisConnection, int] = {}
        self._swap_checking: set[RedisConnection] = set()
        self._swap_checks_refused = False
        self._swaps_seen: int | None = None  # the SWAPDB count last logged

    @property
    def tracking_refused(self) -> bool:
        """Redis refused client-side caching (too old, or a user without the permission): no cache."""
        return self._tracking_refused

    @property
    def tracking(self) -> bool:
        """Whether some open connection has Redis announcing changes of the keys it read."""
        return bool(self._polled)

    def quiet(self) -> bool:
        """No tracking connection has unread bytes (every invalidation that has reached this host is
        applied) and each has been heard from lately (see :meth:`_beat`). One ``poll`` system call; False
        when nothing tracks (then nothing may be served from a cache)."""
        return bool(self._polled) and not self._silent and not self._poller.poll(0)

    def mget(
        self, keys: Sequence[bytes], timeout_s: float, on_reply: OnReply | None = None
    ) -> Awaitable[list[bytes | None]]:
        """Values of ``keys`` (None where absent) in one round trip. ``on_reply`` gets them as they are
        read, on a tracking connection only (see :meth:`RedisConnection.send`)."""
        return self.execute_packed(pack_mget(keys), timeout_s, on_reply)

    def execute(self, *args: bytes, timeout_s: float) -> Awaitable[Any]:
        return self.execute_packed(pack_command(*args), timeout_s)

    def execute_packed(
        self, payload: bytes, timeout_s: float, on_reply: OnReply | None = None
    ) -> Awaitable[Any]:
        """Sends one RESP-encoded command; awaiting the result gives its reply, RedisUnavailable when Redis
        cannot be reached or does not answer within ``timeout_s``, RedisCommandError for an error reply.

        With an idle connection at hand (the read path's usual case) the result is the reply's future
        itself, so that a reply resumes its caller without a coroutine of ours to step through on the way
        (one request of a loaded server is all such small costs); otherwise a coroutine that connects
        first, within the same budget."""
        if timeout_s > 0:
            connection = self._idle_connection()
            if connection is not None:
                return connection.send(payload, timeout_s, on_reply)
        return self._connect_and_send(payload, timeout_s, on_reply)

    async def _connect_and_send(self, payload: bytes, timeout_s: float, on_reply: OnReply | None) -> Any:
        if timeout_s <= 0:
            raise RedisUnavailable("no time left to ask Redis")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connection = await self._connect_or_share(deadline)
        return await connection.send(payload, max(deadline - loop.time(), 0.0), on_reply)

    def _idle_connection(self) -> RedisConnection | None:
        for connection in self._connections:
            if connection.is_open and not connection.pending:
                return connection
        return None

    async def _connect_or_share(self, deadline: float) -> RedisConnection:
        while True:
            self._connections = [c for c in self._connections if c.is_open]
            if self._closed:
                raise RedisUnavailable("the Redis client is closed")
            if len(self._connections) + self._dialing < self._pool_size:
                return await self._dial(deadline)
            if self._connections:  # pool full and busy: pipeline behind the least loaded connection
                return min(self._connections, key=lambda c: len(c.pending))
            # Every slot is still dialing: wait for one of those dials, then look again (within this
            # caller's deadline). Dialing one more per waiting caller opened a connection per request of a
            # burst at start or after a reset, kept for good (and, tracking, each pinged and tracked).
            settled = self._dial_settled
            try:
                async with asyncio.timeout_at(deadline):
                    await settled.wait()
            except TimeoutError:
                raise RedisUnavailable(f"could not connect to Redis at {self.address} in time") from None

    async def _dial(self, deadline: float) -> RedisConnection:
        loop = asyncio.get_running_loop()
        address = self.address
        self._dialing += 1
        connection: RedisConnection | None = None
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(
                    lambda: RedisConnection(loop, self.url, self._tracking, self._lost, self._hung_after_s),
                    address.host,
                    address.port,
                )
                await self._handshake(connection, deadline)
        except BaseException as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, TimeoutError):
                raise RedisUnavailable(f"could not connect to Redis at {address} in time") from None
            if isinstance(exc, OSError):
                raise RedisUnavailable(
                    f"could not connect to Redis at {address}: {exc.strerror or exc}"
                ) from None
            raise
        finally:
            self._dialing -= 1
            self._dial_settled.set()  # callers waiting for a slot look again
            self._dial_settled = asyncio.Event()
        if self._closed:
            connection.close()
            raise RedisUnavailable("the Redis client is closed")
        if connection.tracks:
            self._poller.register(connection.fileno, select.POLLIN)
            self._polled[connection.fileno] = connection
            if self._heartbeat is None:
                self._heartbeat = loop.call_later(HEARTBEAT_S, self._beat)
        self._connections.append(connection)
        return connection

    def _beat(self) -> None:
        """Pings each idle tracking connection, and marks the client silent while one has said nothing for
        :data:`SILENT_AFTER_S`: a connection whose Redis vanished without closing it (a partition, a host
        gone) would otherwise let the cache answer for up to its max age with no invalidation able to
        arrive. A ping unanswered for :data:`PING_TIMEOUT_S` closes its connection, clearing the cache."""
        self._heartbeat = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        silent = False
        for connection in self._connections:
            if not (connection.tracks and connection.is_open):
                continue
            quiet_for = now - connection.last_heard
            silent = silent or quiet_for > SILENT_AFTER_S
            if connection in self._swap_marks:
                # Busy or not: a connection always busy must still see a swap. Its answer is a ping's too.
                if connection not in self._swap_checking:
                    self._swap_checking.add(connection)
                    check = self._check_swaps(connection, PING_TIMEOUT_S)
                    check.add_done_callback(functools.partial(self._swap_checked, connection))
            elif quiet_for >= HEARTBEAT_S and not connection.pending:
                ping = connection.send(_PING, PING_TIMEOUT_S)
                ping.add_done_callback(_retrieve)
        self._silent = silent
        self._heartbeat = loop.call_later(HEARTBEAT_S, self._beat)

    def _check_swaps(self, connection: RedisConnection, timeout_s: float) -> asyncio.Future[Any]:
        """Asks ``connection`` for the SWAPDB count; its reply, read in stream order, clears the cache when
        the count moved since the connection last asked (``data_plane.db_swaps``)."""

        def seen(reply: Any) -> None:
            count = swap_count(reply)
            before = self._swap_marks.get(connection)
            if count is None or before is None:  # not an answer, or the connection is gone
                return
            self._swap_marks[connection] = count
            if count != before:
                if self._swaps_seen != count:
                    self._swaps_seen = count
                    _log.info(
                        "Redis at %s swapped databases (SWAPDB, or its counts were reset): the near cache "
                        "is cleared",
                        self.url,
                    )
                if self._tracking is not None:
                    self._tracking.reset()

        return connection.send(COMMANDSTATS, timeout_s, seen)

    def _swap_checked(self, connection: RedisConnection, check: asyncio.Future[Any]) -> None:
        self._swap_checking.discard(connection)
        _retrieve(check)

    async def sync(self, timeout_s: float) -> None:
        """Returns once every change Redis acknowledged before the call has reached the cache: on each
        tracking connection a PING, or the SWAPDB check where it has one, whose reply Redis sends after any
        invalidation it owed that connection. For a caller that needs a write it knows of to be seen (a
        test, a write-then-read workflow)."""
        asks = [
            self._check_swaps(c, timeout_s) if c in self._swap_marks else c.send(_PING, timeout_s)
            for c in self._connections
            if c.tracks and c.is_open
        ]
        await asyncio.gather(*asks)

    def _lost(self, connection: RedisConnection) -> None:
        # By owner, not by number alone: a closed connection's descriptor may already belong to a new one.
        if self._polled.get(connection.fileno) is connection:
            del self._polled[connection.fileno]
            self._poller.unregister(connection.fileno)
        self._swap_marks.pop(connection, None)

    async def connect(self, timeout_s: float) -> None:
        """Dials a connection now (handshake and checks included) rather than on the first command: a
        start that finds the URL unusable says so at once (:class:`RedisMisconfigured`)."""
        loop = asyncio.get_running_loop()
        await self._connect_or_share(loop.time() + timeout_s)

    async def _handshake(self, connection: RedisConnection, deadline: float) -> None:
        """AUTH, SELECT and ``INFO cluster``, sent together (one round trip). An error reply to AUTH or
        SELECT is a URL to fix (:class:`RedisMisconfigured`) unless it says "not now" (:class:`RedisBusy`);
        INFO is answered NOPERM for a least-privilege ACL user, which is no reason to refuse (nothing is
        known then); NOAUTH, though, says the URL lacks the password."""
        address = self.address
        loop = asyncio.get_running_loop()
        steps: list[tuple[bytes, asyncio.Future[Any]]] = []

        def send(*args: bytes) -> None:
            command = pack_command(*args)
            steps.append((args[0], connection.send(command, max(deadline - loop.time(), 0.0))))

        if address.password is not None:
            auth = [address.username.encode()] if address.username else []
            send(b"AUTH", *auth, address.password.encode())
        if address.db:
            send(b"SELECT", str(address.db).encode())
        tracking_steps = 0
        if self._tracking is not None and not self._tracking_refused:
            send(b"HELLO", b"3")  # invalidations arrive as RESP3 pushes on this same connection
            send(b"CLIENT", b"TRACKING", b"ON")
            tracking_steps = 2
            if not self._swap_checks_refused:
                # The SWAPDB count before any read here: a swap after it is seen by the next check.
                steps.append((b"INFO", connection.send(COMMANDSTATS, max(deadline - loop.time(), 0.0))))
                tracking_steps = 3
        send(b"INFO", b"cluster")
        replies = await asyncio.gather(*(future for _, future in steps), return_exceptions=True)
        if tracking_steps:
            tracked = replies[-1 - tracking_steps : -1]
            steps = steps[: -1 - tracking_steps] + steps[-1:]
            replies = replies[: -1 - tracking_steps] + replies[-1:]
            self._start_tracking(connection, tracked[:2], tracked[2] if tracking_steps == 3 else None)
        info = replies[-1]
        if isinstance(info, bytes) and b"cluster_enabled:1" in info:
            raise RedisMisconfigured(
                f"the online store at {self.url} is a Redis Cluster node; the data plane reads from a "
                f"single Redis (primary) endpoint: set {URL_SETTING} to a standalone Redis or a "
                "replicated primary (docs/architecture.md, 'One Redis endpoint')"
            )
        for (name, _), reply in zip(steps[:-1], replies[:-1], strict=True):
            if isinstance(reply, RedisCommandError):
                raise RedisMisconfigured(
                    f"the online store at {self.url} refused {name.decode()}: {reply}; check the database "
                    f"number and credentials in {URL_SETTING}"
                )
            if isinstance(reply, BaseException):
                raise reply
        if isinstance(info, RedisUnavailable | RedisMisconfigured) and not isinstance(
            info, RedisNoPermission
        ):
            raise info  # a timeout, a lost connection, LOADING; NOAUTH

    def _refuse_tracking(self, reason: Exception) -> None:
        if self._tracking_refused:  # connections dialed together are all refused: one warning says it
            return
        self._tracking_refused = True
        _log.warning(
            "Redis at %s refused client-side caching (HELLO 3 / CLIENT TRACKING ON: %s); the near cache is "
            "off and every read goes to Redis",
            self.url,
            reason,
        )
        if self._tracking is not None:
            self._tracking.reset()

    def _start_tracking(self, connection: RedisConnection, replies: list[Any], counts: Any) -> None:
        """Turns tracking on for ``connection`` from the handshake's replies to HELLO 3 and CLIENT TRACKING
        ON, and to INFO commandstats (``counts``; None when not asked, the user not being allowed it)."""
        # Refused for good: an unknown command (Redis < 6) or a user without the permission. Anything
        # else (a timeout, LOADING) leaves this connection untracked and the next dial tries again.
        refusal = next((r for r in replies if isinstance(r, RedisCommandError | RedisNoPermission)), None)
        if refusal is not None:
            self._refuse_tracking(refusal)
            return
        if not connection.is_open or any(isinstance(r, BaseException) for r in replies):
            return
        if isinstance(counts, RedisCommandError | RedisNoPermission):
            self._refuse_swap_checks(counts)
        count = swap_count(counts)
        if count is not None:
            self._swap_marks[connection] = count
            connection.tracks = True
        elif self._swap_checks_refused:  # tracked without the SWAPDB watch (warned once)
            connection.tracks = True

    def _refuse_swap_checks(self, reason: Exception) -> None:
        if self._swap_checks_refused:
            return
        self._swap_checks_refused = True
        _log.warning(
            "Redis at %s refused INFO commandstats (%s): the near cache cannot see a SWAPDB of the database "
            "it reads (Redis announces no change for it), and serves the swapped-out values until its max "
            "age (AETHER_NEAR_CACHE_MAX_AGE_S); allow the user INFO, or set AETHER_NEAR_CACHE_MB=0 where "
            "databases are swapped",
            self.url,
            reason,
        )

    async def close(self) -> None:
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        for connection in self._connections:
            connection.close()
        self._connections = []
