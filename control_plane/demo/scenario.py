"""The demo scenario, step by step, against a real local stack (redis-server, control plane and data
plane as separate processes, on embedded defaults: a SQLite file and local folders).

What it runs today — the stages that exist so far, each for real:

1. start the stack on free loopback ports in a scratch ``AETHER_HOME``;
2. register the scenario's entity and feature views from ``features.yaml`` (a second apply shows the
   registry is idempotent);
3. write synthetic values for every zone into the online store with the registry's schema fingerprints;
4. read them back through the data plane's ``GetOnlineFeatures`` over gRPC, check each value equals what
   was written, and measure the round-trip latency;
5. print a summary and stop the stack.

Later stages of the full loop (streaming ingestion with quarantine, training sets, training, serving,
drift and retraining) join as they are built.
"""

from __future__ import annotations

import dataclasses
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.sdk.online import OnlineFeaturesClient
from clients.sdk.registry import FeatureRegistryClient
from clients.value_types import numpy_dtype_name
from control_plane.cli.dev import start_stack, stop_stack
from control_plane.cli.settings import CliSettings
from control_plane.features.definitions import load_definitions
from control_plane.features.online_writer import OnlineViewVersion, OnlineWriter

DEFINITIONS = Path(__file__).with_name("features.yaml")
SIZES = {"small": 200, "medium": 5_000}


@dataclass
class DemoReport:
    zones: int
    views_registered: int
    second_apply_changes: int
    values_written: int
    values_checked: int
    mismatches: int
    latency_ms: dict[str, float]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_settings(home: Path | None) -> CliSettings:
    """A stack of its own: a scratch home (or the given one) and free ports, so the demo never collides
    with a running ``aetherctl dev`` stack."""
    root = home or Path(tempfile.mkdtemp(prefix="aether-demo-"))
    return CliSettings(
        home=root,
        db_url=f"sqlite:///{root / 'aether.db'}",
        redis_url=f"redis://127.0.0.1:{_free_port()}/0",
        control_plane_addr=f"127.0.0.1:{_free_port()}",
        data_plane_addr=f"127.0.0.1:{_free_port()}",
    )


def online_view(view: pb.FeatureView, entity: str) -> OnlineViewVersion:
    return OnlineViewVersion(
        name=view.spec.name,
        version=view.version,
        entity=entity,
        columns=tuple((f.name, numpy_dtype_name(f.value_type)) for f in view.spec.features),
        fingerprint=view.schema_fingerprint,
        ttl_seconds=view.spec.ttl_seconds,
    )


def run_demo(size: str, home: Path | None, say: Callable[[str], None]) -> DemoReport:
    zones = SIZES[size]
    settings = demo_settings(home)
    say(f"[1/5] starting redis-server, control plane and data plane in {settings.home}")
    start_stack(settings)
    try:
        return _scenario(settings, zones, say)
    finally:
        say("[5/5] stopping the stack")
        stop_stack(settings)


def _scenario(settings: CliSettings, zones: int, say: Callable[[str], None]) -> DemoReport:
    definitions = load_definitions(DEFINITIONS)
    with FeatureRegistryClient(settings.control_plane_addr) as registry:
        plan = registry.apply_request(definitions.request)
        say(f"[2/5] registered {', '.join(f'{s.kind} {s.name}' for s in plan.steps)}")
        again = registry.apply_request(definitions.request)
        changes = sum(1 for s in again.steps if s.action != pb.NO_CHANGE)
        say(f"      applying the same file again changes {changes} objects (idempotent)")
        views = [registry.get_feature_view(v.spec.name) for v in definitions.request.views]

    rng = np.random.default_rng(7)
    keys = [[str(zone)] for zone in range(zones)]
    now_us = time.time_ns() // 1000
    client = redis.Redis.from_url(settings.redis_url)
    written: dict[str, np.ndarray] = {}
    try:
        writer = OnlineWriter(client)
        for view in views:
            layout = online_view(view, view.spec.entity).layout
            columns = [rng.uniform(0, 50, zones) for _ in view.spec.features]
            if layout.names is None:  # one dtype: a [zones, features] array
                values = np.stack(columns, axis=1).astype(layout)
            else:  # mixed dtypes: one packed record per zone
                values = np.zeros(zones, dtype=layout)
                for name, column in zip(layout.names, columns, strict=True):
                    values[name] = column
            writer.write(online_view(view, view.spec.entity), keys, values, now_us)
            written[view.spec.name] = values
    finally:
        client.close()
    say(f"[3/5] wrote {zones} zones x {len(views)} views into the online store (one packed blob each)")

    refs = [v.spec.name for v in views]
    checked = mismatches = 0
    latencies: list[float] = []
    with OnlineFeaturesClient(settings.data_plane_addr) as online:
        for zone in range(zones):
            started = time.perf_counter()
            result = online.get_online_features(refs, [{"zone_id": str(zone)}])
            latencies.append((time.perf_counter() - started) * 1000)
            for view in views:
                block = result.block(view.spec.name)
                expected = written[view.spec.name][zone]
                for i, feature in enumerate(view.spec.features):
                    want = expected[i] if not expected.dtype.names else expected[expected.dtype.names[i]]
                    checked += 1
                    if block.values[feature.name][0] != want or block.status(feature.name)[0] != 0:
                        mismatches += 1
    quantiles = statistics.quantiles(latencies, n=100)
    latency = {"p50": quantiles[49], "p99": quantiles[98], "max": max(latencies)}
    say(
        f"[4/5] read every zone back through the data plane over gRPC: {checked} values, "
        f"{mismatches} mismatches; p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms"
    )
    return DemoReport(
        zones=zones,
        views_registered=len(views),
        second_apply_changes=changes,
        values_written=zones * sum(len(v.spec.features) for v in views),
        values_checked=checked,
        mismatches=mismatches,
        latency_ms=latency,
    )


def report_rows(report: DemoReport) -> list[tuple[str, str]]:
    data = dataclasses.asdict(report)
    latency = data.pop("latency_ms")
    rows = [(key.replace("_", " "), str(value)) for key, value in data.items()]
    rows += [(f"gRPC read latency {k}", f"{v:.3f} ms") for k, v in latency.items()]
    return rows
