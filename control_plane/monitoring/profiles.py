"""Reference profiles: computed from a training feature table, stored in the artifact store, linked to a
model version.

A profile is :class:`kernels.drift.ReferenceProfile` (quantile bins and counts, the sorted finite sample,
mean and spread, missing counts — see its docstring) in the ``.npz`` file format of
:mod:`control_plane.training.reference` (the built-in trainer writes the same file), so one loader reads
both. The sorted sample is what makes KS exact, but it grows with the training set: a feature with more
than ``max_values`` finite values (default 100 000) keeps that many evenly spaced order statistics
instead (the empirical CDF moves by at most ``1 / max_values``). KS then counts the reference as that
many values, which only makes its p-values a little larger (more conservative). Bin counts, mean,
spread (the standard deviation that normalises Wasserstein) and missing counts always come from every
row.

Profiles are built in float64 whatever the model is served in; :class:`ReferenceCache` rounds one, as it
loads it, to the float dtype of the version's signature (:func:`served_dtypes`; a float32 model's
reference held values its float32 input never takes, and an unchanged feature read as drift: see
:mod:`.drift`), so a profile needs no rebuilding, nor its caller to know the model's dtype. It also
reads the names of the version's logged feature columns, its ``feature_refs``
(:func:`logged_feature_names`), which the profile's feature names are paired with (:mod:`.columns`).

The link lives in the ``reference_profiles`` table: (model, version) → the features' profile and, when
given, the model outputs' profile on the same rows (the reference for prediction drift). Versions
registered by the built-in trainer before a link was made are still found: :func:`resolve_reference`
falls back to the ``aether.reference_profile_sha256`` tag of the version's run.

For in-process callers (the trainer, tests): :func:`register_reference_profile` does it all in one call.
Out of process: :func:`profile_blob` builds the bytes, upload them with the Artifacts service, then link
them with the ``RegisterReferenceProfile`` RPC (``MonitoringClient.register_reference_profile``).
"""

from __future__ import annotations

import collections
import io
import threading
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import DataLoss, InvalidArgument, NotFound
from control_plane.artifacts.store import ArtifactStore, check_sha256
from control_plane.audit.log import record
from control_plane.db import read_session, write_session
from control_plane.db.upsert import insert_or_lock
from control_plane.model_registry.tables import ModelVersionRow, RegisteredModelRow
from control_plane.model_registry.validation import check_version
from control_plane.monitoring.tables import ReferenceProfileRow
from control_plane.tracking.tables import RunRow, TagRow
from control_plane.training.reference import SHA_TAG, profile_from_bytes, profile_to_bytes
from kernels.drift import ReferenceProfile, at_precision, build_reference_profile

DEFAULT_MAX_VALUES = 100_000
FeatureTable: TypeAlias = npt.ArrayLike | pa.Table | Mapping[str, npt.ArrayLike]


def as_feature_matrix(
    features: FeatureTable, feature_names: Sequence[str] | None = None
) -> tuple[npt.NDArray[np.float64], tuple[str, ...]]:
    """``([rows, features] float64, names)`` from a numpy array (``feature_names`` required unless one
    column per name is obvious: defaults to ``f0, f1, …``), an Arrow table (its column names, or the given
    subset in that order) or a mapping of name → column. Nulls become NaN (counted as missing)."""
    if isinstance(features, pa.Table):
        names = tuple(feature_names) if feature_names is not None else tuple(features.column_names)
        missing = [name for name in names if name not in features.column_names]
        if missing:
            raise InvalidArgument(f"feature table has no column(s) {missing}")
        columns = [_arrow_column(features.column(name), name) for name in names]
        return _stack(columns, features.num_rows), names
    if isinstance(features, Mapping):
        names = tuple(feature_names) if feature_names is not None else tuple(features)
        columns = [np.asarray(features[name], dtype=np.float64).ravel() for name in names]
        return _stack(columns, len(columns[0]) if columns else 0), names
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, np.newaxis]
    if matrix.ndim != 2:
        raise InvalidArgument(f"features must be [rows, features], got shape {matrix.shape}")
    names = (
        tuple(feature_names) if feature_names is not None else tuple(f"f{i}" for i in range(matrix.shape[1]))
    )
    if len(names) != matrix.shape[1]:
        raise InvalidArgument(f"{len(names)} feature names for {matrix.shape[1]} feature columns")
    return matrix, names


