"""What the replica manager reads from a replica's output: the lines of ``python -m data_plane`` that say
where it listens and when it serves (:mod:`data_plane.workers` for those of ``--workers N``), the copy of
its stdout to its folder once it has started, and the end of its stderr that an error about its exit
quotes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

READY_LINE = "aether data plane listening on "
METRICS_LINE = "aether data plane metrics on "
# Once its overall health is SERVING; for --workers N, once every worker's is (a probe through the shared
# port reaches one of them, so a replica was listed while another worker was still NOT_SERVING).
SERVING_LINE = "aether data plane serving"
# A --workers N data plane's line, before the serving one: every worker's own HOST:PORT (data_plane.workers).
WORKERS_LINE = "aether data plane workers on "
# Then its workers' pids, in the same order.
WORKER_PIDS_LINE = "aether data plane worker pids "
#: Lines of a replica's stderr an error about its exit quotes (the data plane's error is its last line).
STDERR_TAIL_LINES = 5


class ReplicaExited(RuntimeError):
    """The replica's process ended before it said it serves."""

    def __init__(self, status: int) -> None:
        super().__init__(f"data-plane replica exited with status {status} before serving")
        self.status = status


def stderr_said(log: Path, start: int) -> str:
    """The last lines a replica wrote to ``log`` since ``start`` (earlier starts' lines are older news),
    and where the log is, as an error about its exit ends."""
    try:
        with log.open("rb") as file:
            file.seek(max(start, file.seek(0, os.SEEK_END) - 65536))
            lines = file.read().decode(errors="replace").splitlines()
    except OSError as exc:
        lines = [f"(its log could not be read: {exc})"]
    tail = [line for line in lines if line.strip()][-STDERR_TAIL_LINES:]
    said = "; the end of its stderr:\n  " + "\n  ".join(tail) if tail else "; it wrote nothing to stderr"
    return f"{said}\n(its log: {log})"


async def copy_out(stream: asyncio.StreamReader, path: Path) -> None:
    """Appends everything ``stream`` still says to ``path``, until its end."""
    with await asyncio.to_thread(open, path, "ab") as file:
        while chunk := await stream.read(65536):
            await asyncio.to_thread(file.write, chunk)
            await asyncio.to_thread(file.flush)


async def line_after(process: asyncio.subprocess.Process, prefix: str) -> str:
    """What follows ``prefix`` on the first line of the replica's stdout that starts with it."""
    while True:
        text = await _next_line(process)
        if text.startswith(prefix):
            return text.removeprefix(prefix)


async def workers_then_serving(
    process: asyncio.subprocess.Process,
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Once the replica says it serves: its workers' own addresses and their pids, if it named any before
    (--workers)."""
    workers: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    while (text := await _next_line(process)) != SERVING_LINE:
        if text.startswith(WORKERS_LINE):
            workers = tuple(a for a in text.removeprefix(WORKERS_LINE).split(",") if a)
        elif text.startswith(WORKER_PIDS_LINE):
            pids = tuple(int(p) for p in text.removeprefix(WORKER_PIDS_LINE).split(",") if p.isdigit())
    return workers, pids


async def _next_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise ReplicaExited(await process.wait())
    return line.decode(errors="replace").strip()
