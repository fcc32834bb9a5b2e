"""The lock that serializes ``aetherctl dev up`` and ``dev down`` on one stack folder (see
:mod:`control_plane.cli.local_stack`): ``flock`` on ``<folder>/stack.lock``, which the kernel releases
when the holder ends, however it ends, so a crashed command never leaves the stack locked. The services a
command starts do not inherit it: Python opens the file close-on-exec."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from clients.errors import FailedPrecondition
from clients.files import private_folder


@contextlib.contextmanager
def stack_lock(folder: Path, *, wait_s: float) -> Iterator[None]:
    """Holds the stack folder's lock (see the module's docstring), waiting at most ``wait_s`` for another
    ``dev up`` or ``dev down`` to release it; ``FailedPrecondition`` when it does not."""
    private_folder(folder)
    path = folder / "stack.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FailedPrecondition(
                        f"another `aetherctl dev up` or `dev down` on {folder} is still running after"
                        f" {wait_s:g}s (it holds {path}); let it finish, then run this again"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(descriptor)  # releases the lock
