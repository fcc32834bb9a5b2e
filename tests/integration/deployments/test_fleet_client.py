"""The SDK's Predict over a fleet channel: a call refused by one replica (UNAVAILABLE, as a draining one
refuses) is retried on another with the same request, so the retry is assigned the variant the first
attempt was (the data plane routes a request without a routing key by its request id)."""

from __future__ import annotations

import asyncio
import threading

import grpc
import grpc.aio

from clients.aether.v1 import inference_pb2 as ipb
from clients.sdk.inference import InferenceClient, PredictResult, build_predict_request


class _Recorder:
    """Predict on several real gRPC servers: the first attempt anywhere is refused with UNAVAILABLE, the
    others answered; every attempt's request id and routing key is recorded."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []
        self.batches: list[list[str]] = []  # per PredictBatch attempt, its requests' ids
        self._lock = threading.Lock()

    async def predict(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        parsed = ipb.PredictRequest.FromString(request)
        with self._lock:
            self.attempts.append((parsed.request_id, parsed.routing_key))
            first = len(self.attempts) == 1
        if first:  # what a replica answers once its drain delay is over
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return ipb.PredictResponse(request_id=parsed.request_id, variant="blue").SerializeToString()

    async def predict_batch(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        parsed = ipb.PredictBatchRequest.FromString(request)
        with self._lock:
            self.batches.append([r.request_id for r in parsed.requests])
            first = len(self.batches) == 1
        if first:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return ipb.PredictBatchResponse(
            results=[
                ipb.PredictResult(response=ipb.PredictResponse(request_id=r.request_id))
                for r in parsed.requests
            ]
        ).SerializeToString()

    def server(self) -> tuple[grpc.aio.Server, str]:
        server = grpc.aio.server()
        handlers = {
            "Predict": grpc.unary_unary_rpc_method_handler(self.predict),
            "PredictBatch": grpc.unary_unary_rpc_method_handler(self.predict_batch),
        }
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("aether.v1.Inference", handlers)]
        )
        return server, f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"


async def test_a_retried_predict_without_a_routing_key_keeps_its_request_id_and_so_its_variant() -> None:
    """Without a routing key or request id the data plane made an id up on each replica the call reached,
    and routed by it: the retry of a refused call could be served by another A/B variant."""
    recorder = _Recorder()
    servers = [recorder.server() for _ in range(2)]
    for server, _ in servers:
        await server.start()
    try:
        target = "ipv4:" + ",".join(address for _, address in servers)
        with InferenceClient(target, timeout=5) as client:
            answer = await asyncio.to_thread(client.predict, "eta-prod", [{"user": "u1"}])
        assert len(recorder.attempts) == 2, recorder.attempts  # refused once, answered on the retry
        (first_id, first_key), (retry_id, retry_key) = recorder.attempts
        assert first_key == retry_key == ""
        assert first_id != "" and retry_id == first_id == answer.request_id

        # PredictBatch alike: each request without an id gets one, kept by the retry; the caller's stay.
        given = [build_predict_request("eta-prod", [{"user": u}]) for u in ("u1", "u2")]
        with InferenceClient(target, timeout=5) as client:
            results = await asyncio.to_thread(client.predict_batch, given)
        first, retry = recorder.batches
        assert all(first) and len(set(first)) == 2 and retry == first
        assert [r.request_id for r in results if isinstance(r, PredictResult)] == first
        assert [r.request_id for r in given] == ["", ""]
    finally:
        for server, _ in servers:
            await server.stop(0)
