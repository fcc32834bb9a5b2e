"""The online read path, transport-free: references + entity rows in, packed feature blocks out.

One request = one compiled plan (cached) + at most one Redis round trip (one MGET over every key of every
row and view version) + one decode per blob. Whole-view reads of rows without nulls are a byte
concatenation of blob payloads; only column subsets and nulls go through numpy.

With a near cache (``data_plane.near_cache``), the blobs it holds are taken from memory and the MGET asks
only for the others (none: no round trip); what the MGET brings back is stored as it arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import online_features_pb2
from clients.errors import (
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES
from data_plane.blob_shape import EVENT_TS
from data_plane.catalog import Catalog, RegistryState
from data_plane.model_references import model_reference_error
from data_plane.near_cache import MISS, NearCache
from data_plane.plan import BlockPlan, JoinKeyLimit, ReadPlan
from data_plane.redis_client import RedisClient
from data_plane.redis_errors import RedisCommandError, RedisMisconfigured, RedisUnavailable
from data_plane.schema import EntitySpec, ViewVersion
from kernels.packed_blob import HEADER_SIZE, BlobError, decode

PRESENT = online_features_pb2.PRESENT
MISSING = online_features_pb2.MISSING
STALE = online_features_pb2.STALE


#: The setting of :attr:`ReadLimits.max_features` (``data_plane.settings``), named by the errors it causes.
MAX_FEATURES_SETTING = "AETHER_MAX_FEATURES_PER_REQUEST"


@dataclass(frozen=True, slots=True)
class ReadLimits:
    max_rows: int = 1000
    max_features: int = 10_000
    redis_timeout_s: float = 0.5  # cap on the Redis wait when the caller's deadline is longer (or absent)
    # The longest string join key a row may give, in bytes of UTF-8, when the registry snapshot does not
    # say the control plane's (an older control plane): ingestion's limit, so a longer key names nothing
    # stored and is refused before the MGET (``data_plane.plan``). The snapshot's limit comes first.
    max_join_key_bytes: int = DEFAULT_MAX_JOIN_KEY_BYTES


@dataclass(frozen=True, slots=True)
class BlockResult:
    plan: BlockPlan
    values: bytes  # [rows, columns] row-major in plan.out_dtype
    statuses: bytes  # uint8 [rows, columns]
    event_timestamps_us: bytes  # int64 [rows]
    # The rows whose key Redis does not hold (every column MISSING). A stored blob whose values are all
    # null has every column MISSING too, but the entity is stored: only these rows have no stored features.
    absent_rows: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one read brought back from Redis, before assembly."""

    plan: ReadPlan
    row_count: int
    keys: list[bytes]  # row-major: key r * len(plan.blocks) + b
    blobs: list[bytes | None]  # the MGET's values, in the order of keys (None where absent)
    now_us: int  # wall clock when they arrived: the reference for staleness


@dataclass(frozen=True, slots=True)
class ReadResult:
    row_count: int
    blocks: tuple[BlockResult, ...]
    # The entities the rows name, as the plan has them (a block's ``plan.entity_slot`` indexes them).
    entities: tuple[EntitySpec, ...] = ()


def redis_budget_s(time_remaining_s: float | None, cap_s: float) -> float:
    """How long the Redis call may take: the cap, or less so that an UNAVAILABLE answer still reaches a
    caller whose deadline is shorter (a fifth of what is left, at most 50 ms, is kept for the reply)."""
    if time_remaining_s is None:
        return cap_s
    margin = min(0.05, time_remaining_s * 0.2)
    return min(cap_s, time_remaining_s - margin)


