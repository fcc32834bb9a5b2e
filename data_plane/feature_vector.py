"""The model input of a Predict request: the model's feature references read from the online store (one
read, one Redis round trip), request-time features merged in, the deployment's policy applied to
entities without stored features (judged per entity of a row: none of its views read holds its key; a
blob of nulls is a stored entity), and each missing value filled (:func:`_missing_fill`: the deployment's
``feature_defaults``, else NaN for a model that imputes missing values itself, else 0). Transport-free:
references and rows in, a matrix and per-row facts out.

Column order is the order of ``ModelSpec.feature_refs`` (a whole-view reference expands to the view's
features in registered order). References written ``request:NAME`` are not read from the store: each row
must carry them as request-time features. A model whose signature is not one ``[batch, features]``
input, or that lists no references, has no input Predict can build: FAILED_PRECONDITION pointing to
ModelInfer; references that read more or fewer features than its input takes are FAILED_PRECONDITION
too, since it is the deployment's model that cannot serve, not the request that is wrong (no
request to it could succeed, so a caller must not be told to fix and resend it). A request-time feature
named like a single-feature stored reference replaces the stored value; one the served model reads in
neither way is INVALID_ARGUMENT
(:func:`data_plane.feature_columns.refuse_unknown`), never dropped. Where the columns go is
:mod:`data_plane.feature_columns`' layout, computed once per model version and block layout. A stored
value the input's dtype cannot hold (not a whole number its integers hold; a finite number a narrower
float makes ±inf; NaN or ±inf for a model that refuses non-finite input, ``allow_non_finite`` off) is
FAILED_PRECONDITION naming the feature and the entity (:mod:`data_plane.stored_fit`): the stored data does
not fit this model. Only a
value that reaches the model is refused: the check runs after request-time values are merged, so one
that replaces the unfit value lets the request through. A shadow's input is built from
the served request's read (:meth:`FeatureAssembler.assemble_like`), with its own dtype, fill and policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clients.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from data_plane.feature_columns import (
    ColumnLayout,
    column_layout,
    merge_request_features,
    refuse_unknown,
)
from data_plane.feature_pins import FeaturePins, SharedPins
from data_plane.model_references import ModelReferenceNotFound, model_reference_error
from data_plane.models.spec import ModelSpec
from data_plane.reader import MISSING, PRESENT, STALE, BlockResult, OnlineReader, ReadLimits, ReadResult
from data_plane.refs import REQUEST_PREFIX, parse_ref
from data_plane.stored_fit import UnfitColumns, block_matrix, refuse_unfit, takes_finite_only, unfit_columns


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
    # What was read to build it: its online references and the read (None when it read nothing), so that
    # a shadow reading the same references assembles its own input without a second Redis round trip.
    online: tuple[str, ...] = ()
    read: ReadResult | None = None


def same_input(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two models' Predict inputs for one request are the same matrix: the same references and
    input dtype, and the same inputs to what a missing value becomes (``feature_defaults``, the NaN of
    ``allow_non_finite``) and to whether an entity with no stored features is refused
    (``missing_entity_policy``). Comparing references and dtype alone fed an imputing shadow 0 where it
    takes NaN, and a strict one NaN, which it refused."""
    return (
        a.feature_refs == b.feature_refs
        and a.inputs[0].np_dtype == b.inputs[0].np_dtype
        and a.feature_defaults == b.feature_defaults
        and a.allow_non_finite == b.allow_non_finite
        and a.missing_entity_policy == b.missing_entity_policy
    )


