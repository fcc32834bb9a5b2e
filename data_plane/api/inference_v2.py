"""The Open Inference Protocol v2 (``inference.GRPCInferenceService``) over the model manager, so that
``tritonclient.grpc`` and KServe tooling work against the data plane unchanged.

Model versions are strings of ASCII digits on this protocol (anything else names no version: NOT_FOUND); an
empty version means the newest READY version a call naming the model may reach. Not a version that the
deployment plans hold only as a canary or a shadow: such a version answers only through its
deployment's plan, so ModelInfer, ModelMetadata (its versions list too) and ModelReady treat it as absent,
named or not (:meth:`data_plane.models.manager.ModelManager.named_lease`); otherwise a KServe client
sending no version was answered by a deployment's shadow, and one naming a canary's version bypassed the
canary controller. A plan's primary is reachable by name while a plan has it as its primary, as the
static config's versions always are: a canary promoted to primary becomes reachable, and a primary
demoted to canary (another version made primary, this one kept at a few percent) stops being so from the
install of the plan that demotes it, named or as the newest version (calls already admitted to it are
answered). Each call reads the manager once, so a ModelMetadata lists the versions reachable at one moment.
Outputs always travel as ``raw_output_contents`` (inputs may be raw or typed ``contents``).

``ModelInfer`` goes through the same kind of admission gate as Predict (:class:`data_plane.admission
.Admission`; in flight as ``aether_inference_in_flight{api="ModelInfer"}``): once the server drains, new
calls are refused with UNAVAILABLE before they touch a model, and admitted ones run to the end. Each call
holds its model version (a lease) until answered, so unloading that version meanwhile fails none.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from clients.errors import AetherError, InvalidArgument, NotFound, abort, internal_message, maps_errors
from clients.inference import grpc_predict_v2_pb2 as pb
from data_plane.admission import Admission
from data_plane.api.oip_tensors import datatype_of, decode_inputs, encode_response
from data_plane.api.outcomes import call_status, too_large
from data_plane.api.registration import add_service, not_parsed
from data_plane.metrics import UNRESOLVED, ServingMetrics
from data_plane.models.manager import ModelManager
from data_plane.models.spec import ModelSpec, TensorSpec
from data_plane.models.version import ModelState

_log = logging.getLogger("aether.data_plane.inference")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "aether"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"
API = "ModelInfer"
_Request = pb.ModelInferRequest


# Versions are int64 in the registry, so more digits name none. Only ASCII digits: ``str.isdigit`` also
# takes other scripts' digits, which ``int`` reads ("٣" as 3) or refuses ("²", an INTERNAL error), and
# ``int`` refuses strings of over 4,300 digits.
_MAX_VERSION_DIGITS = 19


def parse_version(model: str, text: str) -> int | None:
    if not text:
        return None
    if len(text) > _MAX_VERSION_DIGITS or not (text.isascii() and text.isdigit()):
        raise NotFound(f"model {model!r} has no version {text!r}; versions are positive integers")
    return int(text)


def _tensor_metadata(tensor: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor.name, datatype=datatype_of(tensor.dtype), shape=tensor.shape
    )


#: Tensor parameters of Triton's extensions this server does not implement: honoured by Triton, they
#: change what is sent or answered (top-k classes instead of the tensor, data in a shared-memory region
#: instead of the message), so a request that uses them is refused rather than answered as if they were
#: not there.
UNSUPPORTED_TENSOR_PARAMETERS = ("classification", "shared_memory_region")


def _refuse_unsupported_parameters(request: pb.ModelInferRequest) -> None:
    for kind, tensors in (("input", request.inputs), ("output", request.outputs)):
        for tensor in tensors:
            if not tensor.parameters:  # the usual request: nothing to look up, on every call
                continue
            for parameter in UNSUPPORTED_TENSOR_PARAMETERS:
                if parameter in tensor.parameters:
                    raise InvalidArgument(
                        f"{kind} {tensor.name!r} has parameter {parameter!r}, which this server does not "
                        f"support (it answers whole output tensors in the response, and none of "
                        f"{list(UNSUPPORTED_TENSOR_PARAMETERS)})"
                    )


def _requested_outputs(request: pb.ModelInferRequest, spec: ModelSpec) -> list[str]:
    requested = [o.name for o in request.outputs]
    for index, output in enumerate(requested):
        if output not in {t.name for t in spec.outputs}:
            raise InvalidArgument(
                f"model {spec.name} v{spec.version} has no output {output!r}; it has "
                f"{[t.name for t in spec.outputs]}"
            )
        if output in requested[:index]:  # as an input given twice is: which copy would be meant?
            raise InvalidArgument(f"output {output!r} is requested twice")
    return requested


class InferenceV2Servicer:
    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        ready: Any = None,
        max_send_bytes: int | None = None,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        # The server's grpc.max_send_message_length (None: unlimited, gRPC's default for sending).
        self._max_send_bytes = sys.maxsize if max_send_bytes is None else max_send_bytes
        self.admission = Admission()
        metrics.track_in_flight(API, lambda: self.admission.in_flight)
        # Whether the server has finished starting (initial models settled); a callable returning bool.
        self._ready = ready or (lambda: True)

    @maps_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @maps_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        # Ready once started (the initial models settled) while some version can serve. Not "no version
        # loading": that made the whole server unready while any new version (a canary) warmed up, with
        # its other versions serving, so a load balancer would pull every replica at every canary.
        # A server whose versions all FAILED is not ready (it can serve nothing); the replica manager waits
        # on the gRPC health service instead, so this cannot hold up a fleet's start.
        return pb.ServerReadyResponse(ready=bool(self._ready()) and self._manager.can_serve())

    @maps_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        try:
            spec = self._manager.resolve(
                request.name, parse_version(request.name, request.version), by_name=True
            )
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self._manager.state(spec.name, spec.version) is ModelState.READY)

    @maps_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    @maps_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        spec = self._manager.resolve(request.name, parse_version(request.name, request.version), by_name=True)
        return pb.ModelMetadataResponse(
            name=spec.name,
            # Only those that serve: a client picks a version from this list, and a LOADING, WARMING or
            # FAILED one would answer UNAVAILABLE (ModelReady tells each version's state).
            versions=[
                str(v)
                for v in self._manager.versions(spec.name, by_name=True)
                if self._manager.state(spec.name, v) is ModelState.READY
            ],
            platform=PLATFORM,
            inputs=[_tensor_metadata(t) for t in spec.inputs],
            outputs=[_tensor_metadata(t) for t in spec.outputs],
        )

    async def ModelInfer(self, data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Answers a serialized ``ModelInferResponse`` (see :func:`encode_response`) to a serialized
        ``ModelInferRequest``, parsed here so that one that does not parse is counted and answered
        INVALID_ARGUMENT (see :mod:`data_plane.api.registration`)."""
        started = time.perf_counter()
        # The labels it is counted under: the caller's model name and version only once they named a
        # loaded version. A label per unknown name or version a caller sends would be a series kept
        # forever, so /metrics and memory would grow with every distinct bad request.
        model: str = UNRESOLVED
        version: int | str = UNRESOLVED
        try:
            try:
                request = _Request.FromString(data)
            except DecodeError as exc:
                raise not_parsed(_Request, exc) from None
            name = request.model_name
            _refuse_unsupported_parameters(request)
            self.admission.enter()
            try:
                with self._manager.named_lease(name, parse_version(name, request.model_version)) as lease:
                    spec = lease.spec
                    model, version = spec.name, spec.version
                    valid = lease.prepare(decode_inputs(request), answerable=True)
                    requested = _requested_outputs(request, spec) if request.outputs else []
                    remaining = context.time_remaining()
                    deadline = None if remaining is None else time.monotonic() + remaining
                    outputs = await lease.run(valid, deadline)
            finally:
                self.admission.leave()
            response = encode_response(name, str(spec.version), request.id, outputs, requested)
            if len(response) > self._max_send_bytes:
                raise too_large(len(response), self._max_send_bytes)
        except AetherError as exc:
            self._metrics.request(API, model, version, exc.code.name, None)
            await abort(context, exc.code, exc.message)
        except asyncio.CancelledError as exc:  # gRPC ended the call: its caller's deadline or cancel
            self._metrics.request(API, model, version, call_status(exc, context), None)
            raise
        except Exception as exc:
            self._metrics.request(API, model, version, grpc.StatusCode.INTERNAL.name, None)
            _log.exception("unexpected error in ModelInfer", exc_info=exc)
            await abort(context, grpc.StatusCode.INTERNAL, internal_message("ModelInfer", exc))
        self._metrics.request(API, model, version, "OK", time.perf_counter() - started)
        return response


def add_to_server(servicer: InferenceV2Servicer, server: grpc.aio.Server) -> None:
    add_service(server, servicer, pb, "GRPCInferenceService", answers_bytes={API}, parses_bytes={API})