def compact(profile: ReferenceProfile, max_values: int = DEFAULT_MAX_VALUES) -> ReferenceProfile:
    """The profile with each feature's sorted sample cut to at most ``max_values`` evenly spaced order
    statistics (first and last kept); bins, mean, spread and missing counts unchanged.

    ``n_valid`` becomes the kept sample's size (KS counts it), so ``m2`` (a sum over the values) is
    scaled by the same factor: the standard deviation ``sqrt(m2 / n_valid)`` that normalises Wasserstein
    stays the whole reference's. Unscaled, it grew by ``sqrt(N / max_values)`` and the Wasserstein score
    shrank by as much (3.2× at a million rows), hiding drift."""
    if max_values < 2:
        raise ValueError("max_values must be at least 2")
    if int(profile.n_valid.max(initial=0)) <= max_values:
        return profile
    n_valid = np.minimum(profile.n_valid, max_values)
    with np.errstate(invalid="ignore", divide="ignore"):
        m2 = np.where(profile.n_valid > 0, profile.m2 * (n_valid / profile.n_valid), profile.m2)
    sorted_values = np.full((profile.n_features, int(n_valid.max(initial=0))), np.nan)
    for f in range(profile.n_features):
        finite = profile.sorted_values[f, : profile.n_valid[f]]
        if finite.shape[0] > max_values:
            positions = np.round(np.linspace(0, finite.shape[0] - 1, max_values)).astype(np.int64)
            finite = finite[positions]
        sorted_values[f, : finite.shape[0]] = finite
    return ReferenceProfile(
        n_bins=profile.n_bins,
        edges=profile.edges,
        bin_counts=profile.bin_counts,
        sorted_values=sorted_values,
        n_valid=n_valid.astype(np.int64),
        n_missing=profile.n_missing,
        mean=profile.mean,
        m2=np.asarray(m2, dtype=np.float64),
    )


def reference_rows(profile: ReferenceProfile) -> int:
    """Rows the profile was built from: every finite value sits in one bin (the bins are counted over
    every row, compacted or not) and the rest are missing."""
    if not profile.n_features:
        return 0
    return int(profile.bin_counts[0].sum() + profile.n_missing[0])


def profile_blob(
    features: FeatureTable, feature_names: Sequence[str] | None = None, max_values: int = DEFAULT_MAX_VALUES
) -> tuple[bytes, tuple[str, ...], int]:
    """``(file bytes, feature names, reference rows)`` of the profile of ``features``."""
    matrix, names = as_feature_matrix(features, feature_names)
    if matrix.shape[0] == 0:
        raise InvalidArgument("a reference profile needs at least one row")
    profile = compact(build_reference_profile(matrix), max_values)
    return profile_to_bytes(profile, names), names, int(matrix.shape[0])


def register_reference_profile(
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    model_name: str,
    version: int,
    features: FeatureTable,
    feature_names: Sequence[str] | None = None,
    *,
    outputs: FeatureTable | None = None,
    output_names: Sequence[str] | None = None,
    actor: str,
    max_values: int = DEFAULT_MAX_VALUES,
) -> pb.ReferenceProfileInfo:
    """Profiles the training ``features`` (and optionally the model's ``outputs`` on the same rows),
    stores the profile(s) as content-addressed artifacts and links them to ``model_name`` version
    ``version`` (which must exist), replacing an earlier link. Audited."""
    blob, _, _ = profile_blob(features, feature_names, max_values)
    sha = store.put_bytes(blob).sha256
    output_sha = ""
    if outputs is not None:
        output_sha = store.put_bytes(profile_blob(outputs, output_names, max_values)[0]).sha256
    return link_reference_profile(sessions, store, model_name, version, sha, output_sha, actor=actor)