class FeatureAssembler:
    def __init__(
        self,
        reader: OnlineReader | None,
        shared_pins: SharedPins | None = None,
        catch_up: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``shared_pins``: where the workers of a ``--workers N`` data plane agree on the view versions of
        references without one (:mod:`data_plane.feature_pins`); None for a data plane of one process.
        ``catch_up``: installs a newer registry snapshot a sibling worker wrote, if there is one, and says
        whether it did (:meth:`data_plane.registry_watch.RegistryWatch.catch_up`): a model version whose
        references name a view version the catalog does not hold asks it once before NOT_FOUND, since a
        sibling may have pinned them to a version this worker's watch has not brought yet."""
        self._reader = reader
        self._catch_up = catch_up
        # Rows per request, whether or not the model reads the online store (the reader checks its own
        # reads; a model of request-time features only would otherwise be bounded by the message size).
        self._max_rows = (reader.limits if reader is not None else ReadLimits()).max_rows
        # The view version each reference without one is read at (:mod:`data_plane.feature_pins`).
        self._pins = FeaturePins(reader.catalog, shared_pins) if reader is not None else None
        # Per model version: its references as given, and those read from the online store (pinned).
        self._online: dict[tuple[str, int], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        # Per model and resolved block layout: the column permutation (block order -> reference order)
        # and where each reference's columns go in the model input.
        self._layouts: dict[
            tuple[Any, ...], tuple[tuple[str, ...], npt.NDArray[np.intp] | None, ColumnLayout]
        ] = {}

    async def assemble(
        self,
        spec: ModelSpec,
        rows: Sequence[Mapping[str, str]],
        request_features: Sequence[Mapping[str, float]],
        time_remaining_s: float | None,
        also_read: frozenset[str] = frozenset(),
    ) -> FeatureMatrix:
        """``also_read``: the request-time feature names the deployment's other variants read (see
        :func:`data_plane.feature_columns.refuse_unknown`)."""
        self._check(spec, rows, request_features)
        online = self._online_refs(spec)
        read = await self._read(spec, online, rows, time_remaining_s) if online else None
        return self._build(spec, online, rows, request_features, read, served=True, also_read=also_read)

    async def assemble_like(
        self,
        spec: ModelSpec,
        served: ModelSpec,
        assembled: FeatureMatrix,
        rows: Sequence[Mapping[str, str]],
        request_features: Sequence[Mapping[str, float]],
    ) -> FeatureMatrix:
        """``spec``'s input (a shadow's) for the request that ``assembled`` is ``served``'s input for:
        ``assembled`` itself when the two inputs are the same (:func:`same_input`); else built from the
        same read when ``spec`` reads the same online references (its own dtype, fill and policy applied
        to the values as read: no second Redis round trip); else read anew."""
        online = self._online_refs(spec)
        # The same references may be pinned to other versions when the two were first served apart.
        if same_input(spec, served) and online == assembled.online:
            return assembled
        self._check(spec, rows, request_features)
        read = assembled.read if online == assembled.online else None
        if read is None and online:
            read = await self._read(spec, online, rows, None)
        return self._build(spec, online, rows, request_features, read, served=False)

    def _check(
        self,
        spec: ModelSpec,
        rows: Sequence[Mapping[str, str]],
        request_features: Sequence[Mapping[str, float]],
    ) -> None:
        # Checked before the request's own checks: no request to this model could succeed.
        if len(spec.inputs) != 1 or len(spec.inputs[0].shape) != 2:
            raise FailedPrecondition(
                f"model {spec.name} v{spec.version} cannot serve Predict: it needs exactly one input of "
                f"shape [batch, features]; it has {spec.signature()}; send its inputs with ModelInfer"
            )
        if request_features and len(request_features) != len(rows):
            raise InvalidArgument(
                f"request_features has {len(request_features)} entries for {len(rows)} rows; "
                "give none or one per row"
            )
        if not rows:
            raise InvalidArgument("the request has no rows")
        if len(rows) > self._max_rows:
            raise ResourceExhausted(
                f"{len(rows)} entity rows requested; the limit is {self._max_rows} per request"
            )

    async def _read(
        self,
        spec: ModelSpec,
        online: tuple[str, ...],
        rows: Sequence[Mapping[str, str]],
        time_remaining_s: float | None,
    ) -> ReadResult:
        if self._reader is None:  # where the model is served, not the request: the operator's to fix
            raise FailedPrecondition(
                f"model {spec.name} reads online features, but this data plane has no online store"
            )
        try:
            return await self._reader.read(online, rows, time_remaining_s, f"{spec.name} v{spec.version}")
        except ModelReferenceNotFound:  # the error path only: a served request pays nothing for it
            if self._catch_up is None or not await self._catch_up():
                raise
        # Read again with the time the caller gave: the catch-up took a file's read, and the reader keeps a
        # margin of the time for its answer anyway (gRPC ends the call at its deadline in any case).
        return await self._reader.read(online, rows, time_remaining_s, f"{spec.name} v{spec.version}")

    def _build(
        self,
        spec: ModelSpec,
        online: tuple[str, ...],
        rows: Sequence[Mapping[str, str]],
        request_features: Sequence[Mapping[str, float]],
        read: ReadResult | None,
        served: bool,
        also_read: frozenset[str] = frozenset(),
    ) -> FeatureMatrix:
        """The model input from ``read`` (of ``online``; None when there is nothing to read). ``served``:
        the request's own model, whose request-time features must all be ones it reads (a shadow's are
        aimed at the served model)."""
        dtype = spec.inputs[0].np_dtype
        stored, statuses, layout, unfit = self._stored(spec, online, rows, dtype, read)
        if served and request_features:
            refuse_unknown(layout, request_features, f"{spec.name} v{spec.version}", also_read)
        finite_only = takes_finite_only(spec, dtype)
        values, status = merge_request_features(layout, stored, statuses, request_features, finite_only)
        if unfit is not None:  # after the merge: a stored value a request-time one replaced is never fed
            refuse_unfit(spec, rows, request_features, layout, unfit, dtype)
        return self._apply_fallback(spec, rows, values, status, statuses, online, read)

    def _online_refs(self, spec: ModelSpec) -> tuple[str, ...]:
        cached = self._online.get(spec.key)
        if cached is not None and cached[0] is spec.feature_refs:
            return cached[1]
        online = tuple(r for r in spec.feature_refs if not r.startswith(REQUEST_PREFIX))
        if online and self._pins is not None:
            try:
                online = self._pins.pinned(spec, online)  # raised (no such view yet): nothing is cached
            except (NotFound, InvalidArgument) as exc:
                raise model_reference_error(exc, f"{spec.name} v{spec.version}") from None
        if len(self._online) > 1024:
            self._online.clear()
        self._online[spec.key] = (spec.feature_refs, online)
        return online

    def _stored(
        self,
        spec: ModelSpec,
        online: tuple[str, ...],
        rows: Sequence[Mapping[str, str]],
        dtype: np.dtype[Any],
        result: ReadResult | None,
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8], ColumnLayout, UnfitColumns | None]:
        """The stored columns in reference order, their statuses, the model input's column layout, and the
        stored values the input cannot hold (None when there are none, the common case)."""
        if result is None:
            empty = (len(rows), 0)
            layout = self._layout(spec, online, ())[1]
            return np.zeros(empty, dtype), np.zeros(empty, np.uint8), layout, None
        finite_only = takes_finite_only(spec, dtype)
        built = [block_matrix(b, rows, dtype, finite_only) for b in result.blocks]
        matrices = [matrix for matrix, _ in built]
        statuses = [np.frombuffer(b.statuses, np.uint8).reshape(result.row_count, -1) for b in result.blocks]
        values = np.concatenate(matrices, axis=1) if len(matrices) > 1 else matrices[0]
        status = np.concatenate(statuses, axis=1) if len(statuses) > 1 else statuses[0]
        order, layout = self._layout(spec, online, result.blocks)
        if order is not None:
            values, status = values[:, order], status[:, order]
        return values, status, layout, unfit_columns(built, order)

    def _layout(
        self, spec: ModelSpec, online: tuple[str, ...], blocks: Sequence[BlockResult]
    ) -> tuple[npt.NDArray[np.intp] | None, ColumnLayout]:
        """Cached per model version and block layout (the view versions the read brought, which the model's
        pinned references fix). Keyed without the references themselves, which would be hashed on every
        request; the hit checks they are still the same object."""
        key = (spec.key, tuple((b.plan.view.name, b.plan.view.version) for b in blocks))
        cached = self._layouts.get(key)
        if cached is not None and cached[0] is spec.feature_refs:
            return cached[1], cached[2]
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
            # A pinned reference reads its version's block (a model's references all are, once
            # :mod:`data_plane.feature_pins` has pinned them). An unpinned one reads the latest servable
            # version, which is the highest of that name among the blocks: a pinned block is servable too,
            # so it is never above the latest (taking the first block of the name would read a pinned
            # older version's columns when the model lists it first).
            index = max(
                (i for i, b in enumerate(blocks)
                 if b.plan.view.name == ref.view and ref.version in (None, b.plan.view.version)),
                key=lambda i: blocks[i].plan.view.version,
            )  # fmt: skip
            view = blocks[index].plan.view
            positions = range(len(view.columns)) if ref.feature is None else [view.column_index[ref.feature]]
            order.extend(offsets[(index, p)] for p in positions)
            counts.append(len(positions))
        permutation = None if order == list(range(column)) else np.asarray(order, dtype=np.intp)
        layout = column_layout(spec.feature_refs, counts)
        if layout.width == 0 and spec.inputs[0].shape[1] != 0:
            # Checked here, on a cache miss (never cached, so every such request misses): a served request
            # pays nothing. Built anyway, the [rows, 0] matrix was refused as a shape mismatch of an input
            # the caller never sent.
            raise FailedPrecondition(
                f"model {spec.name} v{spec.version} reads no features (it lists no feature references), so "
                f"Predict cannot build its input ({spec.signature()}); send that input with ModelInfer"
            )
        takes = spec.inputs[0].shape[1]
        if 0 <= takes != layout.width:
            # As above, on a cache miss only: the matrix built anyway was refused INVALID_ARGUMENT as an
            # input shape the caller never sent, and no request could succeed.
            refs = ", ".join(map(repr, spec.feature_refs))
            raise FailedPrecondition(
                f"model {spec.name} v{spec.version} reads {layout.width} features per row (feature "
                f"references {refs}), but its input takes {takes} ({spec.signature()}): its feature "
                "references and its signature must agree"
            )
        if len(self._layouts) > 1024:
            self._layouts.clear()
        self._layouts[key] = (spec.feature_refs, permutation, layout)
        return permutation, layout

    @staticmethod
    def _apply_fallback(
        spec: ModelSpec,
        rows: Sequence[Mapping[str, str]],
        values: npt.NDArray[Any],
        status: npt.NDArray[np.uint8],
        stored_status: npt.NDArray[np.uint8],
        online: tuple[str, ...],
        read: ReadResult | None,
    ) -> FeatureMatrix:
        """``status``: the model input's statuses, request-time values merged in; ``stored_status``: the
        stored columns' statuses as read, before any request-time value replaced one."""
        # Request-time values are all present, so every value is present when every stored one is.
        if PRESENT == 0 and not stored_status.any():  # the common case: nothing to count
            return FeatureMatrix(np.ascontiguousarray(values), (_ALL_PRESENT,) * len(rows), online, read)
        missing = status == MISSING
        missing_counts = missing.sum(axis=1)
        stale_counts = (status == STALE).sum(axis=1)
        # Whether the entity has stored features is a fact of the store, decided before the request's
        # overrides: a request-time value marks its column present, and counting the merged statuses let
        # one override hide an unknown entity from the 'error' policy (the model got zeros for the rest).
        by_entity = _absent_entities(read, len(rows))
        absent = np.logical_or.reduce(by_entity, axis=0)
        if read is not None and absent.any() and spec.missing_entity_policy != "defaults":
            row = int(np.flatnonzero(absent)[0])
            entity = read.entities[int(np.flatnonzero(by_entity[:, row])[0])]
            keys = {key: rows[row].get(key) for key in entity.join_keys}
            raise NotFound(
                f"row {row}: entity {entity.name} {keys} has no stored features for model {spec.name} "
                f"v{spec.version} (fallback policy 'error')"
            )
        if missing.any():
            fill = _missing_fill(spec, values)
            if fill is not None:
                values = np.where(missing, fill[np.newaxis, :], values)
        facts = tuple(
            RowFacts(bool(absent[i]), int(missing_counts[i]), int(stale_counts[i])) for i in range(len(rows))
        )
        return FeatureMatrix(np.ascontiguousarray(values), facts, online, read)


def _absent_entities(read: ReadResult | None, row_count: int) -> npt.NDArray[np.bool_]:
    """[entities of the read, rows]: where a row's entity has no stored features, no view of it the model
    reads holding its key. Per entity, as the policy says: a model may read the views of several (a driver
    and a rider), and judging the row as a whole served an unknown rider with its features filled because
    the driver was stored. Not an entity whose blob holds only nulls: it is stored (its key, its event
    time), and its nulls are missing values like any other, filled as :func:`_missing_fill` says."""
    if read is None or not read.blocks:
        return np.zeros((0, row_count), np.bool_)
    absent = np.ones((len(read.entities), row_count), np.bool_)
    for block in read.blocks:
        here = np.zeros(row_count, np.bool_)
        here[list(block.absent_rows)] = True
        absent[block.plan.entity_slot] &= here
    return absent


def _missing_fill(spec: ModelSpec, values: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
    """What each missing value (no key, or a null in the blob) becomes, per column, or None to keep the
    zero the reader wrote. The deployment's ``feature_defaults`` when set, for every missing value whatever
    the policy (the policy only decides whether an entity with no stored features is refused). Else NaN
    for a float input of a model that takes non-finite values (``allow_non_finite``; set for every version
    whose signature says it imputes missing values itself, as the built-in trainer's do): such a model was
    trained with missing = NaN and imputes it, so a 0 would be a real value it never saw in its place."""
    if spec.feature_defaults:
        if len(spec.feature_defaults) != values.shape[1]:  # the model's config, not the caller
            raise FailedPrecondition(
                f"model {spec.name}: {len(spec.feature_defaults)} feature defaults for "
                f"{values.shape[1]} features"
            )
        return np.asarray(spec.feature_defaults, values.dtype)
    if spec.allow_non_finite and values.dtype.kind == "f":
        return np.full(values.shape[1], np.nan, values.dtype)
    return None
