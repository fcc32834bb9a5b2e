"""From validated rows to online-store writes: the registered layout of a view version, the latest row
per entity, and join-key values as the text the online key layout wants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.value_types import numpy_dtype_name
from control_plane.features.online_writer import OnlineViewVersion, OnlineWriter
from kernels.online_keys import online_key
from kernels.packed_blob import BlobError, read_header


def online_view_version(view: pb.FeatureView) -> OnlineViewVersion:
    """The writer's description of a registered view version; the fingerprint is the registry's."""
    return OnlineViewVersion(
        name=view.spec.name,
        version=view.version,
        entity=view.spec.entity,
        columns=tuple((f.name, numpy_dtype_name(f.value_type)) for f in view.spec.features),
        fingerprint=view.schema_fingerprint,
        ttl_seconds=view.spec.ttl_seconds,
    )


def key_texts(table: pa.Table, key_names: Sequence[str]) -> list[tuple[str, ...]]:
    """Each row's join-key values as text (integers in canonical decimal), in key order."""
    columns = [table.column(name).cast(pa.string()).to_pylist() for name in key_names]
    return list(zip(*columns, strict=True)) if columns else []


def latest_per_entity(table: pa.Table, key_names: Sequence[str]) -> pa.Table:
    """One row per entity: the one with the greatest ``event_ts`` (a later row wins a tie)."""
    if table.num_rows == 0:
        return table
    order = pa.array(np.arange(table.num_rows))
    indexed = table.append_column("__order", order)
    sort_keys = [(name, "ascending") for name in key_names] + [
        ("event_ts", "ascending"),
        ("__order", "ascending"),
    ]
    ordered = indexed.take(pc.sort_indices(indexed, sort_keys=sort_keys))
    keys = key_texts(ordered, key_names)
    last = np.ones(ordered.num_rows, dtype=bool)
    last[:-1] = np.array([keys[i] != keys[i + 1] for i in range(len(keys) - 1)], dtype=bool)
    return ordered.filter(pa.array(last)).drop_columns(["__order"])


def feature_matrix(
    table: pa.Table, view: OnlineViewVersion
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
    """The values in the writer's layout and the null mask, [rows, features]."""
    n = table.num_rows
    nulls = np.zeros((n, len(view.columns)), dtype=bool)
    layout = view.layout
    shape = (n,) if layout.names else (n, len(view.columns))
    values: npt.NDArray[np.generic] = np.zeros(shape, dtype=layout)
    for j, (name, dtype) in enumerate(view.columns):
        column = table.column(name)
        nulls[:, j] = column.is_null().to_numpy(zero_copy_only=False)
        filled = pc.fill_null(column, pa.scalar(0).cast(column.type)).to_numpy(zero_copy_only=False)
        if layout.names:
            values[f"f{j}"] = np.asarray(filled, dtype=dtype)  # type: ignore[index]
        else:
            values[:, j] = np.asarray(filled, dtype=dtype)
    return values, nulls


def write_latest(client: redis.Redis, view: pb.FeatureView, key_names: Sequence[str], table: pa.Table) -> int:
    """Writes each entity's latest row unless the online store already holds a value with a later event
    time (an older backfill never overwrites fresher values). Returns the rows written."""
    latest = latest_per_entity(table, key_names)
    if latest.num_rows == 0:
        return 0
    online = online_view_version(view)
    keys = key_texts(latest, key_names)
    event_us = latest.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    online_keys = [online_key(online.entity, k, online.name, online.version) for k in keys]
    existing = cast(list[bytes | None], client.mget(online_keys))
    keep = np.ones(latest.num_rows, dtype=bool)
    for i, blob in enumerate(existing):
        if isinstance(blob, bytes):
            try:
                keep[i] = read_header(blob)[3] <= event_us[i]
            except BlobError:
                keep[i] = True  # a corrupt blob is replaced
    latest = latest.filter(pa.array(keep))
    if latest.num_rows == 0:
        return 0
    values, nulls = feature_matrix(latest, online)
    return OnlineWriter(client).write(
        online,
        [list(k) for k, kept in zip(keys, keep, strict=True) if kept],
        values,
        event_us[keep],
        nulls=nulls,
    )
