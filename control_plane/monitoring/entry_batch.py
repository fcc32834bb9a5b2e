"""One read of the prediction log, decoded and indexed before the monitor applies any of it to its windows.

Each entry decodes (:func:`decode`) to what it holds for monitoring and its rows for the prediction index,
or to why it holds nothing: ``skipped`` (shadow, failed, unsampled, trimmed while pending) or
``malformed`` (its bytes cannot be decoded, or the database refuses its index rows: counted, logged,
acknowledged, never stopping the reader). :func:`index` indexes a batch's rows in one statement, and entry
by entry when a value of one of them is refused, so that only that entry is lost; rows the index leaves out
as another prediction's request id (:func:`.feedback.index_predictions`) are kept on their entry
(``duplicate_rows``) for the monitor to count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.monitoring.entries import LoggedPrediction, decode_entry
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions
from control_plane.monitoring.index_rows import index_rows

Outcome = Literal["monitored", "skipped", "malformed"]


@dataclass
class DecodedEntry:
    """One entry of a batch, decoded (nothing applied yet): its monitored content and index rows."""

    entry_id: bytes
    outcome: Outcome
    logged: LoggedPrediction | None = None
    index_rows: list[IndexedPrediction] = field(default_factory=list)
    problem: BaseException | None = None
    #: The output the config names, when the entry's answer lacks it (its rows are indexed valueless).
    missing_output: str | None = None
    #: Its rows not indexed: another prediction of the deployment holds their request id and row.
    duplicate_rows: int = 0

    def refuse(self, problem: BaseException) -> None:
        self.outcome, self.logged, self.index_rows, self.problem = "malformed", None, [], problem


def decode(
    entry_id: bytes, fields: dict[bytes, bytes] | None, config: Callable[[str], pb.MonitorConfig]
) -> DecodedEntry:
    """The entry ``entry_id`` with ``fields`` (None: trimmed from the stream while pending), its index
    rows by the deployment's ``config``."""
    if fields is None:  # trimmed from the stream while pending
        return DecodedEntry(entry_id, "skipped")
    try:
        logged = decode_entry(fields)
        if logged is None:
            return DecodedEntry(entry_id, "skipped")
        rows, missing = index_rows(config(logged.deployment), logged)
        return DecodedEntry(entry_id, "monitored", logged, rows, missing_output=missing)
    except Exception as exc:  # MalformedEntry, or a decoding bug: either way this entry's problem only
        return DecodedEntry(entry_id, "malformed", problem=exc)


async def index(sessions: sessionmaker[Session], batch: list[DecodedEntry]) -> None:
    """Indexes the rows of ``batch``; an entry whose rows the database refuses is refused (malformed)."""
    rows = [row for decoded in batch for row in decoded.index_rows]
    try:
        indexed = await asyncio.to_thread(index_predictions, sessions, rows)
        _note_duplicates(batch, indexed.duplicates)
    except (sqlalchemy.exc.DataError, InvalidArgument):
        # A value the database refuses, or the engine before it (text holding NUL), fails the whole
        # statement, and would again on every retry: index entry by entry, so only that entry is lost.
        for decoded in batch:
            if decoded.index_rows:
                try:
                    indexed = await asyncio.to_thread(index_predictions, sessions, decoded.index_rows)
                    _note_duplicates([decoded], indexed.duplicates)
                except (sqlalchemy.exc.DataError, InvalidArgument) as exc:
                    decoded.refuse(exc)


def _note_duplicates(batch: list[DecodedEntry], duplicates: list[IndexedPrediction]) -> None:
    """Counts on each entry of ``batch`` its rows among ``duplicates`` (the very row objects it gave)."""
    left_out = {id(row) for row in duplicates}
    for decoded in batch:
        decoded.duplicate_rows = sum(1 for row in decoded.index_rows if id(row) in left_out)