def link_reference_profile(
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    model_name: str,
    version: int,
    artifact_sha256: str,
    output_artifact_sha256: str = "",
    *,
    actor: str,
) -> pb.ReferenceProfileInfo:
    """Links stored profile blobs to a model version after loading them: ``NotFound`` for an unknown
    version (checked first, whatever the blobs) or blob, ``InvalidArgument`` for a blob that is not a
    profile, ``DataLoss`` only for one whose stored bytes no longer match their sha256."""
    # The request's version is an int64 and the column 32 bits: PostgreSQL refused to compare a larger
    # one (INTERNAL) where SQLite answered NOT_FOUND. Both now refuse it by its range.
    check_version(version)
    # The version before the blobs: an unknown model or version was answered with what was wrong with
    # the blob named (DATA_LOSS when it was not a profile), not NOT_FOUND. Checked again when linking,
    # where a version deleted in between is found out.
    with read_session(sessions) as session:
        _require_version(session, model_name, version)
    profile, names = _requested_profile(store, "artifact_sha256", artifact_sha256)
    output_names: tuple[str, ...] = ()
    if output_artifact_sha256:
        output_names = _requested_profile(store, "output_artifact_sha256", output_artifact_sha256)[1]
    now_us = time.time_ns() // 1000
    values = {
        "model_name": model_name,
        "version": version,
        "artifact_sha256": artifact_sha256,
        "feature_names": list(names),
        "output_artifact_sha256": output_artifact_sha256,
        "output_names": list(output_names),
        "n_rows": reference_rows(profile),
        "created_by": actor,
        "created_at_us": now_us,
    }
    with write_session(sessions) as session:
        _require_version(session, model_name, version)
        # Locked, so that of concurrent links each audits the one before it as its "before".
        row, created = insert_or_lock(session, ReferenceProfileRow, values)
        before = None if created else _row_dict(row)
        for column, value in values.items():
            setattr(row, column, value)
        session.flush()
        record(
            session,
            actor=actor,
            action="monitoring.reference_profile.link",
            object_type="model_version",
            object_id=f"{model_name}/{version}",
            before=before,
            after=_row_dict(row),
        )
        return info_of(row)


def load_profile(store: ArtifactStore, sha256: str) -> tuple[ReferenceProfile, tuple[str, ...]]:
    """A linked profile. ``DataLoss`` when its blob no longer reads as one: it did when it was linked."""
    data = store.open_verified(sha256)
    try:
        return _read_profile(data)
    except _NotAProfile as exc:
        raise DataLoss(f"artifact sha256:{sha256} is not a reference profile: {exc}") from None


#: What a reference profile is, for the caller who named something else.
PROFILE_FORMAT = (
    "an .npz archive of a profile's arrays, as profile_blob (MonitoringClient.register_reference_profile)"
    " or the built-in trainer writes it"
)


class _NotAProfile(Exception):
    """Bytes that do not read as a reference profile; the message is a short cause."""


def _requested_profile(
    store: ArtifactStore, field: str, sha256: str
) -> tuple[ReferenceProfile, tuple[str, ...]]:
    """The profile a request names in ``field``. Naming a blob that is not one is the caller's mistake
    (INVALID_ARGUMENT saying what a profile is), not lost data: DATA_LOSS is left to a blob whose bytes no
    longer match their sha256 (``open_verified``)."""
    data = store.open_verified(check_sha256(sha256))
    try:
        return _read_profile(data)
    except _NotAProfile as exc:
        raise InvalidArgument(
            f"{field} sha256:{sha256} is not a reference profile ({exc}); a profile is {PROFILE_FORMAT}"
        ) from None


