"""Client of the training-job service (``aether.v1.Jobs``): submit a spec, read jobs, cancel, stream
logs, watch a job to its end.

A spec is a ``JobSpec`` message or its JSON/YAML form as a mapping (field names as in the .proto)::

    {"name": "churn-mlp", "entrypoint": {"module": "my_project.train"}, "gpus": 1,
     "hyperparameters": {"lr": 0.01}, "features": ["customers@2:tenure"], "max_retries": 2,
     "timeout_s": 3600}

One method per RPC, plain Python arguments in, proto messages out; a failed call raises the matching
:mod:`clients.errors` exception. Following a job (``logs(follow=True)``, ``watch``, ``wait``) outlives a
restart of the control plane: see :meth:`JobsClient.watch`."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor

from clients.aether.v1 import jobs_pb2 as pb
from clients.aether.v1 import jobs_pb2_grpc as pb_grpc
from clients.errors import DeadlineExceeded, InvalidArgument, Unavailable
from clients.keepalive import watch_channel_options
from clients.sdk.arguments import checked_request
from clients.sdk.service_client import ServiceClient

TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})
#: How long following a job goes on reconnecting through one outage of the control plane (a restart, an
#: upgrade: its jobs run on and the next one re-adopts them) before it raises UNAVAILABLE.
RECONNECT_FOR_S = 60.0
#: The pause before the first reconnect of an outage, doubled after each failed one up to the second.
RECONNECT_FIRST_PAUSE_S = 0.1
RECONNECT_MOST_PAUSE_S = 2.0
# Between two tries to connect to an address that refused it, gRPC waits 1 s growing 1.6 times a try (up
# to 120 s), and a call in between fails at once: late in a minute's outage a control plane that was back
# would go unseen for up to 27 s, past the reconnect bound. Capped, it is seen within 2 s.
# Keepalive (clients.keepalive): a followed job's stream may be silent for hours; if its TCP path dies
# without a reset (a NAT or load balancer dropping the idle flow, a host gone), unanswered pings fail the
# stream within WATCH_KEEPALIVE_S + WATCH_KEEPALIVE_TIMEOUT_S and the follow reconnects. Without them,
# `jobs logs -f`, `watch` and `wait` waited on the dead stream for ever. gRPC's bandwidth probes stay off,
# as for the watchers: their pings fail the connection after the same 10 s, and on a slow link a probe's
# answer waits behind the log data queued ahead of it (a 12 MB log at 200 kB/s failed after 10 s with
# them on, in review); off, the flow-control window stays at HTTP/2's 64 KiB.
_CHANNEL_OPTIONS = (
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MOST_PAUSE_S * 1000)),
    *watch_channel_options(),
)

_Message = TypeVar("_Message")


def job_spec(spec: pb.JobSpec | Mapping[str, Any]) -> pb.JobSpec:
    """``spec`` as a message; a mapping is parsed (INVALID_ARGUMENT names an unknown or mistyped field)."""
    if isinstance(spec, pb.JobSpec):
        return spec
    _check_nested_mappings(spec, pb.JobSpec.DESCRIPTOR, "")  # type: ignore[arg-type]
    try:
        return json_format.ParseDict(dict(spec), pb.JobSpec())
    except json_format.ParseError as exc:
        # One line: protobuf's messages may span lines (its unknown-field one did, with the field list).
        raise InvalidArgument(f"malformed job spec: {' '.join(str(exc).split())}") from None


def _check_nested_mappings(data: Mapping[str, Any], descriptor: Descriptor, prefix: str) -> None:
    """Every key is a field, and a field holding a message is given as a mapping. protobuf's parser takes a
    string there as a sequence of field names: ``entrypoint: my.module`` failed with "Message type
    aether.v1.Entrypoint has no field named 'm'", which says nothing a user can act on; and its message
    for an unknown field put the allowed ones on a second line, in their JSON spelling."""
    by_json_name = {f.json_name: f for f in descriptor.fields}
    for name, value in data.items():
        field = None
        if isinstance(name, str):
            field = descriptor.fields_by_name.get(name) or by_json_name.get(name)
        if field is None:
            fields = ", ".join(f.name for f in descriptor.fields)
            raise InvalidArgument(
                f"malformed job spec: unknown field {prefix + str(name)!r:.64}; the fields of"
                f" {descriptor.full_name} are {fields}"
            )
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue  # scalars: the parser's own messages name them well
        if field.message_type.full_name.startswith("google.protobuf."):
            continue  # Struct, Value...: any JSON
        if field.is_repeated or value is None:  # None: a YAML key left empty, which the parser takes as unset
            continue
        if not isinstance(value, Mapping):
            fields = ", ".join(f.name for f in field.message_type.fields)
            raise InvalidArgument(
                f"malformed job spec: {prefix}{name} must be a mapping of"
                f" {field.message_type.full_name} fields ({fields}), not {type(value).__name__} {value!r:.60}"
            )
        _check_nested_mappings(value, field.message_type, f"{prefix}{name}.")


def state_name(state: int) -> str:
    """``JOB_STATE_RUNNING`` -> ``RUNNING``."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


