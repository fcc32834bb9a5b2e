"""Stage 2: data in. Weather and calendar rows go through batch ingestion (validated, then written to
the offline store and the latest row per zone online); booking events are published to the ``bookings``
Redis stream and a real stream materializer (``python -m control_plane.ingestion.streaming``, a
subprocess) validates them, quarantines the bad ones and writes the windowed aggregations to both
stores. Records in = accepted + quarantined is read back from the Ingestion service's run counters."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import control_plane
from clients.lifeline import tied
from clients.sdk.ingestion import IngestionClient
from control_plane.cli.settings import CliSettings
from control_plane.demo import world
from control_plane.demo.progress import Bar, Say
from control_plane.redis_clients import DEFAULT_REDIS_TIMEOUT_S, sync_client

STREAM = "bookings"
STREAM_VIEW = "zone_demand"


@dataclass(frozen=True)
class Ingested:
    records_in: int
    accepted: int
    quarantined: int
    quarantine_reasons: list[str]


def ingest_batch(address: str, zones: int, times: list[dt.datetime], rng: np.random.Generator, *,
                 shifted: bool) -> tuple[int, int, int]:  # fmt: skip
    """Weather (shifted or not) and calendar rows for ``times``; returns (in, accepted, quarantined)."""
    with IngestionClient(address) as ingestion:
        answers = [
            ingestion.ingest("zone_weather", world.weather(rng, zones, times, shifted), source="demo"),
            ingestion.ingest("zone_calendar", world.calendar(zones, times), source="demo"),
        ]
    return (
        sum(a.records_in for a in answers),
        sum(a.accepted for a in answers),
        sum(a.quarantined for a in answers),
    )


def _materializer(settings: CliSettings, lateness_s: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, AETHER_HOME=str(settings.home))
    source_root = str(Path(next(iter(control_plane.__path__))).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    log = (settings.home / "dev" / "materializer.log").open("w")
    command = [sys.executable, "-m", "control_plane.ingestion.streaming", "--view", STREAM_VIEW,
               "--db-url", settings.db_url, "--redis-url", settings.redis_url,
               "--lateness-s", str(lateness_s)]  # fmt: skip
    # Tied to the demo like its stack: a demo killed mid-stream must not leave it consuming.
    command, pass_fds = tied(command)
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, pass_fds=pass_fds
    )


def _stream_counts(ingestion: IngestionClient) -> tuple[int, int, int]:
    runs = [r for r in ingestion.list_runs(view=STREAM_VIEW) if r.source_kind == "stream"]
    return (
        sum(r.records_in for r in runs),
        sum(r.accepted for r in runs),
        sum(r.quarantined for r in runs),
    )


def stream_bookings(
    settings: CliSettings, events: list[world.Booking], say: Say, lateness_s: int, timeout_s: float = 120.0
) -> tuple[int, int, int]:
    """Publishes ``events`` and runs the materializer until every one is accounted for. ``lateness_s``
    covers the history streamed now: an event reaching the stream later than that after its event time
    is quarantined."""
    client = sync_client(settings.redis_url, DEFAULT_REDIS_TIMEOUT_S)
    try:
        pipeline = client.pipeline(transaction=False)
        for event in events:
            pipeline.xadd(
                STREAM,
                {"zone_id": event.zone, "booked_at": event.booked_at, "booking_id": event.booking_id,
                 "fare": event.fare},
            )  # fmt: skip
        pipeline.execute()
    finally:
        client.close()
    process = _materializer(settings, lateness_s)
    bar = Bar(say, "stream materializer", len(events))
    deadline = time.monotonic() + timeout_s
    try:
        with IngestionClient(settings.control_plane_addr) as ingestion:
            while True:
                counts = _stream_counts(ingestion)
                bar.update(min(counts[0], len(events)))
                if counts[0] >= len(events):
                    return counts
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the stream materializer exited with status {process.returncode}; "
                        f"see {settings.home / 'dev' / 'materializer.log'}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the stream materializer accounted for {counts[0]} of {len(events)} events "
                        f"in {timeout_s:g}s"
                    )
                time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def ingest_history(settings: CliSettings, size: world.Size, now: dt.datetime, rng: np.random.Generator,
                   say: Say) -> Ingested:  # fmt: skip
    start = world.hour_floor(now) - dt.timedelta(hours=size.hours)
    times = [start + dt.timedelta(hours=h) for h in range(size.hours + 1)]
    batch = ingest_batch(settings.control_plane_addr, size.zones, times, rng, shifted=False)
    good = world.bookings(rng, size, start, now)
    bad = world.bad_bookings(now, max(3, len(good) // 50))
    # The bad events are interleaved with the good ones, as they would be in a real stream.
    events = list(good)
    for n, event in enumerate(bad):
        events.insert((n + 1) * len(good) // (len(bad) + 1), event)
    # The history reaches the stream now, up to size.hours + 1 h after its event times.
    streamed = stream_bookings(settings, events, say, lateness_s=(size.hours + 2) * 3600)
    with IngestionClient(settings.control_plane_addr) as ingestion:
        reasons = sorted({r.reason.split(":")[0] for r in ingestion.list_quarantined(view=STREAM_VIEW)})
    total = tuple(b + s for b, s in zip(batch, streamed, strict=True))
    say(
        f"[2/8] ingested {total[0]} records: {total[1]} accepted, {total[2]} quarantined "
        f"(batch weather+calendar {batch[0]}/{batch[1]}/{batch[2]}; "
        f"stream bookings {streamed[0]}/{streamed[1]}/{streamed[2]}, {len(bad)} deliberately bad)"
    )
    return Ingested(total[0], total[1], total[2], reasons)
