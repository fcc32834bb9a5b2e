"""Point-in-time training sets: ``get_historical_features(entity rows, feature refs)``.

For each entity row (join keys + a label timestamp) and each requested feature: the value of the latest
stored row of that entity with event time <= the label time (never later; a label time with nanoseconds
is floored to the microsecond, the unit event times are stored in), null when there is none or when it is
older than the view's TTL; ties on event time go to the latest ingestion (see ``kernels/asof_join.py``
for the exact rules). Many views and versions in one call: the label rows are
indexed once per entity and shared by every view of it. The result keeps the entity rows, in their
original order and with every original column, and adds one column per feature named after its
reference (``view:feature`` or ``view@2:feature``), grouped by view version: the versions in order of
their first reference, each one's columns in reference order (``["a:x", "b:y", "a:z"]`` gives ``a:x``,
``a:z``, ``b:y``). The order is part of the dataset hash.

Every training set gets a content hash (``datasets.content_hash``) and, unless told otherwise, a lineage
record in the offline root (``_datasets/<hash>.json``: the references, the resolved view versions with
the offline-store folder and the data files each was read from, a hash and row count of the entity rows,
and the creation time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from clients.errors import FailedPrecondition, InvalidArgument
from clients.files import unwritable_reason
from clients.uris import redact_text, redact_uri
from control_plane.offline.datasets import (
    check_parquet_columns,
    content_hash,
    record_dataset,
    utc_now_iso,
    write_parquet,
)
from control_plane.offline.keys import KeyEncoder
from control_plane.offline.pit import DEFAULT_BOUNDS, Int64Array, JoinBounds, Labels, join_view
from control_plane.offline.resolve import JoinKeySpec, ViewCatalog, ViewPlan, plan_views
from control_plane.offline.roots import open_filesystem
from control_plane.offline.store import OfflineStore, normalize_timestamps
from kernels.asof_join import index_labels

DEFAULT_TIMESTAMP_COLUMNS = ("event_ts", "timestamp", "label_ts", "ts")
DEFAULT_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class TrainingSet:
    table: pa.Table
    dataset_hash: str
    #: Result column -> how many rows got a value.
    matched: dict[str, int] = field(default_factory=dict)
    #: Where the Parquet copy was written, when one was asked for: a local path, or the URI given
    #: without its credentials.
    output_path: str | None = None

    @property
    def row_count(self) -> int:
        return int(self.table.num_rows)

    def matched_fraction(self, column: str) -> float:
        return self.matched[column] / self.row_count if self.row_count else 0.0


def get_historical_features(
    store: OfflineStore,
    catalog: ViewCatalog,
    entity_rows: pa.Table,
    features: Sequence[str],
    *,
    timestamp_column: str | None = None,
    output_path: str | None = None,
    record: bool = True,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    bounds: JoinBounds = DEFAULT_BOUNDS,
) -> TrainingSet:
    """The training set for ``entity_rows`` (module doc). ``timestamp_column`` names the label time; by
    default the first of :data:`DEFAULT_TIMESTAMP_COLUMNS` present, else the only timestamp column.
    ``output_path`` (a local path or pyarrow filesystem URI) also writes the result as Parquet.
    ``batch_rows`` and ``bounds`` bound the rows read and held at once (speed, never the answer).

    INVALID_ARGUMENT: a malformed reference, a missing join key or timestamp column (named), two columns of
    one name, naive or null timestamps or ones beyond the microsecond range, a join key value beyond the
    entity's key type, a result column that clashes with an entity-row column, with ``output_path`` an
    entity-row column Parquet cannot hold (a union). NOT_FOUND: an unknown view, version or feature.
    Writing the copy: FAILED_PRECONDITION or UNAVAILABLE, the filesystem's error (:func:`_write_output`)."""
    plans = plan_views(catalog, features)
    if output_path:
        _check_output(output_path, entity_rows.schema)
    _refuse_repeated_columns(entity_rows)
    ts_name = _timestamp_column(entity_rows, timestamp_column)
    label_ts = _label_micros(entity_rows, ts_name)
    _refuse_clashes(entity_rows, plans)

    # Labels are prepared once per join keys, names *and* types: two entities may share a key name with
    # different types, and the codes of one would be used to read the other's files.
    shared: dict[tuple[JoinKeySpec, ...], Labels] = {}
    columns: dict[str, pa.Array] = {}
    read: dict[tuple[str, int], list[str]] = {}  # data files each view version's join read
    for plan in plans:
        labels = shared.get(plan.join_keys)
        if labels is None:
            labels = _prepare_labels(entity_rows, plan, label_ts)
            shared[plan.join_keys] = labels
        joined, read[plan.view, plan.version] = join_view(store, plan, labels, batch_rows, bounds)
        columns.update(joined)

    table = entity_rows
    for plan in plans:
        for column in plan.columns:
            table = table.append_column(pa.field(column.name, column.dtype), columns[column.name])
    dataset_hash = content_hash(table)
    matched = {name: len(values) - values.null_count for name, values in columns.items()}
    written = _write_output(table, output_path, dataset_hash) if output_path else None
    if record:
        record_dataset(
            store,
            dataset_hash,
            {
                "created_at": utc_now_iso(),
                "features": list(features),
                # Where each view's data was read from and which files of it: the lineage of the rows,
                # which the view's registered source (where ingestion reads) does not tell.
                "views": [
                    {
                        "view": p.view,
                        "version": p.version,
                        "columns": [c.name for c in p.columns],
                        "location": f"{redact_uri(str(store.root)).rstrip('/')}/{p.view}/v{p.version}",
                        "files": [_relative(store, f) for f in read[p.view, p.version]],
                    }
                    for p in plans
                ],
                "entity_rows": {
                    "sha256": content_hash(entity_rows),
                    "row_count": entity_rows.num_rows,
                    "timestamp_column": ts_name,
                },
                "row_count": table.num_rows,
                "matched": matched,
                "output_path": written,
            },
        )
    return TrainingSet(table, dataset_hash, matched, written)


