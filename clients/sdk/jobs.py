"""Client of the training-job service (``aether.v1.Jobs``): submit a spec, read jobs, cancel, stream
logs, watch a job to its end.

A spec is a ``JobSpec`` message or its JSON/YAML form as a mapping (field names as in the .proto)::

    {"name": "churn-mlp", "entrypoint": {"module": "my_project.train"}, "gpus": 1,
     "hyperparameters": {"lr": 0.01}, "features": ["customers@2:tenure"], "max_retries": 2,
     "timeout_s": 3600}

One method per RPC, plain Python arguments in, proto messages out; a failed call raises the matching
:mod:`clients.errors` exception."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor

from clients.aether.v1 import jobs_pb2 as pb
from clients.aether.v1 import jobs_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument
from clients.sdk.arguments import checked_request
from clients.sdk.service_client import ServiceClient

TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})


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
        self, job_id: str, *, follow: bool = False, offset: int = 0, timeout: float | None = None
    ) -> Iterator[bytes]:
        """The job's log as byte chunks from ``offset``; with ``follow``, until the job has ended."""
        request = checked_request(pb.JobLogsRequest, job_id=job_id, follow=follow, offset=offset)
        for chunk in self._stream(self._stub.Logs, request, timeout if follow else timeout or self.timeout):
            yield chunk.data

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[pb.Job]:
        """The job now and after every change, until it ends."""
        yield from self._stream(self._stub.Watch, pb.WatchJobRequest(job_id=job_id), timeout)

    def wait(self, job_id: str, timeout: float | None = None) -> pb.Job:
        """Blocks until the job has ended (or ``timeout`` seconds: DEADLINE_EXCEEDED) and returns it."""
        last: pb.Job | None = None
        for job in self.watch(job_id, timeout):
            last = job
        if last is None or last.state not in TERMINAL_STATES:
            return self.get(job_id)
        return last
