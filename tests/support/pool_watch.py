"""Watches an engine's pool for a thread that checks out a second connection while it holds one: such a
thread waits for the pool while it holds a connection (and perhaps a lock), and once every other
connection is held by writers queued behind that lock, it waits the pool's timeout and fails. Recorded
(with where it happened) rather than raised, so that the code under test runs on unchanged."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, event


class SecondConnections:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._held = threading.local()
        self.found: list[str] = []

    def _checkout(self, _dbapi: Any, _record: Any, _proxy: Any) -> None:
        held = getattr(self._held, "count", 0)
        if held:
            ours = [f for f in traceback.extract_stack() if "/control_plane/" in f.filename]
            self.found.append(" < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in ours[::-1]))
        self._held.count = held + 1

    def _checkin(self, _dbapi: Any, _record: Any) -> None:
        self._held.count = max(0, getattr(self._held, "count", 0) - 1)

    def __enter__(self) -> SecondConnections:
        event.listen(self._engine, "checkout", self._checkout)
        event.listen(self._engine, "checkin", self._checkin)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        event.remove(self._engine, "checkout", self._checkout)
        event.remove(self._engine, "checkin", self._checkin)
