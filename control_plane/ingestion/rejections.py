"""Why records fail validation, and what a failed record becomes (split from ``validation``): the reasons
gathered per failing row (``Reasons``), the table of rejected records the quarantine stores
(``REJECTED_SCHEMA``: row index, the original row as JSON, every reason ``; ``-separated) and the message
strict mode raises, naming the first offending rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from control_plane.ingestion.shown_values import record_json, temporal_as_text

#: Offending records named in a strict-mode error.
STRICT_REPORT_LIMIT = 5

REJECTED_SCHEMA = pa.schema([("row_index", pa.int64()), ("payload", pa.string()), ("reason", pa.string())])


class Reasons:
    """Reasons per failing row; filled only for failing rows, so valid data costs no Python loop."""

    def __init__(self) -> None:
        self.by_row: dict[int, list[str]] = defaultdict(list)

    def add(self, mask: npt.NDArray[np.bool_], reason_for: Any) -> None:
        for row in np.flatnonzero(mask).tolist():
            self.by_row[row].append(reason_for(row))


def rejected_table(table: pa.Table, reasons: Reasons) -> pa.Table:
    rows = sorted(reasons.by_row)
    if not rows:
        return REJECTED_SCHEMA.empty_table()
    originals = temporal_as_text(table.take(pa.array(rows, pa.int64()))).to_pylist()
    if not table.num_columns:  # rows without columns (legal Arrow): to_pylist gives no row for them
        originals = [{} for _ in rows]
    return pa.Table.from_pydict(
        {
            "row_index": rows,
            "payload": [record_json(record) for record in originals],
            "reason": ["; ".join(reasons.by_row[row]) for row in rows],
        },
        schema=REJECTED_SCHEMA,
    )


def strict_message(reasons: Reasons, total: int) -> str:
    rows = sorted(reasons.by_row)
    shown = "; ".join(f"row {row}: {', '.join(reasons.by_row[row])}" for row in rows[:STRICT_REPORT_LIMIT])
    more = f" (and {len(rows) - STRICT_REPORT_LIMIT} more)" if len(rows) > STRICT_REPORT_LIMIT else ""
    return f"{len(rows)} of {total} records failed validation: {shown}{more}"
