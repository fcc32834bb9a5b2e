"""The model input of a Predict request: the model's feature references read from the online store (one
read, one Redis round trip), request-time features merged in, and the deployment's fallback applied to
entities without stored features. Transport-free: references and rows in, a matrix and per-row facts out.

Column order is the order of ``ModelSpec.feature_refs`` (a whole-view reference expands to the view's
features in registered order). References written ``request:NAME`` are not read from the store: each row
must carry them as request-time features. A request-time feature named like a stored reference replaces
the stored value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib import recfunctions

from clients.errors import InvalidArgument, NotFound
from data_plane.models.spec import ModelSpec
from data_plane.reader import MISSING, PRESENT, STALE, BlockResult, OnlineReader
from data_plane.refs import parse_ref

REQUEST_PREFIX = "request:"


@dataclass(frozen=True, slots=True)
class RowFacts:
    fallback: bool  # the entity had no stored features: the deployment's defaults were used
    missing: int
    stale: int


_ALL_PRESENT = RowFacts(fallback=False, missing=0, stale=0)


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    values: npt.NDArray[Any]  # [rows, columns] in the model input's dtype
    rows: tuple[RowFacts, ...]


def _block_matrix(block: BlockResult, rows: int, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    plan = block.plan
    raw = np.frombuffer(block.values, dtype=plan.out_dtype)
    if plan.out_dtype.names is None:
        return raw.reshape(rows, plan.column_count).astype(dtype, copy=False)
    return np.asarray(recfunctions.structured_to_unstructured(raw, dtype=dtype))


def _side_by_side(columns: list[npt.NDArray[Any]], rows: int, dtype: Any) -> npt.NDArray[Any]:
    """The column blocks as one [rows, columns] array. One block (a model reading one view, the common
    case) is taken as it is, not copied: it may be a read-only view of the bytes Redis returned, which
    nothing downstream writes to (a fallback builds a new array)."""
    if len(columns) == 1:
        return columns[0]
    return np.concatenate(columns, axis=1) if columns else np.zeros((rows, 0), dtype)


class FeatureAssembler:
    def __init__(self, reader: OnlineReader | None) -> None:
        self._reader = reader
        # Column permutations (block order -> reference order), per model and per resolved block layout.
        self._orders: dict[tuple[Any, ...], tuple[npt.NDArray[np.intp] | None, list[int]]] = {}

    async def assemble(
        self,
        spec: ModelSpec,
        rows: Sequence[Mapping[str, str]],
        request_features: Sequence[Mapping[str, float]],
        time_remaining_s: float | None,
    ) -> FeatureMatrix:
        if len(spec.inputs) != 1 or len(spec.inputs[0].shape) != 2:
            raise InvalidArgument(
                f"model {spec.name} v{spec.version} cannot serve Predict: it needs exactly one input of "
                f"shape [batch, features]; it has {spec.signature()}"
            )
        if request_features and len(request_features) != len(rows):
            raise InvalidArgument(
                f"request_features has {len(request_features)} entries for {len(rows)} rows; "
                "give none or one per row"
            )
        if not rows:
            raise InvalidArgument("the request has no rows")
        dtype = spec.inputs[0].np_dtype
        online = tuple(r for r in spec.feature_refs if not r.startswith(REQUEST_PREFIX))
        stored, statuses, counts = await self._read(spec, online, rows, dtype, time_remaining_s)
        # Assemble the columns in reference order: stored ones from the read, request-time ones from rows.
        columns: list[npt.NDArray[Any]] = []
        status_columns: list[npt.NDArray[np.uint8]] = []
        position = 0
        width = stored.shape[1]
        online_index = 0
        for ref in spec.feature_refs:
            if ref.startswith(REQUEST_PREFIX):
                name = ref[len(REQUEST_PREFIX) :]
                columns.append(
                    self._request_column(ref, name, request_features, len(rows), dtype, required=True)
                )
                status_columns.append(np.zeros((len(rows), 1), np.uint8))
                continue
            count = counts[online_index]
            online_index += 1
            block = stored[:, position : position + count]
            block_status = statuses[:, position : position + count]
            position += count
            if count == 1 and request_features and any(ref in f for f in request_features):
                block = block.copy()
                override = self._request_column(ref, ref, request_features, len(rows), dtype, required=False)
                given = np.array([ref in f for f in request_features])
                block[given, 0] = override[given]
                block_status = block_status.copy()
                block_status[given, 0] = 0
            columns.append(block.reshape(len(rows), -1))
            status_columns.append(block_status.reshape(len(rows), -1))
        return self._apply_fallback(
            spec,
            rows,
            _side_by_side(columns, len(rows), dtype),
            _side_by_side(status_columns, len(rows), np.uint8),
            width,
        )

    async def _read(
        self,
        spec: ModelSpec,
        online: tuple[str, ...],
        rows: Sequence[Mapping[str, str]],
        dtype: np.dtype[Any],
        time_remaining_s: float | None,
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8], list[int]]:
        """The stored columns in reference order, their statuses, and each reference's column count."""
        if not online:
            return np.zeros((len(rows), 0), dtype), np.zeros((len(rows), 0), np.uint8), []
        if self._reader is None:
            raise InvalidArgument(
                f"model {spec.name} reads online features, but this data plane has no online store"
            )
        result = await self._reader.read(online, rows, time_remaining_s)
        matrices = [_block_matrix(b, result.row_count, dtype) for b in result.blocks]
        statuses = [np.frombuffer(b.statuses, np.uint8).reshape(result.row_count, -1) for b in result.blocks]
        values = np.concatenate(matrices, axis=1) if len(matrices) > 1 else matrices[0]
        status = np.concatenate(statuses, axis=1) if len(statuses) > 1 else statuses[0]
        order, counts = self._order(spec, online, result.blocks)
        if order is not None:
            values, status = values[:, order], status[:, order]
        return values, status, counts

    def _order(
        self, spec: ModelSpec, online: tuple[str, ...], blocks: Sequence[BlockResult]
    ) -> tuple[npt.NDArray[np.intp] | None, list[int]]:
        key = (spec.key, online, tuple((b.plan.view.name, b.plan.view.version) for b in blocks))
        if key in self._orders:
            return self._orders[key]
        offsets: dict[tuple[int, int], int] = {}
        column = 0
        for index, block in enumerate(blocks):
            for position in block.plan.column_positions:
                offsets[(index, int(position))] = column
                column += 1
        order: list[int] = []
        counts: list[int] = []
        for text in online:
            ref = parse_ref(text)
            index = next(
                i for i, b in enumerate(blocks)
                if b.plan.view.name == ref.view
                and (ref.version is None or b.plan.view.version == ref.version)
            )  # fmt: skip
            view = blocks[index].plan.view
            positions = range(len(view.columns)) if ref.feature is None else [view.column_index[ref.feature]]
            order.extend(offsets[(index, p)] for p in positions)
            counts.append(len(positions))
        result = (None if order == list(range(column)) else np.asarray(order, dtype=np.intp), counts)
        if len(self._orders) > 1024:
            self._orders.clear()
        self._orders[key] = result
        return result

    @staticmethod
    def _request_column(
        ref: str,
        name: str,
        request_features: Sequence[Mapping[str, float]],
        rows: int,
        dtype: np.dtype[Any],
        required: bool,
    ) -> npt.NDArray[Any]:
        column = np.zeros(rows, dtype)
        for row in range(rows):
            features = request_features[row] if request_features else {}
            value = features.get(name)
            if value is None:
                if required:
                    raise InvalidArgument(f"row {row} has no request-time feature {name!r} ({ref})")
                continue
            column[row] = value
        return column.reshape(rows, 1)

    @staticmethod
    def _apply_fallback(
        spec: ModelSpec,
        rows: Sequence[Mapping[str, str]],
        values: npt.NDArray[Any],
        status: npt.NDArray[np.uint8],
        stored_width: int,
    ) -> FeatureMatrix:
        if PRESENT == 0 and not status.any():  # every value present, the common case: nothing to count
            return FeatureMatrix(np.ascontiguousarray(values), (_ALL_PRESENT,) * len(rows))
        missing = status == MISSING
        missing_counts = missing.sum(axis=1)
        stale_counts = (status == STALE).sum(axis=1)
        absent = (missing_counts >= stored_width) if stored_width else np.zeros(len(rows), bool)
        use_defaults = spec.missing_entity_policy == "defaults"
        if absent.any() and not use_defaults:
            row = int(np.flatnonzero(absent)[0])
            raise NotFound(
                f"row {row}: entity {dict(rows[row])} has no stored features for model {spec.name} "
                f"v{spec.version} (fallback policy 'error')"
            )
        if use_defaults and missing.any():
            defaults = np.zeros(values.shape[1], values.dtype)
            if spec.feature_defaults:
                if len(spec.feature_defaults) != values.shape[1]:
                    raise InvalidArgument(
                        f"model {spec.name}: {len(spec.feature_defaults)} feature defaults for "
                        f"{values.shape[1]} features"
                    )
                defaults = np.asarray(spec.feature_defaults, values.dtype)
            values = np.where(missing, defaults[np.newaxis, :], values)
        facts = tuple(
            RowFacts(bool(absent[i]), int(missing_counts[i]), int(stale_counts[i])) for i in range(len(rows))
        )
        return FeatureMatrix(np.ascontiguousarray(values), facts)