def _relative(store: OfflineStore, path: str) -> str:
    """A data file's path under the offline root (``view/v2/date=.../x.parquet``)."""
    return path.removeprefix(f"{store.base_path.rstrip('/')}/")


def _check_output(output_path: str, entity_schema: pa.Schema) -> None:
    # Before the join, which may take minutes: its result would be lost to a path that cannot be written,
    # or to an entity-row column Parquet cannot hold (the feature columns' types always can be).
    open_filesystem(output_path)  # a URI pyarrow refuses is INVALID_ARGUMENT, its credentials unshown
    reason = unwritable_reason(output_path)
    if reason is not None:
        raise InvalidArgument(f"cannot write the training set to {output_path!r}: {reason}")
    try:
        check_parquet_columns(entity_schema)
    except InvalidArgument as refused:
        raise InvalidArgument(
            f"cannot write the training set to {redact_uri(output_path)!r}: the entity rows' {refused}"
        ) from None


def _write_output(table: pa.Table, output_path: str, dataset_hash: str) -> str:
    """Writes the copy (``write_parquet``: whole or not at all, the previous copy kept when it fails). A
    column Parquet cannot hold is INVALID_ARGUMENT naming it (the caller's data; checked before the
    join too); the filesystem's OSError, FAILED_PRECONDITION."""
    try:
        return write_parquet(table, output_path)
    except InvalidArgument as refused:
        raise InvalidArgument(
            f"cannot write the training set to {redact_uri(output_path)!r}: {refused}; it was built (dataset"
            f" {dataset_hash}) but neither written nor recorded"
        ) from None
    except OSError as error:  # the path changed since _check_output, the disk filled, a remote store failed
        reason = redact_text(error.strerror or str(error), output_path)
        raise FailedPrecondition(
            f"cannot write the training set to {redact_uri(output_path)!r}: {reason}; it was built (dataset"
            f" {dataset_hash}) but neither written nor recorded: run again with another output_path"
        ) from None


def _timestamp_column(rows: pa.Table, requested: str | None) -> str:
    if requested:
        if requested not in rows.column_names:
            raise InvalidArgument(f"entity rows lack the timestamp column {requested!r}")
        return requested
    for name in DEFAULT_TIMESTAMP_COLUMNS:
        if name in rows.column_names:
            return name
    candidates = [f.name for f in rows.schema if pa.types.is_timestamp(f.type)]
    if len(candidates) == 1:
        return str(candidates[0])
    raise InvalidArgument(
        "entity rows need a timestamp column: name it with timestamp_column or call it one of "
        f"{', '.join(DEFAULT_TIMESTAMP_COLUMNS)} (timestamp columns found: {', '.join(candidates) or 'none'})"
    )


def _label_micros(rows: pa.Table, name: str) -> Int64Array:
    # Label times with nanoseconds (pandas' unit) are floored to the microsecond, the unit event times are
    # stored in (normalize_timestamps): a label at t then joins rows at or before floor(t) <= t, so
    # flooring can never admit a future row, and it loses none, as no microsecond event time lies in
    # (floor(t), t].
    column = normalize_timestamps(rows.select([name]), [name]).column(0)
    if column.null_count:
        raise InvalidArgument(f"timestamp column {name!r} holds {column.null_count} null(s)")
    return np.ascontiguousarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _refuse_repeated_columns(rows: pa.Table) -> None:
    # Columns are found by name (join keys, the label time): with two of one name, which one is meant?
    seen: set[str] = set()
    for name in rows.column_names:
        if name in seen:
            raise InvalidArgument(f"entity rows have more than one column named {name!r}")
        seen.add(name)


def _refuse_clashes(rows: pa.Table, plans: list[ViewPlan]) -> None:
    existing = set(rows.column_names)
    for plan in plans:
        for column in plan.columns:
            if column.name in existing:
                raise InvalidArgument(f"entity rows already have a column named {column.name!r}")


def _prepare_labels(rows: pa.Table, plan: ViewPlan, label_ts: Int64Array) -> Labels:
    missing = [key.name for key in plan.join_keys if key.name not in rows.column_names]
    if missing:
        raise InvalidArgument(
            f"entity rows lack join key column(s) {', '.join(map(repr, missing))} of entity {plan.entity!r} "
            f"(needed by feature view {plan.view!r})"
        )
    encoder = KeyEncoder(plan.join_keys, [rows.column(key.name) for key in plan.join_keys])
    index = index_labels(encoder.label_codes, label_ts)
    ts_min = int(label_ts.min()) if label_ts.size else 0
    ts_max = int(label_ts.max()) if label_ts.size else 0
    return Labels(encoder, index, ts_min, ts_max)
