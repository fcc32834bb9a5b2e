"""The metadata database's identity: a random UUID made once per database (migration 0030), sent with
every watch snapshot (``RegistrySnapshot.store_id``, ``DeploymentPlanSnapshot.store_id``).

A data plane holds the catalog and deployment plans of one database. A control plane started on another
one (a wrong ``AETHER_DB_URL``, a fresh SQLite file because ``AETHER_HOME`` changed) streamed that
database's content, empty more often than not, and every data plane applied it: every deployment and view
answered NOT_FOUND. With the id a data plane tells "the same database, changed" from "another database"
and refuses the latter until an operator accepts it (:mod:`data_plane.watch_stream`). The id lives in the
database itself, so a copy (a restore from a backup, a second control plane on the same database) keeps
it, while a database created anew gets a new one."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from control_plane.db.engine import read_session, write_session
from control_plane.db.models import ROW_ID, Base

_ROW_ID = 1
#: The length of ``str(uuid.uuid4())``: 36 characters, dashes included.
STORE_ID_LENGTH = 36


class StoreIdentityRow(Base):
    """One row: the database's id (see the module's docstring). Never changed once made."""

    __tablename__ = "store_identity"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(STORE_ID_LENGTH))


def new_store_id() -> str:
    return str(uuid.uuid4())


def read_store_id(sessions: sessionmaker[Session]) -> str:
    """The database's id. Migration 0030 makes it; a database created from the models rather than the
    migrations (some tests) has none yet, so the first reader makes it, and of two racing the loser reads
    the winner's."""
    with read_session(sessions) as session:
        found = session.scalar(select(StoreIdentityRow.store_id).where(StoreIdentityRow.id == _ROW_ID))
    if found is not None:
        return found
    try:
        with write_session(sessions) as session:
            found = session.scalar(select(StoreIdentityRow.store_id).where(StoreIdentityRow.id == _ROW_ID))
            if found is not None:
                return found
            made = new_store_id()
            session.add(StoreIdentityRow(id=_ROW_ID, store_id=made))
        return made
    except IntegrityError:  # another process made it between our read and our insert
        with read_session(sessions) as session:
            return session.scalars(
                select(StoreIdentityRow.store_id).where(StoreIdentityRow.id == _ROW_ID)
            ).one()


class StoreIdentity:
    """The id of one database, read once (in a worker thread: it is blocking SQL) by the first watch
    stream that needs it and kept: it never changes while the engine points at that database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._id: str | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        if self._id is None:
            async with self._lock:
                if self._id is None:
                    self._id = await asyncio.to_thread(read_store_id, self._sessions)
        return self._id
