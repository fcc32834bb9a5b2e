"""The labelled production holdout: the deployment's predictions of the recent feedback window that have
a label, with the feature rows the model saw.

Labels and their (request id, row) come from the monitor's join of the deployment's predictions with
their labels (``prediction_index`` ⋈ ``feedback``, ``control_plane.monitoring.feedback.with_labels``).
That index keeps predictions, not features, so the feature rows are read back from the prediction log
stream itself (``XRANGE``, read-only: the monitor's consumer group is untouched) — only *sampled* served
entries carry features, and only entries the stream still retains (``MAXLEN``) can be used. Rows found
in both form the holdout (``source = "production_feedback"``); labelled rows whose entry was not sampled
or is gone are left out and counted. A label joins the prediction the index holds for its request id and
row, the first the monitor read: another entry logged under the same request id (a client re-using its
ids) is not that prediction, and its features are not the label's; the entry taken is the one whose
prediction time is the indexed one's (the first such), the others' rows counted in
``duplicate_request_ids``.
Read by request id alone, the last entry of the id won, and the label was paired with the features of a
prediction it never judged.

An entry's features carry no names: they are its version's ``feature_refs`` in order (``refs_of`` looks
them up, once per logging version). The holdout's columns are those of the newest entry read, named by
its version's refs (:attr:`.evaluation.Holdout.feature_refs`); rows another version logged are put in
that order by name (:func:`.inputs.logged_columns`), and rows that do not carry every one of those columns
(a schema change inside the window; a version gone from the registry) are left out and counted. Mixed by
width alone, a canary listing the same refs in another order mixed its rows into the champion's columns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
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
from control_plane.retraining.inputs import logged_columns

SOURCE = "production_feedback"
_PAGE = 1000
#: Stream ids are set when the data plane appends, shortly after the prediction's own time.
_APPEND_SLACK_MS = 60_000


@dataclass(frozen=True)
class ProductionHoldout:
    holdout: Holdout
    labelled: int  # labelled predictions in the window
    missing_features: int  # of those, without a retained sampled entry
    other_columns: int = 0  # of those, logged without every one of the holdout's columns
    #: Rows (not entries: an entry of several rows counts each) logged under a labelled request id and row
    #: that are not its indexed prediction (another prediction under the same id).
    duplicate_request_ids: int = 0


#: ``(model, version)`` → the version's ``feature_refs``, in order; None when the version is gone.
RefsOf = Callable[[str, int], Sequence[str] | None]


@dataclass(frozen=True)
class IndexedLabel:
    label: float
    ts_us: int  # the prediction time of the indexed prediction the label joined


def labels_of(
    sessions: sessionmaker[Session], deployment: str, since_us: int, until_us: int
) -> dict[tuple[str, int], IndexedLabel]:
    with read_session(sessions) as session:
        rows = session.execute(
            with_labels(
                PredictionIndexRow.request_id, PredictionIndexRow.row, PredictionIndexRow.ts_us
            ).where(
                PredictionIndexRow.deployment == deployment,
                PredictionIndexRow.ts_us >= since_us,
                PredictionIndexRow.ts_us < until_us,
            )
        ).all()
    return {(str(r[0]), int(r[1])): IndexedLabel(float(r.label), int(r[2])) for r in rows}


async def production_holdout(
    sessions: sessionmaker[Session],
    client: redis.asyncio.Redis,
    stream: str,
    deployment: str,
    since_us: int,
    until_us: int,
    refs_of: RefsOf,
) -> ProductionHoldout:
    labels = labels_of(sessions, deployment, since_us, until_us)
    wanted = {request_id for request_id, _ in labels}
    features: dict[tuple[str, int], np.ndarray[Any, np.dtype[np.float64]]] = {}
    logged_by: dict[tuple[str, int], tuple[str, int]] = {}  # row -> the (model, version) that logged it
    duplicates = 0
    # The (model, version) and width of the newest entry read (XRANGE reads oldest first).
    newest: tuple[str, int, int] | None = None
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
                key = (entry.request_id, row)
                if key not in labels:
                    continue
                if key in features or entry.ts_us != labels[key].ts_us:
                    duplicates += 1  # another prediction under the labelled request id (module doc)
                    continue
                features[key] = entry.features[row]
                logged_by[key] = (entry.model, entry.version)
                newest = (entry.model, entry.version, entry.features.shape[1])
        if len(raw) < _PAGE:
            break
        start = "(" + raw[-1][0].decode()
    versions = set(logged_by.values())
    refs = {v: await asyncio.to_thread(refs_of, *v) for v in versions}
    keys, names = _in_newest_columns(features, logged_by, refs, newest)
    matrix = np.stack([features[k] for k in keys]) if keys else np.zeros((0, 0))
    holdout = Holdout(matrix, np.array([labels[k].label for k in keys], dtype=np.float64), SOURCE, names)
    return ProductionHoldout(
        holdout, len(labels), len(labels) - len(features), len(features) - len(keys), duplicates
    )


def _in_newest_columns(
    features: dict[tuple[str, int], np.ndarray[Any, np.dtype[np.float64]]],
    logged_by: dict[tuple[str, int], tuple[str, int]],
    refs: dict[tuple[str, int], Sequence[str] | None],
    newest: tuple[str, int, int] | None,
) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """The rows that carry every column of the newest entry's version, each put (in place) in that
    version's column order, and those columns' names. Newest by stream order: the largest (request id,
    row) key was an arbitrary one, so after a schema change the challenger could be judged on the old
    schema's rows."""
    if newest is None:
        return [], ()
    model, version, width = newest
    newest_refs = refs[(model, version)]
    if newest_refs is None:
        return [], ()
    names = tuple(newest_refs)
    picks: dict[tuple[tuple[str, int], int], tuple[int, ...] | None] = {}
    keys = []
    for key in sorted(features):
        by, row_width = logged_by[key], features[key].shape[0]
        if (by, row_width) not in picks:
            logged = refs[by]
            if logged is None:  # the version is gone: its columns cannot be named
                picks[(by, row_width)] = None
            elif names:
                picks[(by, row_width)] = logged_columns(names, logged, row_width)
            else:  # the newest columns have no names: rows of their width, by position
                picks[(by, row_width)] = tuple(range(width)) if row_width == width else None
        picked = picks[(by, row_width)]
        if picked is not None:
            features[key] = features[key][list(picked)]
            keys.append(key)
    return keys, names