def _read_profile(data: bytes) -> tuple[ReferenceProfile, tuple[str, ...]]:
    """``profile_from_bytes``, its failures on bytes that are not a profile as :class:`_NotAProfile`
    with a short cause: numpy's own words (its advice on ``allow_pickle`` for bytes that are no archive
    at all) told the caller nothing about what was asked of them."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise _NotAProfile(f"its {len(data)} bytes are not an .npz archive")
    try:
        return profile_from_bytes(data)
    except KeyError as exc:  # NpzFile: "<name> is not a file in the archive"
        raise _NotAProfile(f"the archive has no {str(exc.args[0]).split()[0]!r} array") from None
    except (ValueError, TypeError, IndexError, OSError, zipfile.BadZipFile) as exc:
        # An array of the wrong type or shape, our own "unknown reference profile format", a damaged
        # member: the first line is enough to say which.
        cause = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise _NotAProfile(f"its arrays are not a profile's: {cause}") from None


def resolve_reference(session: Session, model_name: str, version: int) -> pb.ReferenceProfileInfo | None:
    """The reference linked to a version: the ``reference_profiles`` row, else the profile its run was
    tagged with by the built-in trainer (features only), else None."""
    row = session.get(ReferenceProfileRow, (model_name, version))
    if row is not None:
        return info_of(row)
    tagged = session.execute(
        select(TagRow.value)
        .join(RunRow, RunRow.id == TagRow.run_pk)
        .join(ModelVersionRow, ModelVersionRow.run_id == RunRow.run_id)
        .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
        .where(
            RegisteredModelRow.name == model_name, ModelVersionRow.version == version, TagRow.key == SHA_TAG
        )
    ).scalar_one_or_none()
    if tagged is None:
        return None
    return pb.ReferenceProfileInfo(model_name=model_name, version=version, artifact_sha256=tagged)


@dataclass(frozen=True)
class LoadedReference:
    """A version's reference, loaded: features (None when unlinked) and outputs (None when absent),
    each already rounded to the precision its model serves them in (:func:`served_dtypes`): ``""`` where
    the signature does not say, and the window's own precision decides (:mod:`.drift`)."""

    features: tuple[ReferenceProfile, tuple[str, ...]] | None
    outputs: tuple[ReferenceProfile, tuple[str, ...]] | None
    feature_dtype: str = ""
    output_dtype: str = ""
    #: The logged feature columns' names: the version's ``feature_refs`` (:func:`logged_feature_names`).
    logged_names: tuple[str, ...] = ()


def served_dtypes(session: Session, model_name: str, version: int) -> tuple[str, str]:
    """``(input dtype, output dtype)`` the version's signature serves its features and outputs in: the one
    float dtype among its inputs (outputs), else ``""`` (none, several, or no such version)."""
    signature = session.execute(
        select(ModelVersionRow.signature)
        .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
        .where(RegisteredModelRow.name == model_name, ModelVersionRow.version == version)
    ).scalar_one_or_none()
    if not isinstance(signature, dict):
        return "", ""
    return _float_dtype(signature.get("inputs")), _float_dtype(signature.get("outputs"))


def logged_feature_names(session: Session, model_name: str, version: int) -> tuple[str, ...]:
    """The names of the feature columns the data plane logs for the version: its ``feature_refs``, in
    model-input order (the order Predict assembles and logs them in); ``()`` when it lists none (or
    there is no such version): its columns have no names."""
    refs = session.execute(
        select(ModelVersionRow.feature_refs)
        .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
        .where(RegisteredModelRow.name == model_name, ModelVersionRow.version == version)
    ).scalar_one_or_none()
    return tuple(str(ref) for ref in refs) if isinstance(refs, list) else ()


def _float_dtype(tensors: object) -> str:
    if not isinstance(tensors, list):
        return ""
    floats = {str(t.get("dtype")) for t in tensors if isinstance(t, dict)} & _FLOAT_DTYPES
    return floats.pop() if len(floats) == 1 else ""


_FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})


def _at(
    loaded: tuple[ReferenceProfile, tuple[str, ...]], dtype: str
) -> tuple[ReferenceProfile, tuple[str, ...]]:
    return (at_precision(loaded[0], dtype), loaded[1]) if dtype else loaded


class ReferenceCache:
    """Loaded references by (model, version), re-resolved every ``ttl_s`` (a new link is picked up) and
    re-loaded only when the linked sha256 changed. A profile is rounded once, as it is loaded, to the
    dtype the version's signature serves it in (a float64 profile of a float32 model, every one the SDK
    or an older trainer built, included): see :mod:`.drift`. Bounded LRU; thread-safe."""

    def __init__(
        self, sessions: sessionmaker[Session], store: ArtifactStore, capacity: int = 32, ttl_s: float = 30.0
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._capacity = capacity
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple[str, int], tuple[float, str, str, LoadedReference]] = (
            collections.OrderedDict()
        )

    def get(self, model_name: str, version: int) -> LoadedReference:
        key = (model_name, version)
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[3]
        with read_session(self._sessions) as session:
            info = resolve_reference(session, model_name, version)
            feature_dtype, output_dtype = served_dtypes(session, model_name, version)
            logged_names = logged_feature_names(session, model_name, version)
        sha = info.artifact_sha256 if info is not None else ""
        output_sha = info.output_artifact_sha256 if info is not None else ""
        if (
            cached is not None
            and (cached[1], cached[2]) == (sha, output_sha)
            and (cached[3].feature_dtype, cached[3].output_dtype) == (feature_dtype, output_dtype)
            and cached[3].logged_names == logged_names
        ):
            loaded = cached[3]
        else:
            loaded = LoadedReference(
                _at(load_profile(self._store, sha), feature_dtype) if sha else None,
                _at(load_profile(self._store, output_sha), output_dtype) if output_sha else None,
                feature_dtype,
                output_dtype,
                logged_names,
            )
        with self._lock:
            self._entries[key] = (now, sha, output_sha, loaded)
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return loaded


def info_of(row: ReferenceProfileRow) -> pb.ReferenceProfileInfo:
    return pb.ReferenceProfileInfo(
        model_name=row.model_name,
        version=row.version,
        artifact_sha256=row.artifact_sha256,
        feature_names=row.feature_names,
        output_artifact_sha256=row.output_artifact_sha256,
        output_names=row.output_names,
        n_rows=row.n_rows,
        created_by=row.created_by,
        created_at_us=row.created_at_us,
    )


def _require_version(session: Session, model_name: str, version: int) -> None:
    found = session.execute(
        select(ModelVersionRow.id)
        .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
        .where(RegisteredModelRow.name == model_name, ModelVersionRow.version == version)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"model version {model_name}/{version} not found")


def _row_dict(row: ReferenceProfileRow) -> dict[str, Any]:
    return {
        "artifact_sha256": row.artifact_sha256,
        "feature_names": list(row.feature_names),
        "output_artifact_sha256": row.output_artifact_sha256,
    }


def _arrow_column(column: pa.ChunkedArray, name: str) -> npt.NDArray[np.float64]:
    if not (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_boolean(column.type)
    ):
        raise InvalidArgument(f"feature {name!r} is {column.type}: only numeric features can be profiled")
    filled = column.cast(pa.float64()).fill_null(float("nan"))
    return np.asarray(filled.to_numpy(), dtype=np.float64)


def _stack(columns: Sequence[npt.NDArray[np.float64]], n_rows: int) -> npt.NDArray[np.float64]:
    if not columns:
        raise InvalidArgument("a reference profile needs at least one feature")
    if any(column.shape[0] != n_rows for column in columns):
        raise InvalidArgument("feature columns differ in length")
    return np.ascontiguousarray(np.stack(columns, axis=1))
