"""The monitor's count of prediction rows logged under a request id (and row) that another prediction of
their deployment was indexed under: the index keeps the first, which keeps the label
(:mod:`.feedback`), and the later one is not indexed. Clients choose request ids; one that re-uses them
gets its labels joined to whichever prediction came first, so the rows are counted
(``aether_monitor_duplicate_request_ids_total{deployment}``) and said in a warning once per deployment in
this process (the monitor reads many entries a second), never left out silently.

At least once across a restart, not exactly: the entries pending at a stop (the open windows') are read
again by the next process, and a duplicate among them is still another prediction than the indexed one,
so its rows are counted again (``tests/unit/monitoring/test_duplicate_request_ids.py``). A re-read is told
from a duplicate by content (:mod:`.feedback`), which a duplicate read twice does not change; only the
counted rows stored with the index would tell (a process cannot know whether the one before it counted an
entry it read but never applied), so the count is documented as at least once rather than kept exact.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from control_plane.monitoring.entries import LoggedPrediction


class DuplicateRequestIds:
    def __init__(self, counter: Counter, log: logging.Logger) -> None:
        self._counter = counter
        self._log = log
        self._said: set[str] = set()

    def count(self, logged: LoggedPrediction, rows: int) -> None:
        """Counts ``rows`` rows of ``logged`` left out of the index as duplicates."""
        self._counter.labels(logged.deployment).inc(rows)
        if logged.deployment in self._said:
            return
        self._said.add(logged.deployment)
        self._log.warning(
            "deployment %r: request id %r (%d rows, logged by %s v%d at %d µs) names a prediction already"
            " indexed, another one: labels of that id join the first prediction, and this one is not"
            " indexed (duplicate request id; counted in aether_monitor_duplicate_request_ids_total, said"
            " once per deployment). Give every Predict call a request id of its own, or none (the data"
            " plane then makes one)",
            logged.deployment,
            logged.request_id,
            rows,
            logged.model,
            logged.version,
            logged.ts_us,
        )
