"""The stream materializer: reads a view's events from a stream, validates them (rejects go to the
quarantine), aggregates them over sliding windows per entity, and writes the latest values online and
every emitted update (with its event time) to the offline history.

Delivery is at least once; writes are idempotent by message id. The window state lives in memory and
is *derivable*: the set of applied message ids is kept in Redis, committed atomically with the online
blobs (``commit.py``), and on start the state is rebuilt by re-reading the retained stream and
re-applying exactly the applied messages, converted but never validated again (``rebuild.py``: a rule
tightened since does not take back what it let in). So a materializer killed at any point restarts, rebuilds,
reclaims the pending messages of its dead predecessor (``XAUTOCLAIM``), skips those already applied, and
counts nothing twice.

How far back the rebuild reads: windows end at each entity's newest *event* time, not at the clock, so
the rebuild is anchored where the group resumes in the stream (``StreamSource.resume_ms``: its oldest
pending message, else the last delivered one), not at the time of the restart; a materializer that was
down, or lagging, for longer than the longest window would otherwise forget events the windows of its
backlog still hold. Every message still to process lies at or after that point ``R`` in stream time and,
as events reach the stream at most ``lateness_s`` after their event time, has an event time of at least
``R - lateness``; its windows reach back at most the longest window before that, in event time. An
applied event lies there if its event time does, and its event time is at most the skew
(``max_future_skew_s``) after its stream time. So the rebuild re-reads from ``R - max window - lateness -
skew`` (stream time), and is exact while each event's stream time is at most ``lateness_s`` after its
event time and at most ``max_future_skew_s`` before it. Both are enforced: an event whose stream time is
more than ``lateness_s`` after its event time is quarantined with a reason, counted as quarantined, never
applied (``lateness.py``; 0 allows no lateness at all): applied live, it would be missing from the rebuilt
windows, and the values emitted after a restart would depend on when the materializer restarted. So is
one whose event time is more than the source's ``max_future_skew_s`` after its stream time: it moved its
entity's windows ahead of the stream, and the entity's events arriving on time were late. Read back from
``R - max window - lateness`` alone, the rebuild left out an event applied within the skew ahead of its
arrival that arrived just before that point (a restart then changed the values emitted after it:
``tests/integration/ingestion/test_stream_rebuild_ahead_of_arrival.py``). (Stream time
there is ``arrival_times_ms``: on Kafka the partition's, at least the record's own, leaving out records
stamped ahead of the clock.) A stream time more than the source's
``max_future_skew_s`` ahead of the clock is refused first (``StreamSource.ahead_of_clock``): taken as
the stream's time, it made every later event late. The stream must retain that much before the group's
position (trim with ``MINID`` below the group's oldest pending or last delivered id, not by the clock
and not with a small ``MAXLEN``).

Keeping the applied / rejected id sets bounded: each set holds one member per message, scored by its
stream time (a Redis stream id's milliseconds; for Kafka, the greatest record time of its partition up to
it, each record's at most the clock plus the skew when read, see ``KafkaSource.stream_times_ms``; its
resume point is bounded by the score stored for the record there, ``KafkaSource._resume_bounds``), and
nothing removed them, so
Redis memory grew with every message ever processed. Every ``trim_every_s`` the materializer computes
the rebuild's start ``T = R - max window - lateness - skew`` as above, and its commits drop the members scored
below it, in the same transaction. That loses nothing a rebuild needs: a rebuild (now or after any later
restart) reads only messages at or after that point, as ``R`` only moves forward. Nor anything a
redelivery needs: on a Redis stream a message can only be delivered again while it is pending, at or
after ``R``, since the commit acknowledges (XACK) what it adds to the sets. Kafka acknowledges outside
the commit, by committed offsets: a record may come back while it is at or after its partition's
committed offset, which is the batch being committed (its ids are added after the trim) and the records
acknowledged behind a gap (``held_ids``: the trim raises their members to ``T`` first, so it spares
them); a record stamped before ``T`` is thus kept while it may come back. Kafka ids that earlier
versions scored by their partition are never trimmed (``trim_floor_ms``). Rewinding a group (``XGROUP
SETID`` to an earlier id, or a Kafka group's offsets) below the trimmed point makes the messages read
again count as new; a Redis group that is lost alone (``XGROUP DESTROY``) is re-created at the trimmed
point, not below it (``redis_source.py``). The trim point is kept (``trimmed_below``), never lowered
(a lower one, from a longer lateness or window or from a group re-created at the point, would mark ids
already dropped from the sets as unprocessed), with the reach that set it (window plus lateness plus skew,
``trim_reach``): a later run with a longer reach, whose rebuild would read from before it, logs a warning
that the events before it are not re-applied (their windows are short until they slide past it). Only a
new stream (deleted, written again) resets it, with the sets: they are the old stream's (``redis_source.py``).
A rejected id of a Redis stream whose stream time is ahead of the clock (a producer's explicit id, and
every ``*`` id after it) would lie above every trim point: it is kept apart, scored by the time it was
refused, and trimmed once acknowledged (``StateKeys.refused_ahead``; a lost group comes back after the
greatest one trimmed, ``refused_ahead_through``).

One materializer owns a (view version, group) at a time: starting takes ownership, and the commit
transaction refuses writes from a fenced-out predecessor.

A retired or deleted view version takes no more batches: each commit reads the version's status in SQL,
holding the row until the Redis transaction has run (``commit_gate.py``), and stops the materializer
(``ViewRetired`` / ``ViewDeleted``) instead of committing once it is gone; the status is also read every
``status_every_s`` busy or idle, so an idle materializer stops too.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import NoReturn, TypeVar, cast

import numpy as np
import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from control_plane.features.online_writer import expiry_ms
from control_plane.ingestion.quarantine import RunSource, bounded_id
from control_plane.ingestion.streaming.aggregator import WindowAggregator, wall_clock_us
from control_plane.ingestion.streaming.clock_agreement import RedisClockCheck
from control_plane.ingestion.streaming.commit import (
    ALREADY_COMMITTED,
    COMMITTED,
    FENCED,
    Committer,
    Trim,
)
from control_plane.ingestion.streaming.commit_gate import CommitGate
from control_plane.ingestion.streaming.drain_retry import COMMIT, draining
from control_plane.ingestion.streaming.lateness import refused_on_arrival
from control_plane.ingestion.streaming.metrics import MaterializerMetrics
from control_plane.ingestion.streaming.options import BatchStats, MaterializerOptions
from control_plane.ingestion.streaming.outbox import Receipt, drain
from control_plane.ingestion.streaming.rebuild import Conversion, accepted_rows, trim_point, warn_if_trimmed
from control_plane.ingestion.streaming.redis_access import check_scripting
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.rule_refresh import RuleRefresh
from control_plane.ingestion.streaming.source import MessageBatch, StreamSource, utf8_checked
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.ingestion.streaming.status_check import StatusCheck

# Re-exported: callers (``__main__``, tests) import the stops from this module, where they began.
from control_plane.ingestion.streaming.stops import Fenced as Fenced
from control_plane.ingestion.streaming.stops import ViewDeleted as ViewDeleted
from control_plane.ingestion.streaming.stops import ViewRetired as ViewRetired
from control_plane.ingestion.tables import RUN_ID_LENGTH, SOURCE_LENGTH
from control_plane.ingestion.validation import timestamp_field, validate
from control_plane.ingestion.version_gate import DELETED, RETIRED
from control_plane.offline.store import OfflineStore

T = TypeVar("T")
_log = logging.getLogger("aether.ingestion.stream")
DEFAULT_OPTIONS = MaterializerOptions()  # frozen: one shared default is safe
REJECTED_RECORDS = pa.schema([("record_key", pa.string()), ("payload", pa.string()), ("reason", pa.string())])


class StreamMaterializer:
    def __init__(
        self,
        view: pb.FeatureView,
        entity: pb.Entity,
        source: StreamSource,
        client: redis.Redis,
        sessions: sessionmaker[Session],
        offline: OfflineStore,
        options: MaterializerOptions = DEFAULT_OPTIONS,
        stop: threading.Event | None = None,
        clock_us: Callable[[], int] = wall_clock_us,
    ) -> None:
        self.view, self.entity, self.source, self.options = view, entity, source, options
        # Set when the process is asked to stop: a drain waiting out a database outage then ends.
        self.stop = stop or threading.Event()
        self._client, self._sessions, self._offline = client, sessions, offline
        # ``clock_us``: the host's clock, which ingestion (write) times are read from.
        self.windows = WindowAggregator(view, entity, timestamp_field(view), clock_us)
        name, version = view.spec.name, view.version
        self.keys = StateKeys.of(name, version, options.group)
        # Bounded to their columns: a 100-character view read from a stream named after it made a run id
        # past VARCHAR(200), and every outbox drain failed on PostgreSQL (writing its offline rows again).
        run_id = bounded_id(f"stream:{source.name}:{options.group}:{name}:v{version}", RUN_ID_LENGTH)
        self.run = RunSource(run_id, name, version, "stream", bounded_id(source.name, SOURCE_LENGTH))
        self._token = uuid.uuid4().hex
        acked_stream = source.name if source.acks_in_commit else None
        self._committer = Committer(
            client, self.keys, acked_stream, options.group, self._token, (run_id, self.run.source_id)
        )
        self._clock_check: RedisClockCheck | None = None  # Kafka's record times are its producers'
        if isinstance(source, RedisStreamSource):  # a lost group comes back after the ids trimmed
            source.processed_below(self.keys, self._committer.state_reset)
            self._clock_check = RedisClockCheck(client, source.name, source.max_future_skew_s)
        source.recorded_scores_from(self._recorded_scores)  # Kafka's resume point is bounded by them
        source.keys_as_text([key.name for key in entity.join_keys if key.value_type == types_pb2.STRING])
        self.metrics = MaterializerMetrics(name, options.lag_alert_seconds, options.metrics_port)
        self._next_reclaim = 0.0
        self._next_lag = 0.0
        self._next_drain = 0.0
        self._next_trim = 0.0
        self._next_status = 0.0
        self._next_rules = 0.0
        self._rules = RuleRefresh(sessions)
        self._status = StatusCheck(sessions, view)  # a database down is retried at the next check
        self._gate = CommitGate(sessions, view)
        self._trim_below_ms: int | None = None  # the next commit drops ids scored below this
        self._undrained: dict[str, Receipt] = {}  # committed by this process, as committed
        self.totals = BatchStats()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Checks Redis's scripting grants, takes ownership, drains a predecessor's outbox, rebuilds."""
        self.windows.warm()
        self._retrying(partial(check_scripting, self._client))  # refused in one line, not at a batch
        self._retrying(lambda: self._client.set(self.keys.owner, self._token))
        # After taking ownership: the predecessor commits nothing more, so its last ingestion time is read.
        predecessor = self._retrying(lambda: self._client.get(self.keys.ingested_high))
        if predecessor is not None:
            self.windows.ingested_after(int(cast(bytes, predecessor)))
        self.flush()
        self._check_version()  # a retired or deleted version: the predecessor's outbox drained, and stop
        self._next_status = time.monotonic() + self.options.status_every_s
        self._next_rules = time.monotonic() + self.options.rules_every_s  # the view was just read
        self._rebuild()

    def flush(self) -> int:
        """Drains the outbox now: committed batches to the offline store and SQL (waiting out a database
        outage: ``drain_retry.py``). Returns how many."""
        stores = (self._client, self.keys, self._sessions, self._offline, self.run, self._undrained)
        name = f"{self.run.view} v{self.run.version}"
        drained = draining(partial(self._retrying, partial(drain, *stores)), name, self.stop)
        self._undrained.clear()
        self._next_drain = time.monotonic() + self.options.drain_interval_s
        return drained

    def step(self) -> BatchStats:
        """One read (reclaimed messages first when due), processed and committed; then the outbox when
        due (see ``MaterializerOptions.drain_every``)."""
        messages = MessageBatch([], {})
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self.options.status_every_s
            self._check_version()
        if now >= self._next_rules:
            self._next_rules = now + self.options.rules_every_s
            self.view = self._rules.refreshed(self.view) or self.view  # what validate() holds events to
        if now >= self._next_trim:
            self._next_trim = now + self.options.trim_every_s
            self._trim_below_ms = self._rebuild_since_ms()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.options.reclaim_every_s
            messages = self.source.reclaim(self.options.reclaim_idle_ms, self.options.count)
        if not messages:
            messages = self.source.read(self.options.count, self.options.block_ms)
        stats = self.process(messages) if messages else BatchStats()
        if not messages or len(self._undrained) >= self.options.drain_every or now >= self._next_drain:
            self.flush()
        if now >= self._next_lag:
            self._next_lag = now + self.options.lag_every_s
            self.metrics.observe_lag(self._retrying(self.source.lag))
        return stats

    # -- processing --------------------------------------------------------------------------------

    def process(self, messages: MessageBatch) -> BatchStats:
        fresh, duplicates = self._unapplied(messages)
        stats = BatchStats(received=len(messages), duplicates=len(duplicates))
        if duplicates:
            self.source.ack(duplicates)
        if not fresh:  # a redelivery of applied messages only: still counted, as duplicates
            self._count(stats, 0)
            return stats
        fresh, table, not_utf8 = utf8_checked(fresh)
        result = validate(
            self.view, self.entity, table, now=datetime.now(UTC), max_future=self.options.max_future,
            rejected_before=not_utf8, max_key_bytes=self.options.max_join_key_bytes,
        )  # fmt: skip
        rejected_rows = result.rejected.column("row_index").to_pylist()
        kept = accepted_rows(len(fresh), result.rejected)
        accepted_ids = fresh.ids if len(kept) == len(fresh) else [fresh.ids[i] for i in kept]
        reasons = result.rejected.column("reason").to_pylist()
        accepted, unplaced = self._placeable(result.accepted, accepted_ids)
        if unplaced:  # an id the stream cannot order exactly, late, or ahead of the stream (lateness.py)
            rejected_rows += [kept[k] for k in unplaced]
            reasons += list(unplaced.values())
            kept = [i for k, i in enumerate(kept) if k not in unplaced]
            accepted_ids = [fresh.ids[i] for i in kept]
        history, blobs, newest, refused = self.windows.aggregate(accepted, self.source.order(accepted_ids))
        if refused:  # not applied (older than every window, or a result its feature cannot hold): quarantined
            rejected_rows += [kept[k] for k in refused]
            reasons += list(refused.values())
            accepted_ids = [i for k, i in enumerate(accepted_ids) if k not in refused]
        rejected_ids = [fresh.ids[i] for i in rejected_rows]
        rejected = pa.table(
            {
                "record_key": rejected_ids,
                "payload": [fresh.payload(i) for i in rejected_rows],
                "reason": reasons,
            },
            schema=REJECTED_RECORDS,
        )
        receipt_id = uuid.uuid4().hex

        def commit() -> int | str:
            # A retry watches again first, outside the gate: a Redis that stopped answering then times
            # out here, not while the gate holds SQLite's write lock (every other writer would wait).
            refused = self._committer.watch_again([*accepted_ids, *rejected_ids], receipt_id)
            if refused is not None:
                return refused
            # The version's status read, its row held, in a SQL transaction around the Redis commit: a
            # retire or delete either came before (nothing is committed) or waits for it (commit_gate.py).
            with self._gate.held() as gone:
                if gone is not None:
                    return gone
                return self._committer.commit(
                    receipt_id,
                    accepted_ids,
                    rejected_ids,
                    blobs,
                    expiry_ms(self.view.spec.ttl_seconds),
                    history,
                    rejected,
                    self.source.stream_times_ms,
                    self._trim(),
                    self.windows.last_ingested_us,
                )

        name = f"{self.run.view} v{self.run.version}"
        outcome = draining(partial(self._retrying, commit), name, self.stop, waited=COMMIT)
        if outcome == DELETED:  # nothing of this batch was written: stop as the periodic check does
            self._stop_deleted()
        if outcome == RETIRED:
            self._stop_retired()
        if outcome == FENCED:
            self._raise_fenced()
        if outcome not in (COMMITTED, ALREADY_COMMITTED):
            # Another consumer applied some of these messages concurrently: our in-memory state may now
            # differ from what was committed, so start over from the stream.
            raise Fenced(f"messages of this batch were applied by another consumer ({self.keys.prefix})")
        if not self.source.acks_in_commit:  # committed: now the source may forget these messages
            self.source.ack([*accepted_ids, *rejected_ids])
        self._undrained[receipt_id] = Receipt(history, rejected, len(accepted_ids))
        stats.accepted, stats.quarantined = len(accepted_ids), len(rejected_rows)
        self._count(stats, newest)
        return stats

    def _count(self, stats: BatchStats, newest_event_us: int) -> None:
        """Adds a processed read to the metrics and ``totals``."""
        self.metrics.observe_batch(stats.accepted, stats.quarantined, stats.duplicates, newest_event_us)
        for field in ("received", "accepted", "quarantined", "duplicates"):
            setattr(self.totals, field, getattr(self.totals, field) + getattr(stats, field))

    def _unapplied(self, messages: MessageBatch) -> tuple[MessageBatch, list[str]]:
        """The messages not applied or rejected before (each id once), and the ids that were."""
        ids = messages.ids
        seen = self._retrying(lambda: self._committer.begin(ids))
        if not self._committer.owned:
            self._raise_fenced()
        if not seen and len(set(ids)) == len(ids):
            return messages, []
        first: dict[str, int] = {}
        for row, message_id in enumerate(ids):
            if message_id not in seen:
                first.setdefault(message_id, row)
        return messages.take(list(first.values())), [i for i in ids if i in seen]

    def _raise_fenced(self) -> NoReturn:
        if self._committer.deleted:
            self._stop_deleted()
        raise Fenced(f"another materializer owns {self.keys.prefix}")

    def _check_version(self) -> None:
        """Stops (``ViewDeleted``) once the view version's delete fence is set, as a refused commit does,
        or its row is gone from SQL (deleted, the cleanup not yet run); ``ViewRetired`` once retired. Each
        commit reads the same status (``commit_gate.py``) and stops the same way."""
        if self._retrying(lambda: self._client.exists(self.keys.deleted)):
            self._stop_deleted()
        state = self._status.gone()
        if state == DELETED:
            self._stop_deleted()
        if state == RETIRED:
            self._stop_retired()

    def _stop_retired(self) -> NoReturn:
        """Drains the outbox (its batches were all committed before the retire: ``commit_gate.py``) and
        stops with ``ViewRetired``."""
        self.flush()
        raise ViewRetired(
            f"feature view {self.view.spec.name!r} version {self.view.version} was retired (not served,"
            " nor ingested into): the materializer stops; what it committed before is stored and counted"
        )

    def _stop_deleted(self) -> NoReturn:
        self._finish_deleted()
        raise ViewDeleted(
            f"feature view {self.view.spec.name!r} version {self.view.version} was deleted:"
            " the materializer stops (its online values are removed; run one for a current view)"
        )

    def _finish_deleted(self) -> None:
        """Drains the outbox and removes this group's state keys, once the view version is deleted.
        The drain first: the batches committed since the last one were acknowledged and their online
        values written, and no materializer can run for a deleted view to drain them later; their
        history rows and rejected records would never reach the offline store (which a delete keeps)
        and SQL, and the run's counters would miss them. The drain does not check the fence, and the
        fence already stops every commit, so nothing can join the outbox after it. The state keys go
        after it: the online cleanup removes every group's (``features/online_cleanup.py``), but this
        materializer may have set its owner key after that pass (one that started meanwhile)."""
        self.flush()
        self._retrying(lambda: self._client.delete(*self.keys.state))

    def _placeable(self, accepted: pa.Table, ids: list[str]) -> tuple[pa.Table, dict[int, str]]:
        """``accepted`` less the events the windows cannot take, and those (by row of ``accepted``) with
        the reason why: an id the tie-break of ``last`` cannot order exactly (``StreamSource.unorderable``:
        before, it was silently misordered, or ended the materializer), then a stream time ahead of the
        clock (``StreamSource.ahead_of_clock``: taken as the stream's time, it made every later event
        late), then an arrival more than the lateness after the event time, or an event time more than
        the skew after the arrival (it moved its entity's windows ahead: ``lateness.py``)."""
        if not accepted.num_rows:
            return accepted, {}
        event_us = accepted.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        refused = self.source.unorderable(ids)
        rows = [k for k in range(len(ids)) if k not in refused] if refused else None
        if rows is not None:  # the others only: a stream time past int64 does not fit the checks below
            event_us, ids = event_us[rows], [ids[k] for k in rows]
        arrival_ms = self.source.arrival_times_ms(ids)
        judged = refused_on_arrival(
            event_us, arrival_ms, self.source.ahead_of_clock(ids),
            (self.options.lateness_s, self.source.max_future_skew_s), timestamp_field(self.view),
        )  # fmt: skip
        if judged and self._clock_check is not None:  # Redis's clock may be the cause (clock_agreement.py)
            self._clock_check.once(self._retrying)
        refused |= judged if rows is None else {rows[k]: reason for k, reason in judged.items()}
        if refused:
            keep = np.ones(accepted.num_rows, dtype=bool)
            keep[list(refused)] = False
            accepted = accepted.filter(pa.array(keep))
        return accepted, refused

    def _trim(self) -> Trim | None:
        """The trim of the next commit, once a trim point is known (see the module docstring)."""
        if self._committer.redis_lost():  # the point held is the lost state's: computed again, next step
            self._trim_below_ms = None
            self._next_trim = 0.0
        if self._trim_below_ms is None:
            return None
        floor, held = self.source.trim_floor_ms, self.source.held_ids()
        return Trim(self._trim_below_ms, floor, held, self._reach_ms())

    def _recorded_scores(self, ids: Sequence[str]) -> list[float | None]:
        """Each id's score in the applied or rejected set (None: in neither; the lower if in both)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zmscore(self.keys.applied, list(ids))
        pipe.zmscore(self.keys.rejected, list(ids))
        applied, rejected = cast(list[list[float | None]], pipe.execute())
        return [
            min((s for s in pair if s is not None), default=None)
            for pair in zip(applied, rejected, strict=True)
        ]

    def _reach_ms(self) -> int:
        """How far before the resume point the rebuild reads: the longest window, the lateness and the skew
        an applied event's time may be ahead of its stream time (see the module docstring)."""
        late_or_early_s = self.options.lateness_s + self.source.max_future_skew_s
        return self.windows.plan.max_window_us // 1000 + late_or_early_s * 1000

    def _rebuild_since_ms(self) -> int:
        """The stream time the rebuild reads from (see the module docstring). Never later than the old
        wall-clock anchor: a resume point in the future (ids set by a producer) does not shorten it."""
        resume = min(self._retrying(self.source.resume_ms), int(time.time() * 1000))
        return resume - self._reach_ms()

    def _rebuild(self) -> None:
        """Re-applies the retained messages this view has applied (see the module docstring)."""
        if not self._retrying(lambda: self._client.zcard(self.keys.applied)):
            return  # nothing applied yet (a new group): no need to read the stream back
        since_ms = self._rebuild_since_ms()
        trimmed = self._retrying(partial(trim_point, self._client, self.keys))
        warn_if_trimmed(self.view.spec.name, since_ms, self._reach_ms(), *trimmed)
        conversion = Conversion(self.view, self.entity)  # converts, never re-validates (rebuild.py)
        rebuilt = 0
        for page in self.source.history(since_ms, 10_000):
            reply = self._retrying(partial(self._client.zmscore, self.keys.applied, page.ids))
            scores = cast(list[float | None], reply)
            applied = page.take([row for row, score in enumerate(scores) if score is not None])
            if not applied:
                continue
            accepted, ids = conversion.convert(applied)
            if accepted.num_rows:
                newest = self.windows.replay(accepted, self.source.order(ids))
                rebuilt += accepted.num_rows
                self.metrics.newest_event_us = max(self.metrics.newest_event_us, newest)
        conversion.report(self.view.spec.name)
        _log.info(
            "rebuilt window state of %s from %d applied messages since stream time %d ms",
            self.view.spec.name, rebuilt, since_ms,
        )  # fmt: skip

    def _retrying(self, operation: Callable[[], T]) -> T:
        retry = getattr(self.source, "retrying", None)
        return retry(operation) if retry is not None else operation()
