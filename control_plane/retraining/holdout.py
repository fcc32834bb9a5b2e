"""The labelled production holdout: the deployment's predictions of the recent feedback window that have
a label, with the feature rows the model saw.

Labels and their (request id, row) come from the monitor's join of the deployment's predictions with
their labels (``prediction_index`` ⋈ ``feedback``, ``control_plane.monitoring.feedback.with_labels``).
That index keeps predictions, not features, so the feature rows are read back from the prediction log
stream itself (``XRANGE``, read-only: the monitor's consumer group is untouched) — only *sampled* served
entries carry features, and only entries the stream still retains (``MAXLEN``) can be used. Rows found
in both form the holdout (``source = "production_feedback"``); labelled rows whose entry was not sampled
or is gone are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import read_session
from control_plane.monitoring.entries import MalformedEntry, decode_entry
from control_plane.monitoring.feedback import with_labels
from control_plane.monitoring.tables import PredictionIndexRow
from control_plane.retraining.evaluation import Holdout

SOURCE = "production_feedback"
_PAGE = 1000
#: Stream ids are set when the data plane appends, shortly after the prediction's own time.
_APPEND_SLACK_MS = 60_000


@dataclass(frozen=True)
class ProductionHoldout:
    holdout: Holdout
    labelled: int  # labelled predictions in the window
    missing_features: int  # of those, without a retained sampled entry


def labels_of(
    sessions: sessionmaker[Session], deployment: str, since_us: int, until_us: int
) -> dict[tuple[str, int], float]:
    with read_session(sessions) as session:
        rows = session.execute(
            with_labels(PredictionIndexRow.request_id, PredictionIndexRow.row).where(
                PredictionIndexRow.deployment == deployment,
                PredictionIndexRow.ts_us >= since_us,
                PredictionIndexRow.ts_us < until_us,
            )
        ).all()
    return {(str(r[0]), int(r[1])): float(r[2]) for r in rows}


async def production_holdout(
    sessions: sessionmaker[Session],
    client: redis.asyncio.Redis,
    stream: str,
    deployment: str,
    since_us: int,
    until_us: int,
) -> ProductionHoldout:
    labels = labels_of(sessions, deployment, since_us, until_us)
    wanted = {request_id for request_id, _ in labels}
    features: dict[tuple[str, int], np.ndarray[Any, np.dtype[np.float64]]] = {}
    newest_width = 0  # feature count of the newest entry read (XRANGE reads oldest first)
    start = f"{since_us // 1000}"
    end_ms = until_us // 1000 + _APPEND_SLACK_MS
    while wanted:
        raw: Any = await client.xrange(stream, min=start, max=f"{end_ms}", count=_PAGE)
        if not raw:
            break
        for _entry_id, fields in raw:
            try:
                entry = decode_entry(fields)
            except MalformedEntry:
                continue
            if entry is None or entry.deployment != deployment or entry.features is None:
                continue
            if entry.request_id not in wanted:
                continue
            for row in range(entry.features.shape[0]):
                if (entry.request_id, row) in labels:
                    features[(entry.request_id, row)] = entry.features[row]
                    newest_width = entry.features.shape[1]
        if len(raw) < _PAGE:
            break
        start = "(" + raw[-1][0].decode()
    keys = sorted(features)
    width = {row.shape[0] for row in features.values()}
    if len(width) > 1:  # a schema change inside the window: keep the newest width's rows only
        # Newest by stream order: the largest (request id, row) key was an arbitrary one, so after a
        # schema change the challenger could be judged on the old schema's rows.
        keys = [k for k in keys if features[k].shape[0] == newest_width]
    matrix = np.stack([features[k] for k in keys]) if keys else np.zeros((0, 0))
    holdout = Holdout(matrix, np.array([labels[k] for k in keys], dtype=np.float64), SOURCE)
    return ProductionHoldout(holdout, len(labels), len(labels) - len(keys))
