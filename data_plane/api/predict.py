"""gRPC servicer of ``aether.v1.Inference``: Predict and PredictBatch over
:class:`data_plane.predictor.Predictor`, behind an admission gate
(:class:`data_plane.admission.Admission`).

Predict answers wire bytes (:func:`encode_response`, an identity serializer), as ModelInfer does and for
the same reason (see ``data_plane.api.oip_tensors``): a response message built and serialized per request
costs a loaded server tens of µs of CPU.

Every request is counted in ``aether_inference_requests_total`` with the status its caller saw: answered,
refused, failed by a bug (INTERNAL), ended by gRPC at its deadline or the caller's cancel
(:func:`data_plane.api.outcomes.call_status`), or answered too large for one message (RESOURCE_EXHAUSTED,
checked here: gRPC refuses it only after the handler returns). PredictBatch counts each request it
carries, as Predict would count it, whether the batch is answered or refused whole (see
:meth:`PredictServicer.PredictBatch`)."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import sys
import time
from typing import Any

import grpc
import grpc.aio
import numpy as np
from google.protobuf.message import DecodeError

from clients.aether.v1 import inference_pb2 as pb
from clients.errors import (
    AetherError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    internal_message,
    maps_errors,
)
from clients.serving_rules import request_id_problem
from data_plane.admission import Admission
from data_plane.api.outcomes import call_status, too_large
from data_plane.api.registration import add_service, not_parsed
from data_plane.feature_vector import RowFacts
from data_plane.metrics import UNRESOLVED, ServingMetrics
from data_plane.predictor import PredictCall, Prediction, Predictor
from data_plane.wire import varint

_log = logging.getLogger("aether.data_plane.predict")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Inference"].full_name
MAX_BATCH_REQUESTS = 1000
API = "Predict"
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.name
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.name
_Request = pb.PredictRequest
_BatchRequest = pb.PredictBatchRequest
BATCH = "PredictBatch"


def _call(request: pb.PredictRequest, time_remaining_s: float | None) -> PredictCall:
    if not request.deployment:
        raise InvalidArgument("deployment is required")
    # Empty: the predictor makes one up. Any other id must be one monitoring can store, or the prediction
    # would be answered and then vanish from drift and feedback.
    if request.request_id and (problem := request_id_problem(request.request_id)):
        raise InvalidArgument(problem)
    return PredictCall(
        deployment=request.deployment,
        routing_key=request.routing_key,
        rows=[row.keys for row in request.rows],
        request_features=[f.values for f in request.request_features],
        request_id=request.request_id,
        time_remaining_s=time_remaining_s,
    )


_DTYPE_NAMES: dict[np.dtype[Any], str] = {}


def _dtype_name(dtype: np.dtype[Any]) -> str:
    # ``dtype.name`` is computed in Python on every access; the answers are few, so keep them.
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


def to_response(prediction: Prediction) -> pb.PredictResponse:
    response = pb.PredictResponse(
        model_name=prediction.model.name,
        model_version=prediction.model.version,
        variant=prediction.variant,
        request_id=prediction.request_id,
    )
    for name, array in prediction.outputs.items():
        response.outputs.add(
            name=name, dtype=_dtype_name(array.dtype), shape=array.shape, data=array.tobytes()
        )
    for facts in prediction.rows:
        response.rows.add(
            fallback=pb.FALLBACK_DEFAULTS if facts.fallback else pb.FALLBACK_NONE,
            missing_features=facts.missing,
            stale_features=facts.stale,
        )
    return response


# PredictResponse: outputs = 1, model_name = 2, model_version = 3, variant = 4, request_id = 5, rows = 6;
# OutputTensor: name = 1, dtype = 2, shape = 3, data = 4. Fields go out in field-number order.
_OUTPUT_TAG = b"\x0a"
_REQUEST_ID_TAG = b"\x2a"
_ROW_TAG = b"\x32"
_DATA_TAG = b"\x22"


@functools.lru_cache(maxsize=1024)
def _tensor_head(name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    return pb.OutputTensor(name=name, dtype=dtype, shape=shape).SerializeToString()


@functools.lru_cache(maxsize=256)
def _model_fields(model_name: str, model_version: int, variant: str) -> bytes:
    return pb.PredictResponse(
        model_name=model_name, model_version=model_version, variant=variant
    ).SerializeToString()


@functools.lru_cache(maxsize=1024)
def _row(facts: RowFacts) -> bytes:
    info = pb.RowInfo(
        fallback=pb.FALLBACK_DEFAULTS if facts.fallback else pb.FALLBACK_NONE,
        missing_features=facts.missing,
        stale_features=facts.stale,
    ).SerializeToString()
    return _ROW_TAG + varint(len(info)) + info


def encode_response(prediction: Prediction) -> bytes:
    """The serialized ``PredictResponse`` of :func:`to_response`, written from cached parts."""
    parts: list[bytes] = []
    for name, array in prediction.outputs.items():
        data = array.tobytes()
        tensor = _tensor_head(name, _dtype_name(array.dtype), array.shape)
        if data:  # proto3 leaves an empty bytes field out
            tensor += _DATA_TAG + varint(len(data)) + data
        parts += (_OUTPUT_TAG, varint(len(tensor)), tensor)
    parts.append(_model_fields(prediction.model.name, prediction.model.version, prediction.variant))
    if prediction.request_id:
        request_id = prediction.request_id.encode()
        parts += (_REQUEST_ID_TAG, varint(len(request_id)), request_id)
    parts += map(_row, prediction.rows)
    return b"".join(parts)


class PredictServicer:
    def __init__(
        self, predictor: Predictor, metrics: ServingMetrics, max_send_bytes: int | None = None
    ) -> None:
        self._predictor = predictor
        self._metrics = metrics
        # The server's grpc.max_send_message_length (None: unlimited, gRPC's default for sending).
        self._max_send_bytes = sys.maxsize if max_send_bytes is None else max_send_bytes
        self.admission = Admission()
        metrics.track_in_flight(API, lambda: self.admission.in_flight)

    async def _predict(
        self,
        request: pb.PredictRequest,
        time_remaining_s: float | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> tuple[Prediction, float]:
        """The prediction and its seconds. A failure is counted here; an answer by the caller, once it
        knows the response fits in a message."""
        started = time.perf_counter()
        try:
            prediction = await self._predictor.predict(_call(request, time_remaining_s))
        except BaseException as exc:  # counted whatever it is, then answered as before
            self._metrics.request(
                API, self._label(request.deployment), UNRESOLVED, call_status(exc, context), None
            )
            raise
        return prediction, time.perf_counter() - started

    def _label(self, deployment: str) -> str:
        """The ``model`` label of a request that failed before resolving a version: its deployment's name
        only when it names one (a series per unknown name would be kept for ever); the check costs a
        failed request only."""
        return deployment if self._predictor.serves(deployment) else UNRESOLVED

    @maps_errors
    async def Predict(self, data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Answers a serialized ``PredictResponse`` (see :func:`encode_response`) to a serialized
        ``PredictRequest``, parsed here so that one that does not parse is counted and answered
        INVALID_ARGUMENT (see :mod:`data_plane.api.registration`)."""
        try:
            request = _Request.FromString(data)
        except DecodeError as exc:
            self._metrics.request(API, UNRESOLVED, UNRESOLVED, grpc.StatusCode.INVALID_ARGUMENT.name, None)
            raise not_parsed(_Request, exc) from None
        try:
            self.admission.enter()
        except Unavailable:  # draining: counted as ModelInfer counts it, under the deployment it names
            self._metrics.request(API, self._label(request.deployment), UNRESOLVED, _UNAVAILABLE, None)
            raise
        try:
            prediction, seconds = await self._predict(request, context.time_remaining(), context)
            response = encode_response(prediction)
        finally:
            self.admission.leave()
        model = prediction.model
        if len(response) > self._max_send_bytes:
            self._metrics.request(API, model.name, model.version, "RESOURCE_EXHAUSTED", None)
            raise too_large(len(response), self._max_send_bytes)
        self._metrics.request(API, model.name, model.version, "OK", seconds)
        return response

    @maps_errors
    async def PredictBatch(
        self, data: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictBatchResponse:
        """Each request is counted as a Predict of its own would be: answered or failed by itself, and so
        when the batch is refused whole (both used to go uncounted). Over the limit, the requests are
        counted under no name: they are not looked at (a batch may carry hundreds of thousands); while
        draining, each under the deployment it names, as a refused Predict. A batch that does not parse
        counts once, under no name (its requests are unknown): parsed here, as Predict parses its own,
        since the registration's generic parse answered INVALID_ARGUMENT without counting it."""
        try:
            request = _BatchRequest.FromString(data)
        except DecodeError as exc:
            self._metrics.request(API, UNRESOLVED, UNRESOLVED, grpc.StatusCode.INVALID_ARGUMENT.name, None)
            raise not_parsed(_BatchRequest, exc) from None
        count = len(request.requests)
        if count > MAX_BATCH_REQUESTS:
            self._metrics.request(API, UNRESOLVED, UNRESOLVED, _RESOURCE_EXHAUSTED, None, count)
            raise ResourceExhausted(
                f"{count} requests in one PredictBatch; the limit is {MAX_BATCH_REQUESTS}"
            )
        remaining = context.time_remaining()
        try:
            self.admission.enter(count)
        except Unavailable:
            labels = collections.Counter(r.deployment for r in request.requests)
            for deployment, requests in labels.items():
                self._metrics.request(API, self._label(deployment), UNRESOLVED, _UNAVAILABLE, None, requests)
            raise
        try:
            results = await asyncio.gather(
                *(self._predict(r, remaining, context) for r in request.requests), return_exceptions=True
            )
        finally:
            self.admission.leave(count)
        response = pb.PredictBatchResponse()
        answered: list[tuple[Prediction, float]] = []
        for result in results:
            if isinstance(result, tuple):
                answered.append(result)
                response.results.add(code=0, response=to_response(result[0]))
            elif isinstance(result, AetherError):
                response.results.add(code=result.code.value[0], message=result.message)
            else:
                _log.error("unexpected error in PredictBatch", exc_info=result)
                response.results.add(
                    code=grpc.StatusCode.INTERNAL.value[0], message=internal_message("PredictBatch", result)
                )
        size = response.ByteSize()
        if size > self._max_send_bytes:  # gRPC would refuse it after we return: none of these answers arrives
            for prediction, _ in answered:
                model = prediction.model
                self._metrics.request(API, model.name, model.version, "RESOURCE_EXHAUSTED", None)
            raise too_large(size, self._max_send_bytes)
        for prediction, seconds in answered:
            self._metrics.request(API, prediction.model.name, prediction.model.version, "OK", seconds)
        return response


def add_to_server(servicer: PredictServicer, server: grpc.aio.Server) -> None:
    add_service(server, servicer, pb, "Inference", answers_bytes={API}, parses_bytes={API, BATCH})
