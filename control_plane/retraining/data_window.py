"""Validation of the latest data window before a retraining trains on it.

The window is what the resubmitted job will read: for every feature view its spec references, the view's
offline rows with ``event_ts`` in the last ``data_window_seconds``, checked again with the ingestion
validator (:func:`control_plane.ingestion.validation.validate`) against the view's *current* schema and
rules (rules may have been tightened since the rows were written) — as stored, so a streaming view's rows
are checked as the aggregates they are, not as raw events (ingestion enforces their rules on each event,
``control_plane/features/aggregated_rules.py``, so aggregates built under the current rules pass); and,
when the trigger config names
one, the entity rows file (it must exist, hold rows and carry the label column without nulls).

The window passes when every view holds at least ``min_rows`` rows in the window and at most
``max_rejected_fraction`` of them are rejected. Otherwise the reasons say which view, how many rows and
the first rejection reasons — the alert and the decision carry them. The rows are read as training sets
read them (``offline_features.reader_store``): a view version whose folder is gone while ingestion
counted rows into it, or a file that cannot be read, is a reason too (FAILED_PRECONDITION of the store),
never a window read as holding fewer rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clients.aether.v1 import jobs_pb2
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import AetherError, FailedPrecondition
from control_plane.ingestion.validation import timestamp_field, validate
from control_plane.offline.resolve import ViewCatalog, plan_views
from control_plane.offline.server_paths import confined
from control_plane.offline.store import INGESTED_TS, OfflineStore

MAX_REASONS_SHOWN = 3


@dataclass(frozen=True)
class WindowCheck:
    passed: bool
    reasons: tuple[str, ...]
    rows: int


def feature_refs(spec: jobs_pb2.JobSpec) -> list[str]:
    refs = list(spec.features)
    if spec.dataset.WhichOneof("source") == "point_in_time":
        refs += [r for r in spec.dataset.point_in_time.features if r not in refs]
    return refs


def check_window(
    config: pb.TriggerConfig,
    spec: jobs_pb2.JobSpec,
    catalog: ViewCatalog,
    offline: OfflineStore,
    now: dt.datetime,
    datasets_root: str | None = None,
) -> WindowCheck:
    """Validates the offline rows of the data window and the config's entity rows file (read as the
    training job's GetHistoricalFeatures call will: under ``datasets_root`` when given)."""
    problems: list[str] = []
    notes: list[str] = []
    total = 0
    start = now - dt.timedelta(seconds=config.data_window_seconds)
    refs = feature_refs(spec)
    try:
        plans = plan_views(catalog, refs) if refs else []
    except AetherError as exc:
        return WindowCheck(False, (f"feature references of the training spec: {exc}",), 0)
    for plan in plans:
        view = catalog.get_feature_view(plan.view, plan.version)
        entity = catalog.get_entity(view.spec.entity)
        name = f"{plan.view}@{plan.version}"
        try:
            batches = list(offline.scan(plan.view, plan.version, start, now))
        except FailedPrecondition as exc:
            # The store refused for a fault of its setup or files (a view version's folder lost while
            # rows were counted into it, a damaged file): a reason of the blocked retraining, which an
            # operator must fix. A transient failure (UNAVAILABLE) is raised: the next tick tries again.
            problems.append(f"{name}: {exc.message}")
            continue
        table = pa.Table.from_batches(batches) if batches else None
        rows = table.num_rows if table is not None else 0
        total += rows
        if table is None or rows < config.min_rows:
            problems.append(
                f"{name}: {rows} rows in the last {config.data_window_seconds:g} s, need {config.min_rows}"
            )
            continue
        if INGESTED_TS in table.column_names:  # the store's bookkeeping, not part of the record
            table = table.drop_columns([INGESTED_TS])
        ts_name = timestamp_field(view)
        if ts_name != "event_ts" and "event_ts" in table.column_names:
            table = table.rename_columns([ts_name if c == "event_ts" else c for c in table.column_names])
        # No key length limit: the rows were accepted under the limit of their day (key_length.py).
        result = validate(view, entity, table, now=now, stored=True, max_key_bytes=None)
        rejected = result.rejected.num_rows
        fraction = rejected / rows
        if fraction > config.max_rejected_fraction:
            shown = "; ".join(result.rejected.column("reason").to_pylist()[:MAX_REASONS_SHOWN])
            problems.append(
                f"{name}: {rejected} of {rows} rows invalid "
                f"({fraction:.1%} > {config.max_rejected_fraction:.1%}):"
                f" {shown}"
            )
        else:
            notes.append(f"{name}: {rows} rows, {rejected} invalid")
    if config.entity_rows_path:
        problems += _entity_rows_problems(config, spec, datasets_root)
    if not plans and not config.entity_rows_path:
        notes.append("the training spec references no feature views: nothing to validate")
    return WindowCheck(not problems, tuple(problems or notes), total)


def _entity_rows_problems(
    config: pb.TriggerConfig, spec: jobs_pb2.JobSpec, datasets_root: str | None
) -> list[str]:
    path = config.entity_rows_path
    where = path
    if datasets_root is not None:
        try:
            where = confined(path, datasets_root, "entity_rows_path")
        except AetherError as exc:
            return [exc.message]
    if "://" not in where and not Path(where).is_file():
        return [f"entity rows file {path!r} not found"]
    try:
        table = pq.read_table(where)
    except (OSError, pa.ArrowInvalid) as exc:
        return [f"entity rows file {path!r} cannot be read: {exc}"]
    problems = []
    if table.num_rows < config.min_rows:
        problems.append(f"entity rows file {path!r}: {table.num_rows} rows, need {config.min_rows}")
    label = (
        spec.hyperparameters.fields["label"].string_value if "label" in spec.hyperparameters.fields else ""
    )
    if label:
        if label not in table.column_names:
            problems.append(f"entity rows file {path!r} has no label column {label!r}")
        else:
            nulls = int(pc.sum(pc.is_null(table.column(label), nan_is_null=True)).as_py() or 0)
            if nulls:
                problems.append(f"entity rows file {path!r}: {nulls} rows without a label in {label!r}")
    return problems
