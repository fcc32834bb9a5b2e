"""The tracking SDK's ``LogBatch`` requests, built from the entries the training loop buffered: merged
per run, sized under a byte bound (an estimate while taking entries, the real size once built), and split
by entries, or one entry by its keys, when a built request is still too large. Plain data in, requests
out; :mod:`clients.sdk.tracking_shipper` decides when to build and sends them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from clients.aether.v1 import tracking_pb2 as pb

#: Default bound on a request's size: well under gRPC's default 4 MiB receive limit (the control plane's),
#: so that no request depends on a raised limit, and a few such requests in flight cost little memory.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
#: Upper bound on a metric point's share of a request: a double, a step and a timestamp (varints).
POINT_BYTES = 28
#: Upper bound on the framing of one key/value pair, a run's batch or start.
FIELD_BYTES = 16
#: Upper bound on a request's idempotency key (``LogBatchKey``) as the shipper sets it once the request is
#: built: a 32-character sender id and a sequence number, with their framing.
KEY_BYTES = 48


@dataclass(slots=True)
class Entry:
    """One call of the training loop: points of one step, or parameters/tags, or a run end."""

    run_id: str
    points: int = 0
    step: int = 0
    timestamp_us: int = 0
    metrics: Mapping[str, float] | None = None
    params: Mapping[str, str] | None = None
    tags: Mapping[str, str] | None = None
    end: pb.RunEnd | None = None
    start: pb.RunStart | None = None
    size: int = 0  # estimated bytes in a request (the builder checks the real size)
    settles: int = 1  # 0 for the pieces of a split entry but its last: the call settles with that one


def _text_bytes(values: Mapping[str, str] | None) -> int:
    """Estimated size of a map's keys and values in a request (a byte a character: the builder checks the
    real size, and splits a request that non-ASCII text made too large)."""
    if not values:
        return 0
    return sum(len(key) + len(value) + FIELD_BYTES for key, value in values.items())


def entry_size(entry: Entry) -> int:
    size = FIELD_BYTES + _text_bytes(entry.params) + _text_bytes(entry.tags)
    if entry.start is not None:
        start = entry.start
        size += len(start.name) + len(start.experiment_id) + FIELD_BYTES * 2
        size += _text_bytes(start.params) + _text_bytes(start.tags)
    return size


def _split_entry(entry: Entry) -> list[Entry] | None:
    """One entry as two or more that log the same thing in order (its maps halved; a start without its
    parameters and tags, which follow it); None when it holds a single key and cannot be split."""
    head = Entry(entry.run_id, settles=0)
    tail = Entry(entry.run_id, settles=entry.settles)
    if entry.start is not None and (entry.start.params or entry.start.tags):
        bare = pb.RunStart()
        bare.CopyFrom(entry.start)
        bare.ClearField("params")
        bare.ClearField("tags")
        head.start = bare
        tail.params, tail.tags = dict(entry.start.params), dict(entry.start.tags)
        tail.params.update(entry.params or {})  # a start's own entry carries no other params or tags
        tail.end = entry.end
    elif entry.params and entry.tags:
        head.params, tail.tags, tail.end = entry.params, entry.tags, entry.end
    elif entry.metrics is not None and len(entry.metrics) > 1:
        keys = list(entry.metrics)
        half = len(keys) // 2
        head.metrics = {key: entry.metrics[key] for key in keys[:half]}
        tail.metrics = {key: entry.metrics[key] for key in keys[half:]}
        head.step = tail.step = entry.step
        head.timestamp_us = tail.timestamp_us = entry.timestamp_us
        head.points, tail.points = half, len(keys) - half
    else:
        values = entry.params or entry.tags
        if values is None or len(values) < 2:
            return None
        items = list(values.items())
        first, second = dict(items[: len(items) // 2]), dict(items[len(items) // 2 :])
        if entry.params:
            head.params, tail.params = first, second
        else:
            head.tags, tail.tags = first, second
        tail.end = entry.end
    for piece in (head, tail):
        piece.size = piece.points * POINT_BYTES + entry_size(piece)
    return [head, tail]


def halves(entries: list[Entry]) -> tuple[list[Entry], list[Entry]] | None:
    """Entries in two parts that, sent in order, log the same; None when there is one unsplittable entry."""
    if len(entries) > 1:
        middle = len(entries) // 2
        return entries[:middle], entries[middle:]
    pieces = _split_entry(entries[0]) if entries else None
    if pieces is None:
        return None
    return pieces[:1], pieces[1:]


@dataclass
class _RunAccumulator:
    steps: list[Entry] = field(default_factory=list)  # entries with metrics, in logging order
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    end: pb.RunEnd | None = None
    start: pb.RunStart | None = None

    def message(self, run_id: str) -> pb.RunBatch:
        batch = pb.RunBatch(
            run_id=run_id,
            metrics=series_of(self.steps) if self.steps else (),
            params=self.params,
            tags=self.tags,
        )
        if self.end is not None:
            batch.end.CopyFrom(self.end)
        if self.start is not None:
            batch.start.CopyFrom(self.start)
        return batch


def series_of(steps: list[Entry]) -> list[pb.MetricSeries]:
    """The points of one run's ``log_metrics`` calls as one series per key (keys in first-logged order,
    points in logging order)."""
    metrics = [entry.metrics for entry in steps if entry.metrics is not None]
    first = metrics[0].keys()
    if all(logged.keys() == first for logged in metrics):
        # The usual shape, the same metrics at every step: one comprehension per column instead of three
        # appends per point (this loop is most of the SDK's CPU time).
        step_column = [entry.step for entry in steps]
        time_column = [entry.timestamp_us for entry in steps]
        return [
            pb.MetricSeries(
                key=key,
                values=[logged[key] for logged in metrics],
                steps=step_column,
                timestamps_us=time_column,
            )
            for key in first
        ]
    series: dict[str, tuple[list[float], list[int], list[int]]] = {}
    for entry, logged in zip(steps, metrics, strict=True):
        for key, value in logged.items():
            arrays = series.get(key)
            if arrays is None:
                arrays = series[key] = ([], [], [])
            arrays[0].append(value)
            arrays[1].append(entry.step)
            arrays[2].append(entry.timestamp_us)
    return [
        pb.MetricSeries(key=key, values=values, steps=steps, timestamps_us=times)
        for key, (values, steps, times) in series.items()
    ]


def build_request(entries: list[Entry]) -> tuple[pb.LogBatchRequest, dict[str, int]]:
    """Entries (in logging order) grouped per run and metric into parallel arrays; also the points per
    run, for counting what a refused run loses."""
    runs: dict[str, _RunAccumulator] = {}
    points: dict[str, int] = {}
    for entry in entries:
        run = runs.get(entry.run_id)
        if run is None:
            run = runs[entry.run_id] = _RunAccumulator()
            points[entry.run_id] = 0
        if entry.metrics is not None:
            points[entry.run_id] += entry.points
            run.steps.append(entry)
        if entry.params:
            run.params.update(entry.params)
        if entry.tags:
            run.tags.update(entry.tags)
        if entry.end is not None:
            run.end = entry.end
        if entry.start is not None:
            run.start = entry.start
    return pb.LogBatchRequest(runs=[run.message(run_id) for run_id, run in runs.items()]), points


@dataclass(frozen=True)
class Outgoing:
    request: pb.LogBatchRequest | None  # None when nothing of the entries could be built
    points: dict[str, int]  # per run, for counting what a refused run loses
    entries: int  # calls of the training loop this settles
    unbuildable: int = 0  # points of runs whose data could not be built into a request (dropped)
    built: list[Entry] = field(default_factory=list)  # the entries in ``request``, to split it again


def build_outgoing(entries: list[Entry]) -> tuple[Outgoing, Exception | None]:
    """The request for ``entries``; when building fails (a value the SDK's checks at the call let
    through), the runs that cannot be built are left out, their points counted as unbuildable, and the
    first error returned: one bad value costs its run's share of the batch, not the shipper."""
    settles = sum(entry.settles for entry in entries)
    try:
        request, points = build_request(entries)
        return Outgoing(request, points, settles, built=entries), None
    except Exception as error:
        first: Exception = error
    by_run: dict[str, list[Entry]] = {}
    for entry in entries:
        by_run.setdefault(entry.run_id, []).append(entry)
    good: list[Entry] = []
    unbuildable = 0
    for run_entries in by_run.values():
        try:
            build_request(run_entries)
        except Exception:
            unbuildable += sum(entry.points for entry in run_entries if entry.metrics is not None)
        else:
            good.extend(run_entries)
    if not good:
        return Outgoing(None, {}, settles, unbuildable), first
    request, points = build_request(good)
    return Outgoing(request, points, settles, unbuildable, good), first


def fitted(entries: list[Entry], max_bytes: int) -> list[tuple[Outgoing, Exception | None]]:
    """The requests for ``entries``, in order, each at most ``max_bytes`` where splitting allows (see
    :func:`halves`); a part that cannot be split is returned as it is."""
    outgoing, error = build_outgoing(entries)
    if outgoing.request is None or outgoing.request.ByteSize() <= max_bytes:
        return [(outgoing, error)]
    parts = halves(outgoing.built)
    if parts is None:
        return [(outgoing, error)]
    # The unbuildable runs were left out of ``built``: count them (and settle the calls) with the last part.
    head, tail = fitted(parts[0], max_bytes), fitted(parts[1], max_bytes)
    last, last_error = tail[-1]
    settles = outgoing.entries - sum(part.entries for part, _ in (*head, *tail))
    tail[-1] = (
        Outgoing(
            last.request, last.points, last.entries + settles, last.unbuildable + outgoing.unbuildable,
            last.built,
        ),
        last_error or error,
    )  # fmt: skip
    return [*head, *tail]
