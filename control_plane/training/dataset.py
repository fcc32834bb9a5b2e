"""A job's training set: built by the offline store from the spec's point-in-time query, or read back by
its dataset hash, with every feature reference pinned to a version.

Feature references are pinned *before* the query (``stats:score`` becomes ``stats@2:score`` through the
feature registry), so the training set's columns, the lineage recorded with the model and the features
served later all name the same view versions even if a new version is published mid-job. A job pins once:
its first attempt records the pinned refs in the job's folder (:data:`PINS_FILE`) and every later attempt
reuses them, so a retry that resumes a checkpoint trains on the versions the checkpoint was trained on,
not on one published since (which it did, and registered that version's lineage).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clients.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from clients.sdk.offline import OfflineFeaturesClient
from clients.sdk.registry import FeatureRegistryClient
from clients.uris import redact_text
from control_plane.jobs.identity import claim
from control_plane.offline.datasets import hashes_to, read_dataset_record, recorded_copies
from control_plane.offline.refs import FeatureRef, parse_ref
from control_plane.offline.roots import open_filesystem
from control_plane.offline.store import OfflineStore
from control_plane.training.spec import DatasetRef

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainingData:
    """The training set and its provenance. ``feature_columns`` name the feature columns of ``table`` in
    query order; ``feature_refs`` are the same features pinned to versions (``view@2:feature``; equal to
    the column names for a query this SDK ran)."""

    table: pa.Table
    dataset_hash: str
    query: str
    feature_columns: tuple[str, ...]
    feature_refs: tuple[str, ...]

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    def column(self, name: str) -> npt.NDArray[np.generic]:
        """One column as numpy (nulls become NaN for numbers)."""
        if name not in self.table.column_names:
            raise InvalidArgument(f"training set has no column {name!r}; it has {self.table.column_names}")
        column = self.table.column(name)
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
        return np.asarray(column.to_numpy(zero_copy_only=False))

    def numpy(
        self, columns: Sequence[str] | None = None, dtype: type = np.float32
    ) -> npt.NDArray[np.generic]:
        """The numeric ``columns`` (default: the features) as one ``[rows, columns]`` array; missing
        values are NaN. A finite value the dtype cannot hold (1e39 in float32) is FAILED_PRECONDITION
        naming the column: cast, it became inf, which a model then read as missing (imputed) or trained
        on as it was, either way not the value stored."""
        names = list(self.feature_columns if columns is None else columns)
        matrix: npt.NDArray[np.generic] = np.empty((self.num_rows, len(names)), dtype=dtype)
        floating = np.issubdtype(dtype, np.floating)
        for index, name in enumerate(names):
            values = self.column(name)
            with np.errstate(over="ignore"):
                matrix[:, index] = values
            if floating and values.dtype.kind == "f":
                overflowed = np.isinf(matrix[:, index]) & np.isfinite(values)
                if overflowed.any():
                    row = int(np.argmax(overflowed))
                    value, kind = float(values[row]), np.dtype(dtype).name
                    raise FailedPrecondition(
                        f"column {name!r} holds {value!r} (row {row}), which {kind} cannot hold: its "
                        "training matrix would carry inf; use a wider dtype or fix the data"
                    )
        return matrix

    def torch(self, columns: Sequence[str] | None = None) -> torch.Tensor:
        """Like :meth:`numpy`, as a float32 torch tensor."""
        import torch

        return torch.from_numpy(self.numpy(columns, np.float32))


def pin_feature_refs(registry: FeatureRegistryClient, refs: Sequence[str]) -> tuple[str, ...]:
    """Each reference as ``view@version:feature``: an unversioned view resolves to its latest servable
    version, a whole view (``stats``) expands to its features in registered order. Duplicates collapse."""
    pinned: list[str] = []
    latest: dict[str, int] = {}
    for text in refs:
        ref = parse_ref(text)
        version = ref.version if ref.version is not None else latest.get(ref.view, 0)
        view = registry.get_feature_view(ref.view, version)
        if ref.version is None:
            latest[ref.view] = int(view.version)
        names = [f.name for f in view.spec.features] if ref.feature is None else [ref.feature]
        known = {f.name for f in view.spec.features}
        for name in names:
            if name not in known:
                raise NotFound(f"feature view {ref.view!r} version {view.version} has no feature {name!r}")
            text_ref = str(FeatureRef(ref.view, int(view.version), name))
            if text_ref not in pinned:
                pinned.append(text_ref)
    return tuple(pinned)


#: The feature refs a job's first attempt pinned, in the job's folder (beside its checkpoint folder).
PINS_FILE = "feature_pins.json"


def read_pins(path: Path) -> tuple[str, ...] | None:
    """The refs recorded at ``path``, or None when no attempt has pinned yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        pinned = json.loads(text)["pinned"]
        if not isinstance(pinned, list) or not all(isinstance(ref, str) for ref in pinned):
            raise TypeError("not a list of strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise FailedPrecondition(
            f"{path} does not hold the feature refs an earlier attempt pinned ({exc}): cannot tell which"
            " feature versions this job trains on; resubmit it"
        ) from None
    return tuple(pinned)


