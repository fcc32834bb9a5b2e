"""Online-store keys of many entities at once, column-wise.

The layout is ``kernels.online_keys``'s; this builds it for a whole column of join values: for the
common case, one join key whose values need no escaping, every key is the same prefix and suffix around
the value, concatenated by Arrow. Anything else goes through ``online_key`` row by row."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from control_plane.ingestion.online import key_texts
from kernels.online_keys import online_key

# Characters ``online_key`` percent-encodes in join values (see kernels/online_keys.py).
_ESCAPED = "[%:|{}]"
_MARKER = "\x00"


class OnlineKeys:
    def __init__(self, entity: str, view: str, version: int) -> None:
        self.entity, self.view, self.version = entity, view, version
        # The key of a marker value, split around it: the text every single-key key shares.
        parts = online_key(entity, [_MARKER], view, version).decode().split(_MARKER)
        self._affixes = (parts[0], parts[1]) if len(parts) == 2 else None

    def of(self, table: pa.Table, key_names: Sequence[str]) -> list[bytes]:
        """The online key of each row's entity."""
        if len(key_names) == 1 and self._affixes is not None and table.num_rows:
            values = table.column(key_names[0]).cast(pa.string())
            if not pc.any(pc.match_substring_regex(values, _ESCAPED)).as_py() and not values.null_count:
                prefix, suffix = self._affixes
                keys = pc.binary_join_element_wise(prefix, values, suffix, "")
                return keys.cast(pa.binary()).to_pylist()  # type: ignore[no-any-return]
        return [online_key(self.entity, k, self.view, self.version) for k in key_texts(table, key_names)]
