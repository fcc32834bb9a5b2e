"""Compiled read plans: what one tuple of feature references resolves to against one catalog.

A plan holds, per view version read (a block, in order of first reference), the layout to decode, the
columns to return and the Redis key suffix; and the entities whose join keys each row must carry. Plans
are pure data computed once per distinct tuple of references (the catalog caches them); per request only
the rows are validated and turned into keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import online_features_pb2
from clients.errors import InvalidArgument, NotFound
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES, MAX_JOIN_KEY_BYTES_VARIABLE
from data_plane.refs import parse_ref
from data_plane.schema import EntitySpec, ViewVersion
from data_plane.wire import OneRowFrame, block_prefix, one_row_frame
from kernels.online_keys import entity_tag
from kernels.packed_blob import layout_dtype

if TYPE_CHECKING:
    from data_plane.catalog import Catalog

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT64_DIGITS = len(str(_INT64_MAX))  # 19, as for -2**63
_ROW_STATUSES = (online_features_pb2.PRESENT, online_features_pb2.MISSING, online_features_pb2.STALE)


@dataclass(frozen=True, slots=True)
class BlockPlan:
    view: ViewVersion
    whole_view: bool  # every column in registered order: the values are the blob payloads as they are
    column_positions: npt.NDArray[np.intp]  # positions in the view of the returned columns
    column_fields: tuple[str, ...]  # the same positions as record field names (f0, f1...) for mixed views
    out_dtype: np.dtype[np.generic]  # layout of the returned values (plain when the columns share a type)
    entity_slot: int  # index into ReadPlan.entities
    key_suffix: bytes  # b":<view>:v<version>", after the entity's hash tag
    wire_prefix: bytes  # serialized FeatureBlock view/version/columns (data_plane.wire)
    one_row_value_bytes: int  # bytes of one row's values in out_dtype
    one_row_frame: OneRowFrame  # the constant parts of this block in a one-row response

    @property
    def column_count(self) -> int:
        return len(self.column_positions)


#: Where the limit of :class:`JoinKeyLimit` was set, as its refusal names it: the control plane's setting,
#: sent with its registry snapshot, or (a snapshot of an older control plane names none) this process's.
CONTROL_PLANES_LIMIT = f"the control plane's {MAX_JOIN_KEY_BYTES_VARIABLE}"
OWN_LIMIT = f"this data plane's {MAX_JOIN_KEY_BYTES_VARIABLE}"


@dataclass(frozen=True, slots=True)
class JoinKeyLimit:
    """The longest string join key a read may name, in bytes of UTF-8, and the setting it came from (named
    in the refusal, so that it says which process's ``AETHER_MAX_JOIN_KEY_BYTES`` to look at)."""

    max_bytes: int
    set_by: str = OWN_LIMIT


DEFAULT_JOIN_KEY_LIMIT = JoinKeyLimit(DEFAULT_MAX_JOIN_KEY_BYTES)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    refs: tuple[str, ...]
    blocks: tuple[BlockPlan, ...]
    entities: tuple[EntitySpec, ...]
    feature_count: int

    def keys(
        self, rows: Sequence[Mapping[str, str]], key_limit: JoinKeyLimit = DEFAULT_JOIN_KEY_LIMIT
    ) -> list[bytes]:
        """Redis keys of every (row, block), row-major: key ``r * len(blocks) + b``.

        The layout is ``kernels.online_keys.online_key``'s (a unit test holds them equal); it is assembled
        from the entity's hash tag once per row rather than per view. A string join key longer than
        ``key_limit`` is INVALID_ARGUMENT (:func:`check_key_length`)."""
        keys: list[bytes] = []
        blocks = self.blocks
        entities = self.entities
        for index, row in enumerate(rows):
            tags = [b"ae:{" + _tag(entity, row, index, key_limit).encode() + b"}" for entity in entities]
            for block in blocks:
                keys.append(tags[block.entity_slot] + block.key_suffix)
        return keys


def _tag(entity: EntitySpec, row: Mapping[str, str], index: int, key_limit: JoinKeyLimit) -> str:
    max_key_bytes = key_limit.max_bytes
    values = []
    for key, is_integer in zip(entity.join_keys, entity.integer_keys, strict=True):
        value = row.get(key)
        if value is None:
            raise InvalidArgument(f"row {index} has no value for join key {key!r} of entity {entity.name!r}")
        if is_integer:
            value = canonical_int64(value, index, key)  # at most 20 characters, or refused
        elif len(value) > max_key_bytes // 4:  # else its UTF-8 fits: 4 bytes at most per character
            check_key_length(value, index, key, key_limit)
        values.append(value)
    return entity_tag(entity.name, values)


def check_key_length(text: str, row_index: int, key: str, key_limit: JoinKeyLimit) -> None:
    """INVALID_ARGUMENT when the string join key ``text`` is longer than ``key_limit`` (bytes of UTF-8).

    Ingestion quarantines such a key (``control_plane.ingestion.key_length``, by the control plane's
    ``AETHER_MAX_JOIN_KEY_BYTES``, which its registry snapshot carries here), so none is stored: sent on, a
    5 MB key made a 5 MB MGET for a value that cannot be there. Only keys of more than a quarter of the
    limit in characters come here (a shorter one fits, at most 4 bytes a character), and only those not
    ASCII are encoded to count them."""
    size = len(text) if text.isascii() else len(text.encode())
    if size > key_limit.max_bytes:
        raise InvalidArgument(
            f"row {row_index}: join key {key!r} = {_shown(text)} is {size:,} bytes of UTF-8, longer than the"
            f" limit of {key_limit.max_bytes:,} bytes for a join key ({key_limit.set_by}); no key that"
            " long can have been ingested"
        )


def _shown(text: str) -> str:
    """``text`` quoted, or its start quoted and its length when too long to quote whole in a message."""
    return repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text):,} characters)"