class OnlineReader:
    def __init__(
        self,
        registry: RegistryState,
        redis: RedisClient,
        limits: ReadLimits,
        near_cache: NearCache | None = None,
    ) -> None:
        """``near_cache`` must be the ``tracking`` listener of ``redis``: only then does it hear of
        changes."""
        self._registry = registry
        self._redis = redis
        self._limits = limits
        self._own_key_limit = JoinKeyLimit(limits.max_join_key_bytes)  # when the catalog names none
        self._cache = near_cache

    def catalog(self) -> Catalog:
        """The catalog reads use now (UNAVAILABLE while no registry snapshot has arrived)."""
        return self._registry.require()

    async def read(
        self,
        refs: Sequence[str],
        rows: Sequence[Mapping[str, str]],
        time_remaining_s: float | None = None,
        model: str | None = None,
    ) -> ReadResult:
        """``model``: the model (name and version) whose configuration lists ``refs``, for Predict. More
        features than the limit are then FAILED_PRECONDITION naming it, not RESOURCE_EXHAUSTED: the
        caller sent entity ids, and only raising the limit or changing the model serves them; and references
        that cannot be read are a :class:`~data_plane.model_references.ModelReferenceError` naming it."""
        if model is not None:
            self._check_model(model, len(refs))
        self._check_counts(len(refs), len(rows))
        catalog = self._registry.require()
        try:
            plan = catalog.plan(refs)
        except (NotFound, InvalidArgument) as exc:  # the references themselves: the model's, when it has them
            if model is None:
                raise
            raise model_reference_error(exc, model) from None
        if model is not None:
            self._check_model(model, plan.feature_count, resolved=True)
        return assemble(await self._fetch(catalog, plan, rows, time_remaining_s))

    async def read_wire(
        self,
        features_wire: bytes,
        ref_count: int,
        rows: Sequence[Mapping[str, str]],
        time_remaining_s: float | None = None,
    ) -> ReadResult:
        """:meth:`read` for ``ref_count`` references still serialized (:meth:`Catalog.plan_for_wire`)."""
        return assemble(await self.fetch_wire(features_wire, ref_count, rows, time_remaining_s))

    async def fetch_wire(
        self,
        features_wire: bytes,
        ref_count: int,
        rows: Sequence[Mapping[str, str]],
        time_remaining_s: float | None = None,
    ) -> Fetched:
        """The blobs of :meth:`read_wire`, not yet assembled (:func:`assemble` does that; a one-row
        answer can also be written straight from them, ``data_plane.one_row``)."""
        self._check_counts(ref_count, len(rows))
        catalog = self._registry.require()
        plan = catalog.plan_for_wire(features_wire)
        return await self._fetch(catalog, plan, rows, time_remaining_s)

    @property
    def limits(self) -> ReadLimits:
        return self._limits

    def _check_model(self, model: str, count: int, resolved: bool = False) -> None:
        limit = self._limits.max_features
        if count > limit:
            what = "online features" if resolved else "online feature references"
            raise FailedPrecondition(
                f"model {model} reads {count} {what}; this data plane reads at most {limit} features "
                f"per request: raise {MAX_FEATURES_SETTING} to serve it (or have the model read fewer)"
            )

    def _check_counts(self, ref_count: int, row_count: int) -> None:
        """Before compiling: a huge request is refused before any work is spent on it."""
        limits = self._limits
        if row_count > limits.max_rows:
            raise ResourceExhausted(
                f"{row_count} entity rows requested; the limit is {limits.max_rows} per request"
            )
        if ref_count > limits.max_features:
            raise ResourceExhausted(
                f"{ref_count} feature references; the limit is {limits.max_features} features per request"
            )

    async def _fetch(
        self,
        catalog: Catalog,
        plan: ReadPlan,
        rows: Sequence[Mapping[str, str]],
        time_remaining_s: float | None,
    ) -> Fetched:
        """The one round trip; the callers have checked the request's counts. ``plan`` is ``catalog``'s,
        whose snapshot says the control plane's join-key limit (else this data plane's own applies)."""
        limits = self._limits
        if plan.feature_count > limits.max_features:
            raise ResourceExhausted(
                f"the references resolve to {plan.feature_count} features; the limit is "
                f"{limits.max_features} features per request"
            )
        keys = plan.keys(rows, catalog.join_key_limit or self._own_key_limit)
        blobs: list[bytes | None] = []
        if keys:
            if time_remaining_s is not None and time_remaining_s <= 0:
                # The caller's deadline, not the store: UNAVAILABLE would blame a healthy Redis (and count
                # against the serving version as a server-side failure).
                raise DeadlineExceeded("the deadline passed before the online features were read")
            budget = redis_budget_s(time_remaining_s, limits.redis_timeout_s)
            try:
                if self._cache is None:
                    blobs = await self._redis.mget(keys, budget)
                else:
                    blobs = await self._cached_mget(self._cache, plan, keys, budget)
            except RedisUnavailable as exc:  # down, hung, or busy (loading after a restart...): retryable
                raise Unavailable(f"online store unavailable: {exc}") from None
            except RedisMisconfigured as exc:  # the URL's credentials, or a cluster node: a setting to fix
                raise FailedPrecondition(str(exc)) from None
            except RedisCommandError as exc:
                raise Internal(f"online store refused MGET: {exc}") from None
            if len(blobs) != len(keys):
                raise Internal(f"MGET of {len(keys)} keys returned {len(blobs)} values")
        return Fetched(plan, len(rows), keys, blobs, time.time_ns() // 1000)

    async def _cached_mget(
        self, cache: NearCache, plan: ReadPlan, keys: list[bytes], budget_s: float
    ) -> list[bytes | None]:
        """The blobs of ``keys``: from the near cache where it holds them and Redis has sent nothing unread
        (an unapplied invalidation), the rest by one MGET whose reply the cache keeps."""
        redis = self._redis
        if redis.tracking_refused:  # no cache to ask or count misses of: a plain read
            return await redis.mget(keys, budget_s)
        quiet = redis.quiet()
        if not quiet and redis.tracking:
            # Bytes from Redis are waiting, most often other reads' replies under load: one turn of the
            # event loop reads them (and applies any invalidation among them) before the cache is asked.
            # Without it, each read that bypassed the cache put a reply in flight that made the next ones
            # bypass it too, and a warm cache under load kept missing.
            await asyncio.sleep(0)
            quiet = redis.quiet()
        if quiet:
            blobs = cache.lookup(keys, time.time())
            wanted = [i for i, blob in enumerate(blobs) if blob is MISS]
            if not wanted:
                return blobs  # the usual read of a warm cache: nothing more to build
            if len(wanted) < len(keys):
                ttls = _view_ttls(plan)
                missing = [keys[i] for i in wanted]
                missing_ttls = [ttls[i % len(ttls)] for i in wanted]
                fetched = await self._redis.mget(
                    missing, budget_s, lambda reply: cache.store(missing, reply, missing_ttls, time.time())
                )
                if len(fetched) != len(missing):
                    raise Internal(f"MGET of {len(missing)} keys returned {len(fetched)} values")
                for i, blob in zip(wanted, fetched, strict=True):
                    blobs[i] = blob
                return blobs
        else:  # not looked up: each key is a miss all the same (a lookup that missed them all counted them)
            cache.missed(len(keys))
        ttls = _view_ttls(plan)
        all_ttls = ttls * (len(keys) // len(ttls))
        return await self._redis.mget(
            keys, budget_s, lambda reply: cache.store(keys, reply, all_ttls, time.time())
        )


def _view_ttls(plan: ReadPlan) -> list[int]:
    """Each block's view TTL, in block order: key ``i`` of a read belongs to block ``i % len(...)``."""
    return [block.view.ttl_seconds for block in plan.blocks]


def assemble(fetched: Fetched) -> ReadResult:
    """The blocks of a fetch: one per block of the plan, rows in request order."""
    plan, keys, blobs, now_us = fetched.plan, fetched.keys, fetched.blobs, fetched.now_us
    stride = len(plan.blocks)
    return ReadResult(
        row_count=fetched.row_count,
        blocks=tuple(
            assemble_block(block, blobs[b::stride], keys[b::stride], now_us)
            for b, block in enumerate(plan.blocks)
        ),
        entities=plan.entities,
    )


def assemble_block(
    block: BlockPlan, blobs: Sequence[bytes | None], keys: Sequence[bytes], now_us: int
) -> BlockResult:
    """One block from the blobs of its rows: null-free blobs are validated by their fixed 16-byte head
    and length (see ``data_plane.blob_shape``) and all decoded by one ``numpy.frombuffer``."""
    if len(blobs) == 1:
        one = _assemble_single_row(block, blobs[0], now_us)
        if one is not None:
            return one
    view = block.view
    shape = view.blob
    size, head, zero = shape.size, shape.head, shape.zero
    parts: list[bytes] = []
    missing: list[int] = []
    nulls: list[tuple[int, npt.NDArray[np.bool_]]] = []
    for row, blob in enumerate(blobs):
        if blob is None:
            parts.append(zero)  # zero values, event timestamp 0
            missing.append(row)
        elif len(blob) == size and blob.startswith(head):
            parts.append(blob)
        else:
            parts.append(_decode_with_nulls(blob, view, keys[row], row, nulls))
    records = np.frombuffer(parts[0] if len(parts) == 1 else b"".join(parts), dtype=shape.record)
    event_ts = records["event_ts"]
    stale: npt.NDArray[np.bool_] | None = None
    if view.ttl_seconds > 0:
        stale = event_ts < now_us - view.ttl_seconds * 1_000_000
        stale[missing] = False
        if not stale.any():
            stale = None
    values = records["values"]
    return BlockResult(
        plan=block,
        values=values.tobytes() if block.whole_view else _select(block, values),
        statuses=_statuses(block, len(blobs), missing, stale, nulls),
        event_timestamps_us=event_ts.tobytes(),
        absent_rows=tuple(missing),
    )


_NO_EVENT_TS = bytes(8)
_ABSENT_ONE = (0,)


def _assemble_single_row(block: BlockPlan, blob: bytes | None, now_us: int) -> BlockResult | None:
    """The one-entity read (what serving does per request) in plain bytes operations, or None when the
    row needs the general path (a blob with nulls or a bad one, or a column subset of a mixed-type view).

    Same result as the general path, which a property test holds it to. Why a second path: the general
    one makes ~a dozen numpy calls, ~6 µs hot but ~40 µs of a serving process's CPU, where caches are
    cold between requests; this one is a few slices."""
    parts = one_row_parts(block, blob, now_us)
    if parts is None:
        return None
    values, status, event_ts = parts
    return BlockResult(
        plan=block,
        values=values,
        statuses=bytes((status,)) * block.column_count,
        event_timestamps_us=event_ts,
        absent_rows=_ABSENT_ONE if blob is None else (),
    )


def one_row_parts(block: BlockPlan, blob: bytes | None, now_us: int) -> tuple[bytes, int, bytes] | None:
    """One row of ``block`` as (values, the status every column shares, event timestamp bytes), or None
    when the row needs the general path (:func:`_assemble_single_row` says which rows)."""
    if blob is None:
        return bytes(block.one_row_value_bytes), MISSING, _NO_EVENT_TS  # zero values, event time 0
    view = block.view
    shape = view.blob
    if len(blob) != shape.size or not blob.startswith(shape.head):
        return None
    if block.whole_view:
        values = blob[HEADER_SIZE:]
    elif view.layout.names is None:
        values = (
            np.frombuffer(blob, dtype=view.layout, offset=HEADER_SIZE).take(block.column_positions).tobytes()
        )
    else:
        return None
    event_ts = blob[EVENT_TS]
    ttl_us = view.ttl_seconds * 1_000_000
    stale = ttl_us > 0 and int.from_bytes(event_ts, "little", signed=True) < now_us - ttl_us
    return values, STALE if stale else PRESENT, event_ts


def _decode_with_nulls(
    blob: bytes, view: ViewVersion, key: bytes, row: int, nulls: list[tuple[int, npt.NDArray[np.bool_]]]
) -> bytes:
    """A blob off the fast path (one with a null bitmap, or a bad one): decoded by the codec, which names
    what is wrong; null values are zeroed (the wire says missing values are zero)."""
    try:
        decoded = decode(blob, view.layout, view.fingerprint, len(view.columns))
    except BlobError as exc:
        raise DataLoss(f"online store key {key.decode(errors='replace')}: {exc}") from None
    values: npt.NDArray[Any] = decoded.values
    if decoded.nulls is not None:
        nulls.append((row, decoded.nulls))
        values = values.copy()
        if view.layout.names is None:
            values[decoded.nulls] = 0
        else:
            for position in np.flatnonzero(decoded.nulls):
                values[f"f{position}"] = 0
    return blob[:HEADER_SIZE] + values.tobytes()


def _select(block: BlockPlan, values: npt.NDArray[Any]) -> bytes:
    """The plan's columns of [rows, count] plain values or [rows] records, in the plan's out dtype."""
    if block.view.layout.names is None:
        return values.take(block.column_positions, axis=1).tobytes()
    out_dtype = block.out_dtype
    if out_dtype.names is None:  # the chosen columns share one type: a plain [rows, columns] array
        plain = np.empty((values.shape[0], block.column_count), dtype=out_dtype)
        for j, name in enumerate(block.column_fields):
            plain[:, j] = values[name]
        return plain.tobytes()
    out = np.empty(values.shape[0], dtype=out_dtype)
    for j, name in enumerate(block.column_fields):
        out[f"f{j}"] = values[name]
    return out.tobytes()


def _statuses(
    block: BlockPlan,
    row_count: int,
    missing: list[int],
    stale: npt.NDArray[np.bool_] | None,
    nulls: list[tuple[int, npt.NDArray[np.bool_]]],
) -> bytes:
    columns = block.column_count
    if not (missing or nulls) and stale is None:
        return bytes(row_count * columns)  # PRESENT == 0
    statuses = np.zeros((row_count, columns), dtype=np.uint8)
    statuses[missing] = MISSING
    if stale is not None:
        statuses[stale] = STALE
    for row, mask in nulls:  # a null is missing whatever its age
        statuses[row, mask[block.column_positions]] = MISSING
    return statuses.tobytes()