def exit_code(job: pb.Job) -> int | None:
    """The exit code of the job's last finished attempt (negative: the signal that killed it), or None
    when there is none to tell: no attempt has finished, or the last one ended without a recorded status
    (its launcher was killed). ``job.exit_code`` alone reads 0 then, which looks like a clean exit."""
    return job.exit_code if job.HasField("exit_code") else None


def exit_code_text(job: pb.Job) -> str:
    """:func:`exit_code` for people: the number, ``unknown`` when an attempt ended without one, ``-``
    while no attempt has ended."""
    code = exit_code(job)
    if code is not None:
        return str(code)
    attempt_ended = job.attempt > 1 or (
        job.attempt == 1 and (job.state in TERMINAL_STATES or job.state == pb.JOB_STATE_RETRYING)
    )
    return "unknown" if attempt_ended else "-"


class JobsClient(ServiceClient):
    """Client of one control plane at ``target`` (``host:port``); ``timeout`` bounds each unary call."""

    CHANNEL_OPTIONS = _CHANNEL_OPTIONS

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.JobsStub(self._channel)  # type: ignore[no-untyped-call]

    def submit(self, spec: pb.JobSpec | Mapping[str, Any]) -> pb.Job:
        return self._call(self._stub.Submit, pb.SubmitJobRequest(spec=job_spec(spec)), pb.Job)

    def get(self, job_id: str) -> pb.Job:
        return self._call(self._stub.Get, pb.GetJobRequest(job_id=job_id), pb.Job)

    def list_page(
        self, states: Sequence[pb.JobState] = (), page_size: int = 0, page_token: str = ""
    ) -> tuple[list[pb.Job], str]:
        """One page of jobs, newest first, and the token of the next page (empty on the last)."""
        request = checked_request(
            pb.ListJobsRequest, states=list(states), page_size=page_size, page_token=page_token
        )
        response = self._call(self._stub.List, request, pb.ListJobsResponse)
        return list(response.jobs), response.next_page_token

    def list(self, states: Sequence[pb.JobState] = (), limit: int | None = None) -> list[pb.Job]:
        """Jobs newest first (all pages, or the first ``limit``)."""
        jobs: list[pb.Job] = []
        token = ""
        while limit is None or len(jobs) < limit:
            page, token = self.list_page(states, 0 if limit is None else min(limit - len(jobs), 1000), token)
            jobs.extend(page)
            if not token:
                break
        return jobs

    def cancel(self, job_id: str, reason: str = "") -> pb.Job:
        return self._call(self._stub.Cancel, pb.CancelJobRequest(job_id=job_id, reason=reason), pb.Job)

    def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        offset: int = 0,
        timeout: float | None = None,
        reconnect_for: float = RECONNECT_FOR_S,
    ) -> Iterator[bytes]:
        """The job's log as byte chunks from ``offset``; with ``follow``, until the job has ended,
        reconnecting through an outage of the control plane as :meth:`watch` does, from the byte it had
        reached: no byte is repeated or skipped."""
        if not follow:
            request = checked_request(pb.JobLogsRequest, job_id=job_id, offset=offset)
            for chunk in self._stream(self._stub.Logs, request, timeout or self.timeout):
                yield chunk.data
            return
        checked_request(pb.JobLogsRequest, job_id=job_id, offset=offset)  # refuse a bad offset up front
        position = offset

        def open_from_position(stream_timeout: float | None) -> Iterator[pb.JobLogChunk]:
            request = pb.JobLogsRequest(job_id=job_id, follow=True, offset=position)
            return self._stream(self._stub.Logs, request, stream_timeout)

        for chunk in self._following(job_id, open_from_position, timeout, reconnect_for):
            position += len(chunk.data)
            yield chunk.data

    def watch(
        self, job_id: str, timeout: float | None = None, reconnect_for: float = RECONNECT_FOR_S
    ) -> Iterator[pb.Job]:
        """The job now and after every change, until it ends (or ``timeout`` seconds in all:
        DEADLINE_EXCEEDED).

        A control plane that cannot be reached (UNAVAILABLE: stopped, restarting) does not end the watch:
        it reconnects, pausing 0.1 s doubled up to 2 s between tries, and goes on with what changed since
        the last job it yielded; only once one outage has lasted ``reconnect_for`` seconds (0: none) does it
        raise UNAVAILABLE, saying how long it tried. The job runs on without a control plane and the next
        one re-adopts it: giving up at the first failure reported a job that went on to succeed as lost."""
        last: tuple[int, int] | None = None

        def open_watch(stream_timeout: float | None) -> Iterator[pb.Job]:
            return self._stream(self._stub.Watch, pb.WatchJobRequest(job_id=job_id), stream_timeout)

        for job in self._following(job_id, open_watch, timeout, reconnect_for):
            # A new stream starts with the job as it is, which may be the one yielded before the outage.
            seen = (job.updated_at_us, len(job.history))
            if seen != last:
                last = seen
                yield job

    def wait(
        self, job_id: str, timeout: float | None = None, reconnect_for: float = RECONNECT_FOR_S
    ) -> pb.Job:
        """Blocks until the job has ended (or ``timeout`` seconds: DEADLINE_EXCEEDED) and returns it;
        reconnects through an outage of the control plane as :meth:`watch` does."""
        last: pb.Job | None = None
        for job in self.watch(job_id, timeout, reconnect_for):
            last = job
        if last is None or last.state not in TERMINAL_STATES:
            return self.get(job_id)
        return last

    def _following(
        self,
        job_id: str,
        open_stream: Callable[[float | None], Iterator[_Message]],
        timeout: float | None,
        reconnect_for: float,
    ) -> Iterator[_Message]:
        """The messages of the stream ``open_stream(timeout)`` opens, opened again after it failed
        UNAVAILABLE, until one ends on its own (see :meth:`watch`). The outage ends when the control plane
        answers a ``Get`` of the job, made before each reopening: a followed log may stay silent for
        hours, so a stream that delivers nothing does not show that the control plane came back, and the
        next outage must not be counted from the start of the last one."""
        started = time.monotonic()

        def time_left() -> float | None:
            # gRPC's deadline bounds one stream; ``timeout`` bounds the follow, reconnects included.
            if timeout is None:
                return None
            left = started + timeout - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(
                    f"following job {job_id} took longer than its timeout of {timeout:g} s"
                )
            return left

        down_since: float | None = None
        pause = RECONNECT_FIRST_PAUSE_S
        while True:
            try:
                if down_since is not None:
                    self._probe(job_id, time_left)
                    down_since = None
                for message in open_stream(time_left()):
                    pause = RECONNECT_FIRST_PAUSE_S
                    yield message
                return
            except Unavailable as error:
                now = time.monotonic()
                down_since = now if down_since is None else down_since
                down_for = now - down_since
                if down_for >= reconnect_for:
                    if reconnect_for <= 0:
                        raise
                    gave_up = Unavailable(
                        f"following job {job_id}: the control plane could not be reached for"
                        f" {down_for:.1f} s (the limit is {reconnect_for:g} s): {error.message}"
                    )
                    gave_up.answered = error.answered
                    raise gave_up from None
                left = time_left()
                sleep_s = min(pause * random.uniform(0.5, 1.0), reconnect_for - down_for)
                time.sleep(sleep_s if left is None else min(sleep_s, left))
                pause = min(pause * 2, RECONNECT_MOST_PAUSE_S)

    def _probe(self, job_id: str, time_left: Callable[[], float | None]) -> None:
        """Returns once the control plane answers a ``Get`` of the job; UNAVAILABLE if it does not within
        this client's timeout (a host gone without a reset answers nothing, which is an outage too)."""
        left = time_left()
        probe_timeout = left if self.timeout is None or left is None else min(left, self.timeout)
        try:
            self._call(self._stub.Get, pb.GetJobRequest(job_id=job_id), pb.Job, probe_timeout)
        except DeadlineExceeded:
            time_left()  # the follow's own timeout has passed: that is the error to raise
            raise Unavailable(f"the control plane did not answer a Get of job {job_id} in time") from None
