"""Following one of the control plane's watch streams (the registry, the deployment plans): the pattern
both watches share, in one place.

Each snapshot the stream delivers is handed to ``install`` (which swaps it in, or refuses it) and, if
installed, written to a file atomically (temp file, fsync, rename, fsync of the folder), so that a data
plane restarted while the control plane is unreachable serves the last snapshot it knew
(:meth:`WatchStream.load_persisted`). When the stream fails or ends, the task reconnects with capped
exponential backoff, with jitter so that replicas do not reconnect in lockstep; serving goes on from what
was installed last. The channel pings every ``keepalive_s`` (:mod:`clients.keepalive`): a connection
that died silently fails the stream instead of leaving the watch "connected" to nothing forever.

The channel takes messages of any size: gRPC's default receive limit (4 MiB) refused a registry with
many wide views, and the watch then failed RESOURCE_EXHAUSTED on every reconnect, so a new data plane
never served and a running one silently kept its old catalog. A snapshot is the whole state the data
plane must follow, sent by the control plane it trusts (over the same authenticated channel), so any cap
here (``max_message_bytes`` included, which bounds callers' requests and answers) would only move the size
at which the data plane stops following; a refusal is still logged as an error, naming the limit.

The channel honours the process's :class:`clients.sdk.auth.ChannelSecurity`: TLS when a CA is configured,
and the bearer token on every call (watching only reads, so the read-only token is enough).

Each snapshot names the metadata database it was read from (``store_id``, see
:mod:`control_plane.db.store_identity`). A snapshot of another database than the one whose snapshot is
held (from the file or an earlier stream) is refused: a control plane started on a wrong ``AETHER_DB_URL``,
or on a new SQLite file because ``AETHER_HOME`` changed, streamed that database's content (usually
nothing), and every data plane applied it and answered NOT_FOUND for every deployment and view; a
control-plane outage, by contrast, left them serving. Serving goes on from what is held; the refusal is
logged as one error per stream connection (naming both ids, the control plane's address and the way to
accept the new database) and counted (``on_refused("other_store")``; ``aether_watch_refused_total``).
An operator accepts another database deliberately: ``accept_store_id`` (``--accept-store-id`` /
``AETHER_ACCEPT_STORE_ID``) names the one to follow, or the snapshot files are removed before a restart.
What is accepted without a word: any database while nothing is held yet (a first start) or what is held
lists nothing (no view, no plan: nothing to protect; unless the held database is the one accepted), the
held one again (a restarted control plane, a restore from a backup: the id is in the database), a
snapshot without an id (a control plane older than the field) and, after a file or a snapshot without
one, whatever comes next (its database is unknown).

An outage is logged once, not once per try (:class:`OutageLog`): its first failed try as a warning (an
error for a refused size), the others at DEBUG with a reminder every ``remind_every_s`` (60 s) that
counts them, and its end at INFO. A control plane down for an hour made two warning lines every ~4 s
per data plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Generic, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from clients.files import private_folder
from clients.keepalive import WATCH_KEEPALIVE_S, watch_channel_options
from clients.sdk.auth import ChannelSecurity, open_aio_channel

_log = logging.getLogger("aether.data_plane.watch_stream")

M = TypeVar("M", bound=Message)
#: While a watch keeps failing, a reminder (with the count of tries) this often; the tries between are
#: logged at DEBUG.
REMIND_EVERY_S = 60.0


#: ``on_refused``'s reason for a snapshot of another metadata database than the one held.
OTHER_STORE = "other_store"


def store_of(message: Message) -> str:
    """The ``store_id`` of a watch snapshot (both kinds have one); empty when the sender had none."""
    return str(getattr(message, "store_id", ""))


def save_snapshot(path: Path, data: bytes) -> None:
    """Atomic replace: readers of ``path`` see the old file or the new one, never a torn one."""
    private_folder(path.parent)  # by default AETHER_HOME, which may not exist yet
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_message(path: Path, message_type: type[M], what: str) -> M | None:
    """The message persisted at ``path``, or None when there is none or it cannot be parsed (logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    message = message_type()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError; anything unreadable is treated as absent
        _log.error("ignoring unreadable %s %s: %s", what, path, exc)
        return None
    return message


class OutageLog:
    """How one watch logs a run of failed tries: the first at its level, the next ones at DEBUG with a
    reminder at its level every ``remind_every_s`` (but at once one of a higher level than any before, say
    a refused size after refused connections), and the first success after them at INFO."""

    def __init__(self, what: str, address: str, remind_every_s: float) -> None:
        self._what, self._address, self._remind_every_s = what, address, remind_every_s
        self.tries = 0
        self._since = self._reminded = 0.0
        self._worst = logging.NOTSET  # the highest level logged in this outage

    def failed(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        self.tries += 1
        if self.tries == 1:
            self._since = self._reminded = now
            self._worst = level
        elif level > self._worst:  # a worse kind of failure than the outage showed so far: said at once
            self._worst = level
        elif now - self._reminded >= self._remind_every_s:
            self._reminded = now
            message += " (%d tries in a row have failed, over %.0f s)"
            args = (*args, self.tries, now - self._since)
        else:
            level = logging.DEBUG
        _log.log(level, message, *args, exc_info=exc_info)

    def delivered(self) -> None:
        if self.tries:
            _log.info(
                "%s watch on %s delivers again, after %d failed tries over %.0f s",
                self._what, self._address, self.tries, time.monotonic() - self._since,
            )  # fmt: skip
            self.tries = 0


class WatchStream(Generic[M]):
    """One background task that follows a server-streaming watch RPC.

    ``open_stream`` starts the RPC on a channel; ``install`` swaps a snapshot in and says whether it
    did (it is awaited before the snapshot is persisted, and a refused snapshot is not persisted, so the
    file never runs ahead of what is served). A snapshot of another metadata database than the held one
    never reaches ``install`` unless it is the database ``accept_store_id`` names (see the module's
    docstring); ``on_refused`` is told of each one refused."""

    def __init__(
        self,
        what: str,
        address: str,
        snapshot_path: Path,
        message_type: type[M],
        open_stream: Callable[[grpc.aio.Channel], AsyncIterator[M]],
        install: Callable[[M], Awaitable[bool]],
        *,
        security: ChannelSecurity | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        keepalive_s: float = WATCH_KEEPALIVE_S,
        remind_every_s: float = REMIND_EVERY_S,
        accept_store_id: str = "",
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.what = what
        self.address = address
        self.path = snapshot_path
        self._type = message_type
        self._open_stream = open_stream
        self._install = install
        # Not from the environment by default: a caller that wants it passes it (settings carry it).
        self._security = ChannelSecurity() if security is None else security
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._channel_options = [
            *watch_channel_options(keepalive_s, min(keepalive_s, 10.0)),
            ("grpc.max_receive_message_length", -1),  # a snapshot of any size (see the module's docstring)
        ]
        self._persisted: bytes | None = None
        self._accept_store_id = accept_store_id
        self._on_refused = on_refused
        # The metadata database of the snapshot installed (empty: none yet, or one that named none).
        self.store_id = ""
        # The database of the last snapshot refused as another one's (empty: none refused since the last
        # snapshot installed), and the stream connection (counted) whose error says so: one per connection.
        self.refused_store_id = ""
        self._connections = 0
        self._refusal_logged_on = 0
        self._task: asyncio.Task[None] | None = None
        # The snapshot file as adopt_file last saw it (inode, mtime, size): read again only once changed.
        self._file_seen: tuple[int, int, int] | None = None
        self.connected = asyncio.Event()  # set while the stream is delivering snapshots
        self._outage = OutageLog(what, address, remind_every_s)

    async def load_persisted(self) -> M | None:
        """Installs the snapshot file, if there is one, and returns it."""
        message = await asyncio.to_thread(load_message, self.path, self._type, self.what)
        if message is None:
            return None
        if not await self._install(message):
            return None
        self._persisted = message.SerializeToString(deterministic=True)
        self.store_id = store_of(message)
        return message

    async def adopt_file(self, newer: Callable[[M], bool]) -> bool:
        """Installs the snapshot file when it holds one that ``newer`` says is ahead of what is served: the
        workers of a ``--workers N`` data plane share the file, and a sibling whose stream is ahead wrote it
        there. Whether it did. The file is read only when it changed since the last look (a stat), so a
        caller may ask on each failure that a newer snapshot might cure; a snapshot of another metadata
        database is never taken from it (as from the stream)."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen == self._file_seen:
            return False
        self._file_seen = seen
        message = await asyncio.to_thread(load_message, self.path, self._type, self.what)
        if message is None or not newer(message) or self._other_store(store_of(message)):
            return False
        if not await self._install(message):
            return False
        self._persisted = message.SerializeToString(deterministic=True)  # what the file holds
        self.store_id = store_of(message) or self.store_id
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.what}-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _other_store(self, offered: str) -> bool:
        """Whether a snapshot of database ``offered`` is to be refused (see the module's docstring)."""
        held = self.store_id
        other = bool(offered and held and offered != held and offered != self._accept_store_id)
        # Holding nothing there is nothing to protect, unless the operator chose the database held.
        return other and not (self._holds_nothing() and held != self._accept_store_id)

    def _holds_nothing(self) -> bool:
        """Whether the snapshot held lists nothing (every repeated field empty: no view, no plan): another
        database can empty nothing then, and refusing it left a data plane whose database was replaced
        before anything was applied (``dev up`` on a home whose database was deleted) serving nothing."""
        if self._persisted is None:
            return True
        held = self._type.FromString(self._persisted)
        repeated = [field.name for field in held.DESCRIPTOR.fields if field.is_repeated]
        return not any(getattr(held, name) for name in repeated)

    def _refuse_store(self, offered: str) -> None:
        if self._on_refused is not None:
            self._on_refused(OTHER_STORE)
        if self.refused_store_id == offered and self._refusal_logged_on == self._connections:
            return  # said once on this connection
        self.refused_store_id = offered
        self._refusal_logged_on = self._connections
        _log.error(
            "%s watch on %s: refusing the snapshot of metadata database %s: the %s served here came from "
            "database %s. A control plane on another database (a wrong AETHER_DB_URL, another AETHER_HOME) "
            "would empty it, so this data plane goes on serving what it holds. If database %s is the one "
            "to follow now, restart this data plane with --accept-store-id %s (or AETHER_ACCEPT_STORE_ID=%s)",
            *(self.what, self.address, offered, self.what, self.store_id, offered, offered, offered),
        )

    async def _apply(self, message: M) -> None:
        offered = store_of(message)
        if self._other_store(offered):
            self._refuse_store(offered)
            return  # the held snapshot is still served, and stays the file's
        if offered and self.store_id and offered != self.store_id:  # the one accept_store_id names
            _log.warning(
                "%s watch on %s: following metadata database %s in place of %s, as --accept-store-id / "
                "AETHER_ACCEPT_STORE_ID says",
                *(self.what, self.address, offered, self.store_id),
            )
        if not await self._install(message):
            return  # refused: the previous snapshot is still served, and stays the file's
        self.store_id = offered
        self.refused_store_id = ""
        data = message.SerializeToString(deterministic=True)
        if data != self._persisted:
            try:
                await asyncio.to_thread(save_snapshot, self.path, data)
                self._persisted = data
            except OSError as exc:  # serving goes on; only a restart during an outage would miss it
                _log.error("could not persist the %s to %s: %s", self.what, self.path, exc)

    async def _run(self) -> None:
        backoff = self._backoff_initial_s
        outage = self._outage
        while True:
            self._connections += 1
            try:
                async with open_aio_channel(self.address, self._security, self._channel_options) as channel:
                    async for message in self._open_stream(channel):
                        self.connected.set()
                        outage.delivered()
                        await self._apply(message)
                        backoff = self._backoff_initial_s
                outage.failed(
                    logging.WARNING, "%s watch stream from %s ended; reconnecting", self.what, self.address
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # retrying will not shrink it
                    outage.failed(
                        logging.ERROR,
                        "%s watch on %s: a snapshot was refused for its size (this side receives any size; "
                        "a message limit of the control plane or of a proxy between refused it), so the %s "
                        "served here is not the latest: %s %s",
                        *(self.what, self.address, self.what, code, exc.details()),
                    )
                else:
                    outage.failed(
                        logging.WARNING, "%s watch on %s failed: %s %s", self.what, self.address, code,
                        exc.details(),
                    )  # fmt: skip
            except Exception:
                outage.failed(logging.ERROR, "%s watch on %s failed", self.what, self.address, exc_info=True)
            self.connected.clear()
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._backoff_max_s)
