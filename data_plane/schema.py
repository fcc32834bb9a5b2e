"""What the data plane knows about one entity and one feature-view version, derived once per snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from data_plane.blob_shape import BlobShape


@dataclass(frozen=True, slots=True)
class EntitySpec:
    name: str
    join_keys: tuple[str, ...]
    integer_keys: tuple[bool, ...]  # per join key: INT64 keys are canonicalized ("007" -> "7")


@dataclass(frozen=True, slots=True)
class ViewVersion:
    name: str
    version: int
    entity: str
    columns: tuple[str, ...]
    value_types: tuple[int, ...]
    dtype_names: tuple[str, ...]
    layout: np.dtype[np.generic]  # in-blob dtype: plain when homogeneous, else a packed record
    fingerprint: int  # as registered in the snapshot; never recomputed here
    ttl_seconds: int
    status: int
    column_index: Mapping[str, int] = field(repr=False)
    blob: BlobShape = field(repr=False)  # what a null-free blob of this version looks like

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"
