"""How a restarted materializer turns the retained messages it applied back into window events.

The applied id set says exactly which messages are in the windows, so the rebuild re-applies exactly
those: each is converted as ingestion converted it (its keys, event time and fields cast to their
types), but no validation rule is applied again. The rules may have changed since a message was
applied (UpdateValidation tightens a rule, and a rule on an aggregated feature is held on each event,
``control_plane/features/aggregated_rules.py``): re-validating under the current ones left an event
applied under an earlier rule out of the rebuilt windows, quarantined nowhere and logged nowhere, and
every feature of its entity changed. A rule decides what enters the windows, once, when a message
arrives; it never takes back what it let in.

A message that cannot even be converted any more (a conversion that ingestion has since made stricter)
cannot be re-applied: the rebuild leaves it out and says so, once, with how many and why the first
failed, never silently.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import cast

import pyarrow as pa
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.ingestion.streaming.source import MessageBatch, utf8_checked
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.ingestion.validation import validate

_log = logging.getLogger("aether.ingestion.stream")
# The rebuild's "now": an applied event's time was checked against the clock when it arrived.
_FAR_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)


def accepted_rows(n: int, rejected: pa.Table) -> list[int]:
    """Row numbers of the accepted records of a batch of ``n`` (validation keeps their order)."""
    if rejected.num_rows == 0:
        return list(range(n))
    dropped = set(rejected.column("row_index").to_pylist())
    return [i for i in range(n) if i not in dropped]


def unruled(view: pb.FeatureView) -> pb.FeatureView:
    """``view`` with no validation rule on any feature: validating against it only converts (join keys,
    event time, each field's type and the conditions the window kernel needs, such as a finite number),
    as the schema of a version never changes. ``max_null_fraction`` 1 allows every null (0, the field's
    default, would allow none); a streaming view's event fields are required whatever their features'
    rules say, as a window cannot aggregate a missing value."""
    copy = pb.FeatureView()
    copy.CopyFrom(view)
    for feature in copy.spec.features:
        feature.validation.CopyFrom(pb.ValidationRule(max_null_fraction=1.0))
    return copy


class Conversion:
    """Converts the applied messages of each page the rebuild reads; counts those it cannot."""

    def __init__(self, view: pb.FeatureView, entity: pb.Entity) -> None:
        self._view, self._entity = unruled(view), entity
        self.failed = 0
        self._first: tuple[str, str] | None = None  # the first message that failed, and why

    def convert(self, applied: MessageBatch) -> tuple[pa.Table, list[str]]:
        """The events of ``applied`` (all of them applied before) and their ids, less those that cannot
        be converted."""
        applied, table, not_utf8 = utf8_checked(applied)
        # No key length limit: these events were applied, under the limit of their day.
        result = validate(
            self._view, self._entity, table, now=_FAR_FUTURE, rejected_before=not_utf8, max_key_bytes=None
        )
        if result.rejected.num_rows:
            self.failed += result.rejected.num_rows
            if self._first is None:
                row = result.rejected.column("row_index")[0].as_py()
                self._first = (applied.ids[row], result.rejected.column("reason")[0].as_py())
        kept = accepted_rows(len(applied), result.rejected)
        return result.accepted, [applied.ids[i] for i in kept]

    def report(self, view_name: str) -> None:
        """Logs, once, the applied messages the rebuild could not re-apply."""
        if self._first is None:
            return
        message_id, reason = self._first
        _log.warning(
            "%s: %d applied messages could not be converted any more and are left out of the rebuilt"
            " windows (the first, %s: %s)",
            view_name, self.failed, message_id, reason,
        )  # fmt: skip


def trim_point(client: redis.Redis, keys: StateKeys) -> tuple[int | None, int | None]:
    """The saved trim point (``trimmed_below``) and the reach of the run that set it, each None if unset."""
    values = cast(list[bytes | str | None], client.mget(keys.trimmed_below, keys.trim_reach))
    below, reach = (None if value is None else int(value) for value in values)
    return below, reach


def warn_if_trimmed(
    view_name: str, since_ms: int, reach_ms: int, trimmed: int | None, trimmed_reach: int | None
) -> None:
    """Warns when an earlier run, with a shorter lateness or window (``trimmed_reach`` ms before its
    resume point, None: not known), trimmed the applied ids this rebuild would read before ``trimmed``:
    whether those messages were applied is no longer known, so they are not re-applied, and windows
    reaching back before it are short until they slide past it. Not with a reach no longer than this
    run's (``reach_ms``): its resume point was at least ``trimmed + trimmed_reach``, and every message
    still to process lies after it, so a rebuild reading from before ``trimmed`` (a group re-created at
    the trim point resumes there) needs none of the trimmed ids."""
    if trimmed is None or since_ms >= trimmed:
        return
    if trimmed_reach is not None and reach_ms <= trimmed_reach:
        return
    _log.warning(
        "%s: the rebuild reads from stream time %d ms, but the applied ids before %d ms were trimmed "
        "by an earlier run with a shorter lateness or window (%s ms, this run's %d ms); events between "
        "are not re-applied, and the windows that reach back before it miss them until they slide past it",
        view_name, since_ms, trimmed, "?" if trimmed_reach is None else trimmed_reach, reach_ms,
    )  # fmt: skip
