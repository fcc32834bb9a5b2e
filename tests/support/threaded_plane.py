"""A control plane served on its own event loop in a background thread, so that blocking gRPC stubs and
held database transactions can run in the test's own threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from control_plane.server import ControlPlaneServer


class ThreadedControlPlane:
    def __init__(self, start: Coroutine[Any, Any, ControlPlaneServer]) -> None:
        """``start``: the server's start (``control_plane.server.start_server(...)``), run on the thread."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(timeout=60)
        self.address = self._server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
