"""gRPC servicer of ``aether.v1.Jobs``: a thin shell over :class:`JobService`, plus the supervisor loop
(started with the service, stopped through ``context.on_close``; stopping it leaves jobs running, the
next control plane re-adopts them). Blocking work runs in worker threads.

A job's ``spec.env`` is where its secrets go (an API key, a cloud credential the job needs), so ``Get``,
``List`` and ``Watch`` answer a caller without the right to write (the read-only token:
:data:`~control_plane.api.identity.MAY_WRITE` false) each value replaced by :data:`REDACTED`, the names
kept (what a job is configured with is still the reader's to see). A caller that may write (the admin
token, or anyone with auth off) gets the values: it could submit a job that prints them anyway, and a
spec read back whole can be submitted again. The audit entry of a submit holds the job's state, never its
spec. ``Logs`` returns what the job printed, which may be any secret it could read (its ``env`` values
included): the interceptor answers it only to a caller that may write
(:data:`~control_plane.api.auth.WRITERS_ONLY_READS`), the read-only and job tokens getting
PERMISSION_DENIED."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio

from clients.aether.v1 import jobs_pb2 as pb
from clients.aether.v1 import jobs_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument, maps_errors
from clients.files import private_folder
from clients.server_handlers import HandlerRegistry
from control_plane.api.context import ServiceContext, ServiceModule
from control_plane.api.identity import MAY_WRITE, actor_of
from control_plane.api.offline_features import datasets_root_of, offline_root
from control_plane.jobs import staging
from control_plane.jobs.executor import Executor, LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.store import TERMINAL, JobState
from control_plane.jobs.supervisor import Supervisor
from control_plane.offline.store import OfflineStore

_log = logging.getLogger("aether.jobs")
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Jobs"].full_name
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
#: Largest piece of log per message, and how often a followed log or a watch looks for news.
LOG_CHUNK_BYTES = 64 * 1024
POLL_INTERVAL_S = 0.25
#: What a caller without the right to write gets in place of each value of a job's ``spec.env``.
REDACTED = "[redacted]"


async def _run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(call, *args, **kwargs)


class JobsServicer(pb_grpc.JobsServicer):
    def __init__(self, service: JobService, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self._service = service
        self._poll_s = poll_interval_s

    @maps_errors
    async def Submit(self, request: pb.SubmitJobRequest, context: Context) -> pb.Job:
        if not request.HasField("spec"):
            raise InvalidArgument("a job spec is required")
        return await _run(self._service.submit, request.spec, actor=actor_of(context))

    @maps_errors
    async def Get(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        return _shown(await _run(self._service.get, request.job_id))

    @maps_errors
    async def List(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        jobs, token = await _run(
            self._service.list, list(request.states), request.page_size, request.page_token
        )
        return pb.ListJobsResponse(jobs=[_shown(job) for job in jobs], next_page_token=token)

    @maps_errors
    async def Cancel(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        return await _run(self._service.cancel, request.job_id, request.reason, actor=actor_of(context))

    @maps_errors
    async def Logs(self, request: pb.JobLogsRequest, context: Context) -> AsyncIterator[pb.JobLogChunk]:
        offset = request.offset
        while True:
            path, ended = await _run(self._service.log_file, request.job_id)
            data = await _run(_read_from, path, offset, LOG_CHUNK_BYTES)
            if data:
                yield pb.JobLogChunk(data=data, offset=offset)
                offset += len(data)
                continue
            # Ended is read before the last read came back empty: nothing more will be written.
            if not request.follow or ended:
                return
            await asyncio.sleep(self._poll_s)

    @maps_errors
    async def Watch(self, request: pb.WatchJobRequest, context: Context) -> AsyncIterator[pb.Job]:
        last: tuple[int, int] | None = None
        while True:
            job = await _run(self._service.get, request.job_id)
            seen = (job.updated_at_us, len(job.history))
            if seen != last:
                last = seen
                yield _shown(job)
            if JobState.from_proto(job.state) in TERMINAL:
                return
            await asyncio.sleep(self._poll_s)


def _shown(job: pb.Job) -> pb.Job:
    """``job`` as the caller may see it: its env values :data:`REDACTED` unless the caller may write."""
    if not MAY_WRITE.get():
        # Over a copy of the names: assigning into a protobuf map while iterating it skips entries.
        for name in list(job.spec.env):
            job.spec.env[name] = REDACTED
    return job


def _read_from(path: Any, offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as log:
            # Nothing to read (yet) at or past the end; checked before seeking, because seek() refuses
            # an offset from 2**63 on, which the request's uint64 may hold. (Not clamped and read: a
            # followed log's chunks must start at the offset asked for.)
            if offset >= os.fstat(log.fileno()).st_size:
                return b""
            log.seek(offset)
            data: bytes = log.read(size)
            return data
    except FileNotFoundError:
        return b""


def _dialable(listen_addr: str) -> str:
    """The address a job on this host dials to reach a control plane listening on ``listen_addr``."""
    host, _, port = listen_addr.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "", "::") else listen_addr


def service_module(settings: JobsSettings | None = None, executor: Executor | None = None) -> ServiceModule:
    """A service module serving ``aether.v1.Jobs`` with ``settings`` (default: from the environment,
    under the control plane's home) and ``executor`` (default: local subprocesses)."""

    def add(server: HandlerRegistry, context: ServiceContext) -> str:
        jobs_settings = settings or JobsSettings.from_env(context.settings.home)
        private_folder(jobs_settings.folder)  # job specs, logs and checkpoints: the owner's alone

        def address() -> str:
            # Read at each launch: a server started on port 0 knows its port only once it listens.
            return _dialable(context.address or context.settings.listen_addr)

        supervisor = Supervisor(
            context.sessions,
            jobs_settings,
            executor or LocalExecutor(cwd=jobs_settings.job_cwd, kill_grace_s=jobs_settings.kill_grace_s),
            address,
            job_token=job_tokens.mint if (job_tokens := context.settings.auth.job_tokens()) else None,
        )
        service = JobService(
            context.sessions,
            jobs_settings,
            context.registry,
            OfflineStore(offline_root(context)),
            wake=supervisor.wake,
            datasets_root=datasets_root_of(context),
        )
        # Folders of submits a crash or a failed commit left under their staging name (jobs/staging.py):
        # a committed job's put in place, the others removed, before anything reads them.
        staging.sweep_logging_errors(jobs_settings.folder, context.sessions)
        # Jobs submitted before their folders were created private: a restart now makes them so.
        if changed := service.make_folders_private():
            _log.info("made the folders of %d job(s) owner-only (0700, spec and log 0600)", changed)
        pb_grpc.add_JobsServicer_to_server(JobsServicer(service), server)  # type: ignore[no-untyped-call]
        supervisor.start()
        context.on_close.append(supervisor.stop)
        return SERVICE_NAME

    return add


#: The default jobs service: settings from ``AETHER_JOBS_*`` / ``AETHER_GPUS``, local executor.
add_to_server: ServiceModule = service_module()