def keep_first_pins(path: Path, requested: Sequence[str], pinned: Sequence[str]) -> tuple[str, ...]:
    """Records ``pinned`` at ``path`` unless a record is there already, and returns what the record
    holds: the first writer wins (a hard link of a complete, fsynced file, which fails when the name
    exists), so two ranks of one attempt, or a crash mid-write, never leave two pinnings or half a file."""
    claim(path, {"requested": list(requested), "pinned": list(pinned)})  # an earlier one wins
    recorded = read_pins(path)
    assert recorded is not None  # it was linked into place above, by this process or another
    return recorded


def load_training_data(
    target: str, dataset: DatasetRef, *, pins: Path | None = None, timeout: float = 600.0
) -> TrainingData:
    """The training set of ``dataset`` from the control plane at ``target`` (module doc). A query with an
    expected hash that the result does not match is DATA_LOSS: the data under the spec changed. With
    ``pins`` (the job's :data:`PINS_FILE`), the refs are pinned once per job: recorded there by the first
    caller, read back by every later one."""
    if dataset.has_query:
        pinned = read_pins(pins) if pins is not None else None
        if pinned is None:
            with FeatureRegistryClient(target, timeout=timeout) as registry:
                pinned = pin_feature_refs(registry, dataset.features)
            if pins is not None:
                pinned = keep_first_pins(pins, dataset.features, pinned)
        with OfflineFeaturesClient(target, timeout=timeout) as offline:
            result = offline.historical_features(
                dataset.entity_rows_path, pinned, timestamp_column=dataset.timestamp_column
            )
        if dataset.dataset_hash and result.dataset_hash != dataset.dataset_hash:
            raise DataLoss(
                f"the query built dataset {result.dataset_hash}, the spec expects {dataset.dataset_hash}"
            )
        query = {
            "entity_rows_path": dataset.entity_rows_path,
            "features": list(pinned),
            "timestamp_column": dataset.timestamp_column,
            "requested_features": list(dataset.features),
        }
        return TrainingData(
            result.table, result.dataset_hash, json.dumps(query, sort_keys=True), pinned, pinned
        )
    if dataset.dataset_hash:
        return read_recorded_dataset(dataset.dataset_hash)
    raise InvalidArgument("job spec: the dataset needs a point-in-time query (entity_rows_path) or a hash")


def read_recorded_dataset(dataset_hash: str, store: OfflineStore | None = None) -> TrainingData:
    """A training set written earlier with an output path, found through its record in the offline root
    (``AETHER_OFFLINE_ROOT`` / ``$AETHER_HOME/offline``; the job runs beside the control plane or shares
    its object store) and checked against its hash."""
    store = store if store is not None else OfflineStore()
    record = read_dataset_record(store, dataset_hash)
    copies = recorded_copies(record)
    if not copies:
        raise NotFound(f"dataset {dataset_hash} was recorded without an output path: nothing to read back")
    table, output_path = _read_a_copy(dataset_hash, copies)
    columns: list[str] = []
    refs: list[str] = []
    for view in record.get("views", ()):
        for column in view.get("columns", ()):
            columns.append(str(column))
            feature = str(column).rsplit(":", 1)[-1]
            refs.append(str(FeatureRef(str(view["view"]), int(view["version"]), feature)))
    query = {
        "dataset_hash": dataset_hash,
        "features": list(record.get("features", ())),
        "output_path": output_path,
    }
    return TrainingData(table, dataset_hash, json.dumps(query, sort_keys=True), tuple(columns), tuple(refs))


def _read_a_copy(dataset_hash: str, copies: Sequence[str]) -> tuple[pa.Table, str]:
    """The first of ``copies`` (newest first) that can be read and hashes to ``dataset_hash``, with its
    path. NOT_FOUND when none is left, DATA_LOSS when one is there but unreadable or changed: each names
    the copies and what was wrong (a raw FileNotFoundError reached the job before, as INTERNAL)."""
    missing: list[str] = []
    damaged: list[str] = []
    for copy in copies:
        try:
            filesystem, path = open_filesystem(copy)
            table = pq.read_table(path, filesystem=filesystem)
        except FileNotFoundError:
            missing.append(copy)
            continue
        except (OSError, pa.ArrowInvalid) as exc:  # a file that is no Parquet, unreadable, a store failing
            damaged.append(f"{copy} cannot be read ({redact_text(str(exc), copy)})")
            continue
        if hashes_to(table, dataset_hash):
            return table, copy
        damaged.append(f"{copy} hashes differently")
    if damaged:
        problems = damaged + ([f"not found: {', '.join(missing)}"] if missing else [])
        raise DataLoss(f"no intact copy of dataset {dataset_hash}: {'; '.join(problems)}")
    raise NotFound(f"no copy of dataset {dataset_hash} is left: not found: {', '.join(missing)}")
