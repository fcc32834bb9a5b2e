"""The ``aether.v1.Artifacts`` gRPC service: chunked upload and download of content-addressed blobs.

The store does blocking file I/O, so each chunk is read or written in a worker thread; the event loop
only moves messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc.aio

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import model_registry_pb2_grpc
from clients.errors import InvalidArgument, maps_errors
from clients.server_handlers import HandlerRegistry
from control_plane.api.identity import JOB_RUN, actor_of
from control_plane.api.refusals import RefusalAudit, audits_job_refusals
from control_plane.artifacts.settings import store_for
from control_plane.artifacts.store import ArtifactRef, ArtifactStore, PendingBlob
from control_plane.tracking.store import TrackingStore

if TYPE_CHECKING:  # the server module imports the service modules it serves
    from control_plane.api.context import ServiceContext

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_log = logging.getLogger("aether.artifacts")
T = TypeVar("T")
ARTIFACTS_SERVICE = pb.DESCRIPTOR.services_by_name["Artifacts"].full_name


def ref_to_proto(ref: ArtifactRef) -> pb.ArtifactRef:
    return pb.ArtifactRef(sha256=ref.sha256, size=ref.size, uri=ref.uri)


class ArtifactsServicer(model_registry_pb2_grpc.ArtifactsServicer):
    """``runs``: the tracking store an upload with a job's token checks its run in (None: not checked);
    ``refusals``: where that refusal is audited (``audits_job_refusals``; None: not)."""

    def __init__(
        self, store: ArtifactStore, runs: TrackingStore | None = None, refusals: RefusalAudit | None = None
    ) -> None:
        self._store = store
        self._runs = runs
        self.refusals = refusals

    @maps_errors
    @audits_job_refusals(ARTIFACTS_SERVICE)
    async def Upload(
        self, request_iterator: AsyncIterator[pb.UploadArtifactRequest], context: Context
    ) -> pb.ArtifactRef:
        job_run = JOB_RUN.get()
        if job_run is not None and self._runs is not None:
            # An upload names no run: a job's token may upload only while its run has not ended
            # (control_plane.api.job_tokens). Checked before any byte is stored; an upload that began
            # before the end may finish, but what it adds is a blob no run or version names, and
            # naming it (LogArtifact, CreateModelVersion) is refused on the ended run's locked row.
            await asyncio.to_thread(self._runs.refuse_ended, job_run, actor=actor_of(context), write="Upload")
        pending: PendingBlob | None = None
        try:
            async for message in request_iterator:
                if pending is None:
                    if not message.sha256:
                        raise InvalidArgument("the first upload message must carry the expected sha256")
                    pending = await _begin(self._store, message.sha256)
                elif message.sha256 and message.sha256 != pending.expected_sha256:
                    raise InvalidArgument(
                        f"upload declared sha256 {pending.expected_sha256} and later {message.sha256}"
                    )
                if message.data:
                    await asyncio.to_thread(pending.write, message.data)
            if pending is None:
                raise InvalidArgument("empty upload: no message carried the expected sha256")
        except BaseException:
            if pending is not None:
                await _to_the_end(pending.abort)
            raise
        # A client's cancel ends grpc.aio's request stream as if the upload were complete, and cancels
        # this call right after: the commit must run all the same (its hash check refuses, and aborts, a
        # cut-off upload), or the temporary file stayed in the store for good (5 of 6 cancelled uploads).
        return ref_to_proto(await _to_the_end(pending.commit))

    @maps_errors
    async def Download(
        self, request: pb.DownloadArtifactRequest, context: Context
    ) -> AsyncIterator[pb.ArtifactChunk]:
        chunks: Iterator[bytes] = self._store.iter_verified(request.sha256)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield pb.ArtifactChunk(data=chunk)

    @maps_errors
    async def StatArtifact(self, request: pb.StatArtifactRequest, context: Context) -> pb.ArtifactRef:
        return ref_to_proto(await asyncio.to_thread(self._store.stat, request.sha256))


async def _to_the_end(work: Callable[[], T]) -> T:
    """``work()`` in a worker thread, run to its end even when this call is cancelled. Cancelling an
    awaited ``asyncio.to_thread`` / ``run_in_executor`` future also cancels its executor job, and a job
    no thread has picked up yet then never runs; the shield stops the cancel before it reaches the job."""
    return await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, work))


async def _begin(store: ArtifactStore, sha256: str) -> PendingBlob:
    """``store.begin_put(sha256)`` in a worker thread. Cancelled while the thread creates the temporary
    file, the blob it then returns is aborted, since nobody else will ever see it."""
    started = asyncio.get_running_loop().run_in_executor(None, store.begin_put, sha256)
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        started.add_done_callback(_abort_unclaimed)
        raise


def _abort_unclaimed(started: asyncio.Future[PendingBlob]) -> None:
    if not started.cancelled() and started.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, started.result().abort)


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Serves the artifact store of ``context.settings.home`` (or ``AETHER_ARTIFACTS_ROOT``), after
    removing the temporary files that uploads cut off by a crash left in it (see
    :meth:`ArtifactStore.sweep_stale_temps`)."""
    store = store_for(context.settings.home)
    swept = store.sweep_stale_temps()
    if swept:
        _log.info("removed %d stale temporary upload file(s) from the artifact store %s", swept, store.root)
    refusals = RefusalAudit(context.sessions, context.settings.refusal_audit_window_s)
    context.on_close.append(refusals.close)
    servicer = ArtifactsServicer(store, TrackingStore(context.sessions), refusals)
    model_registry_pb2_grpc.add_ArtifactsServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return ARTIFACTS_SERVICE