def canonical_int64(text: str, row_index: int, key: str) -> str:
    """Decimal text of an INT64 join key in canonical form ("007" -> "7", "-0" -> "0"), so that every
    spelling of one number finds the same Redis key."""
    digits = text[1:] if text[:1] == "-" else text
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidArgument(f"row {row_index}: join key {key!r} must be a decimal integer, got {text!r}")
    if digits[0] != "0" and len(digits) < 19 and text[0] != "-":
        return text  # already canonical and in range: the common case, no conversion
    # Without its leading zeros, any spelling of an int64 has at most 19 digits. Counted before int(),
    # which raises ValueError (INTERNAL) past 4,300 digits, even for "000...007".
    significant = digits.lstrip("0") or "0"
    if len(significant) <= _INT64_DIGITS:
        number = -int(significant) if text[0] == "-" else int(significant)
        if _INT64_MIN <= number <= _INT64_MAX:
            return str(number)
    raise InvalidArgument(f"row {row_index}: join key {key!r} = {_clipped(text)} is out of the int64 range")


def _clipped(text: str) -> str:
    """``text``, or its start and its length when too long to quote whole in a message."""
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def compile_plan(catalog: Catalog, refs: tuple[str, ...]) -> ReadPlan:
    order: list[tuple[str, int]] = []
    whole: dict[tuple[str, int], bool] = {}
    selected: dict[tuple[str, int], dict[int, None]] = {}  # insertion-ordered set of positions
    versions: dict[tuple[str, int], ViewVersion] = {}
    for text in refs:
        ref = parse_ref(text)
        view = catalog.view_version(ref.view, ref.version)
        ident = (view.name, view.version)
        if ident not in versions:
            versions[ident] = view
            order.append(ident)
            whole[ident] = False
            selected[ident] = {}
        if ref.feature is None:
            whole[ident] = True
            continue
        position = view.column_index.get(ref.feature)
        if position is None:
            raise NotFound(f"feature view {view.label} has no feature {ref.feature!r}")
        selected[ident][position] = None

    entities: list[EntitySpec] = []
    slots: dict[str, int] = {}
    blocks: list[BlockPlan] = []
    for ident in order:
        view = versions[ident]
        if view.entity not in slots:
            slots[view.entity] = len(entities)
            entities.append(catalog.entity(view.entity, for_view=view.name))
        positions = list(range(len(view.columns))) if whole[ident] else list(selected[ident])
        out_dtype = layout_dtype([view.dtype_names[p] for p in positions])
        # Mixed types come back as one packed record per row, one type as a plain [rows, columns] array.
        row_bytes = out_dtype.itemsize if out_dtype.names is not None else len(positions) * out_dtype.itemsize
        prefix = block_prefix(
            view.name, view.version, [(view.columns[p], view.value_types[p]) for p in positions]
        )
        blocks.append(
            BlockPlan(
                view=view,
                whole_view=positions == list(range(len(view.columns))),
                column_positions=np.asarray(positions, dtype=np.intp),
                column_fields=tuple(f"f{p}" for p in positions),
                out_dtype=out_dtype,
                entity_slot=slots[view.entity],
                key_suffix=f":{view.name}:v{view.version}".encode(),
                wire_prefix=prefix,
                one_row_value_bytes=row_bytes,
                one_row_frame=one_row_frame(prefix, row_bytes, len(positions), _ROW_STATUSES),
            )
        )
    return ReadPlan(
        refs=refs,
        blocks=tuple(blocks),
        entities=tuple(entities),
        feature_count=sum(b.column_count for b in blocks),
    )
