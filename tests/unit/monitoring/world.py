"""The monitor tests' world: monitors ("processes") over one real redis-server stream, a real database and
an artifact store, and the entries the data plane's writer logs (shared by ``test_monitor_faults`` and
``test_monitor_bounds``; the ``world`` fixture is in ``conftest.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import read_session
from control_plane.monitoring.config import put_config
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.monitoring.gauges import gauges_for
from control_plane.monitoring.monitor import Monitor
from control_plane.monitoring.profiles import ReferenceCache
from control_plane.monitoring.reports import query_reports
from control_plane.monitoring.settings import MonitoringSettings
from control_plane.monitoring.tables import PredictionIndexRow
from data_plane.prediction_log import PredictionRecord

STREAM = "test:monitor-faults"
SETTINGS = MonitoringSettings(stream=STREAM, time_window_grace_s=0.0)
T0 = 1_800_000_000_000_000


def entry(
    i: int, request_id: str | None = None, ts_us: int | None = None, width: int = 3
) -> dict[bytes, bytes]:
    """The fields the data plane's writer logs for request ``i``: one row of 3 features (or ``width``),
    one score, predicted at ``T0 + i`` (or ``ts_us``)."""
    features = np.array([[float(i % 7), 1.0, -float(i % 3)] + [0.0] * (width - 3)], dtype=np.float32)
    item = PredictionRecord(
        request_id=request_id or f"r{i}",
        deployment="churn",
        model="churn-model",
        version=1,
        variant="primary",
        role="served",
        routing_key="",
        ts_us=T0 + i if ts_us is None else ts_us,
        entities=[{"id": str(i)}],
        features=features,
        outputs={"score": np.array([[0.25]], dtype=np.float32)},
    )
    return fields_of(item)


def fields_of(item: PredictionRecord) -> dict[bytes, bytes]:
    """The fields the data plane's writer sends for ``item`` (its RESP bulk strings, name then value)."""
    bulks = []
    for bulk in item.fields():
        header, _, rest = bulk.partition(b"\r\n")
        bulks.append(rest[: int(header[1:])])
    return dict(zip(bulks[::2], bulks[1::2], strict=True))


class World:
    """Monitors ("processes") over one stream, database and artifact store; each has its own gauges."""

    def __init__(self, sessions: sessionmaker[Session], store: ArtifactStore, redis_url: str) -> None:
        self.sessions = sessions
        self.store = store
        self.redis_url = redis_url
        self.log = redis.Redis.from_url(redis_url)
        self.registry = CollectorRegistry()
        self.now = T0 / 1e6
        self._clients: list[redis.asyncio.Redis] = []

    def client(self) -> redis.asyncio.Redis:
        """A Redis client for a monitor, closed with the world."""
        client = redis.asyncio.Redis.from_url(self.redis_url)
        self._clients.append(client)
        return client

    def monitor(self) -> Monitor:
        """A monitor as a freshly (re)started control plane has it."""
        self.registry = CollectorRegistry()
        return Monitor(
            self.sessions,
            ReferenceCache(self.sessions, self.store, ttl_s=0.0),
            self.client(),
            SETTINGS,
            gauges=gauges_for(self.registry),
            clock=lambda: self.now,
        )

    def add(self, *entries: dict[bytes, bytes]) -> None:
        for fields in entries:
            self.log.xadd(STREAM, fields)  # type: ignore[arg-type]

    def entries(self, outcome: str) -> float:
        return self.registry.get_sample_value("aether_monitor_entries_total", {"outcome": outcome}) or 0.0

    def dropped(self, reason: str) -> float:
        labels = {"deployment": "churn", "reason": reason}
        return self.registry.get_sample_value("aether_monitor_rows_dropped_total", labels) or 0.0

    def windows(self, outcome: str) -> float:
        return self.registry.get_sample_value("aether_monitor_windows_total", {"outcome": outcome}) or 0.0

    def indexed(self) -> list[str]:
        with read_session(self.sessions) as session:
            return sorted(session.scalars(select(PredictionIndexRow.request_id)).all())

    def index_rows(self) -> int:
        with read_session(self.sessions) as session:
            return int(session.scalar(select(func.count()).select_from(PredictionIndexRow)) or 0)

    def pending(self) -> int:
        info: Any = self.log.xpending(STREAM, SETTINGS.group)
        return int(info["pending"])

    def reports(self) -> list[pb.DriftReport]:
        return query_reports(self.sessions, "churn")

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        self.log.close()


def configure(sessions: sessionmaker[Session], **fields: Any) -> None:
    put_config(sessions, pb.MonitorConfig(deployment="churn", **fields), actor="test")


HOUR_US = 3600 * 1_000_000
#: The start of an hour's quality window that is complete well before ``T0`` (now).
COMPLETE_WINDOW_START_US = (T0 // HOUR_US - 3) * HOUR_US


def classify(sessions: sessionmaker[Session], alert_threshold: float) -> None:
    """Deployment "zzz" monitored as a classifier: ``alert_threshold`` on accuracy, 10 labels a window."""
    config = pb.MonitorConfig(
        deployment="zzz", task=pb.TASK_TYPE_CLASSIFICATION, alert_threshold=alert_threshold, min_labels=10
    )
    put_config(sessions, config, actor="test")


def predicted(
    sessions: sessionmaker[Session], prefix: str, start_us: int, output: float, labels: Sequence[int]
) -> None:
    """One prediction of "zzz" (model m v1) per label from ``start_us`` on, each answering ``output``
    (request ids ``prefix`` + index), and its label recorded."""
    usable = math.isfinite(output)
    rows = [
        IndexedPrediction(f"{prefix}{i}", 0, "zzz", "m", 1, "primary", start_us + i, [output], usable)
        for i in range(len(labels))
    ]
    index_predictions(sessions, rows)
    record_feedback(
        sessions, [pb.Feedback(request_id=r.request_id, label=y) for r, y in zip(rows, labels, strict=True)]
    )
