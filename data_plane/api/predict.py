"""gRPC servicer of ``aether.v1.Inference``: Predict and PredictBatch over
:class:`data_plane.predictor.Predictor`, behind an admission gate.

The gate counts the requests in flight (exported as ``aether_inference_in_flight``, what the autoscaler
reads as queue depth) and, once the server drains (SIGTERM), refuses new requests with UNAVAILABLE before
they touch anything, so that a client retries them elsewhere, while those already admitted run to the
end: a request is either refused up front or answered, never accepted and then dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from clients.aether.v1 import inference_pb2 as pb
from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.errors import AetherError, InvalidArgument, ResourceExhausted, Unavailable, maps_errors
from data_plane.metrics import ServingMetrics
from data_plane.predictor import PredictCall, Prediction, Predictor

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Inference"].full_name
MAX_BATCH_REQUESTS = 1000


def _call(request: pb.PredictRequest, time_remaining_s: float | None) -> PredictCall:
    if not request.deployment:
        raise InvalidArgument("deployment is required")
    return PredictCall(
        deployment=request.deployment,
        routing_key=request.routing_key,
        rows=[row.keys for row in request.rows],
        request_features=[f.values for f in request.request_features],
        request_id=request.request_id,
        time_remaining_s=time_remaining_s,
    )


def to_response(prediction: Prediction) -> pb.PredictResponse:
    response = pb.PredictResponse(
        model_name=prediction.model.name,
        model_version=prediction.model.version,
        variant=prediction.variant,
        request_id=prediction.request_id,
    )
    for name, array in prediction.outputs.items():
        response.outputs.add(name=name, dtype=array.dtype.name, shape=array.shape, data=array.tobytes())
    for facts in prediction.rows:
        response.rows.add(
            fallback=pb.FALLBACK_DEFAULTS if facts.fallback else pb.FALLBACK_NONE,
            missing_features=facts.missing,
            stale_features=facts.stale,
        )
    return response


class Admission:
    """Requests in flight, and the drain: once :meth:`drain` began, :meth:`enter` refuses."""

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        self.in_flight = 0
        self.draining = False
        self.last_arrival = 0.0  # time.monotonic() of the latest request, admitted or refused
        self._on_change = on_change or (lambda in_flight: None)
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_change(0)

    def enter(self, requests: int = 1) -> None:
        self.last_arrival = time.monotonic()
        if self.draining:
            raise Unavailable("this data plane is shutting down and accepts no new requests: retry elsewhere")
        self.in_flight += requests
        self._idle.clear()
        self._on_change(self.in_flight)

    def leave(self, requests: int = 1) -> None:
        self.in_flight -= requests
        if self.in_flight == 0:
            self._idle.set()
        self._on_change(self.in_flight)

    async def drain(self, timeout_s: float | None) -> bool:
        """Refuses new requests from now on and waits (up to ``timeout_s``) for the admitted ones; True
        when they all finished."""
        self.draining = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def quiet(self, quiet_s: float, timeout_s: float) -> bool:
        """Waits (up to ``timeout_s``) until no request arrived for ``quiet_s``: callers refused during the
        drain have gone elsewhere. Stopping the transport before that would cancel requests that are on
        the wire (the caller would see CANCELLED, not the refusal it can retry on)."""
        deadline = time.monotonic() + timeout_s
        while (idle := time.monotonic() - self.last_arrival) < quiet_s:
            if time.monotonic() + quiet_s - idle > deadline:
                return False
            await asyncio.sleep(quiet_s - idle)
        return True


class PredictServicer:
    def __init__(self, predictor: Predictor, metrics: ServingMetrics) -> None:
        self._predictor = predictor
        self._metrics = metrics
        self.admission = Admission(lambda in_flight: metrics.in_flight("Predict", in_flight))

    async def _predict(
        self, request: pb.PredictRequest, time_remaining_s: float | None
    ) -> pb.PredictResponse:
        started = time.perf_counter()
        try:
            prediction = await self._predictor.predict(_call(request, time_remaining_s))
        except AetherError as exc:
            self._metrics.request("Predict", request.deployment, "", exc.code.name, None)
            raise
        self._metrics.request(
            "Predict", prediction.model.name, prediction.model.version, "OK", time.perf_counter() - started
        )
        return to_response(prediction)

    @maps_errors
    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictResponse:
        self.admission.enter()
        try:
            return await self._predict(request, context.time_remaining())
        finally:
            self.admission.leave()

    @maps_errors
    async def PredictBatch(
        self, request: pb.PredictBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictBatchResponse:
        if len(request.requests) > MAX_BATCH_REQUESTS:
            raise ResourceExhausted(
                f"{len(request.requests)} requests in one PredictBatch; the limit is {MAX_BATCH_REQUESTS}"
            )
        remaining = context.time_remaining()
        count = len(request.requests)
        self.admission.enter(count)
        try:
            results = await asyncio.gather(
                *(self._predict(r, remaining) for r in request.requests), return_exceptions=True
            )
        finally:
            self.admission.leave(count)
        response = pb.PredictBatchResponse()
        for result in results:
            if isinstance(result, pb.PredictResponse):
                response.results.add(code=0, response=result)
            elif isinstance(result, AetherError):
                response.results.add(code=result.code.value[0], message=result.message)
            else:
                response.results.add(
                    code=grpc.StatusCode.INTERNAL.value[0], message=f"{type(result).__name__}: {result}"
                )
        return response


def add_to_server(servicer: PredictServicer, server: grpc.aio.Server) -> None:
    pb_grpc.add_InferenceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
