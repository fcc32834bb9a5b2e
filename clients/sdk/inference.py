"""Client of the data plane's inference APIs: the Open Inference Protocol v2 (``ModelInfer`` with raw
tensors, model readiness and metadata) and ``aether.v1.Inference`` (``Predict`` / ``PredictBatch``).

The request builders and response decoders are plain functions, shared by the synchronous
:class:`InferenceClient` and by asyncio callers (the load generator) that own their own channel.
"""

from __future__ import annotations

import numbers
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from clients.aether.v1 import inference_pb2 as ipb
from clients.aether.v1 import inference_pb2_grpc as ipb_grpc
from clients.errors import AetherError, InvalidArgument, from_rpc_error
from clients.inference import grpc_predict_v2_pb2 as oip
from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from clients.sdk.arguments import mapping_list
from clients.sdk.online import DATA_PLANE_CHANNEL_OPTIONS, data_plane_channel_options, entity_rows
from clients.sdk.service_client import ServiceClient

Array = npt.NDArray[Any]

_DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}  # fmt: skip
_NUMPY = {v: np.dtype(k) for k, v in _DATATYPES.items()}


def build_infer_request(
    model: str,
    inputs: Mapping[str, Array],
    version: int | None = None,
    outputs: Sequence[str] = (),
    request_id: str = "",
) -> oip.ModelInferRequest:
    """A ModelInfer request carrying every input as ``raw_input_contents`` (little-endian, row-major)."""
    request = oip.ModelInferRequest(
        model_name=model, model_version="" if version is None else str(version), id=request_id
    )
    if not isinstance(inputs, Mapping):
        raise InvalidArgument(
            f"inputs: expected a mapping of input names to arrays, got {type(inputs).__name__}"
        )
    for name, value in inputs.items():
        array = _input_array(name, value)
        contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        request.inputs.add(name=name, datatype=_DATATYPES[array.dtype.name], shape=array.shape)
        request.raw_input_contents.append(contiguous.tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _input_array(name: str, value: object) -> Array:
    """``value`` as an array of a type the V2 protocol carries; INVALID_ARGUMENT naming the input and the
    accepted types otherwise (a plain list raised AttributeError, a str or complex array KeyError)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:  # a ragged list
        raise InvalidArgument(f"inputs[{name!r}]: not an array: {error}") from None
    if array.dtype.name not in _DATATYPES:
        raise InvalidArgument(
            f"inputs[{name!r}]: dtype {array.dtype.name} cannot be sent; expected one of "
            f"{', '.join(_DATATYPES)}"
        )
    return array


def decode_infer_response(response: oip.ModelInferResponse) -> dict[str, Array]:
    arrays: dict[str, Array] = {}
    for index, tensor in enumerate(response.outputs):
        dtype = _NUMPY[tensor.datatype].newbyteorder("<")
        arrays[tensor.name] = np.frombuffer(response.raw_output_contents[index], dtype).reshape(
            tuple(tensor.shape)
        )
    return arrays


@dataclass(frozen=True, slots=True)
class PredictResult:
    outputs: dict[str, Array]
    model_name: str
    model_version: int
    variant: str
    request_id: str
    used_defaults: tuple[bool, ...]  # per row: the entity had no stored features; defaults were used
    missing_features: tuple[int, ...]


def build_predict_request(
    deployment: str,
    rows: Iterable[Mapping[str, str | int]],
    *,
    routing_key: str = "",
    request_features: Sequence[Mapping[str, float]] = (),
    request_id: str = "",
) -> ipb.PredictRequest:
    """The request as given: an empty ``request_id`` is left to the data plane, which makes one up per
    attempt (so bytes built once and sent many times, as the load generator does, are many requests).
    :class:`InferenceClient` gives each of its calls one (:func:`new_request_id`)."""
    return ipb.PredictRequest(
        deployment=deployment,
        routing_key=routing_key,
        rows=entity_rows(rows),
        request_features=[
            ipb.RequestFeatures(values=_feature_values(values, f"request_features[{index}]"))
            for index, values in enumerate(mapping_list(request_features, "request_features"))
        ],
        request_id=request_id,
    )


def new_request_id() -> str:
    """A request id for one logical request, as random as the one the data plane makes up."""
    return secrets.token_hex(16)


def with_request_id(request: ipb.PredictRequest) -> ipb.PredictRequest:
    """``request`` itself when it has a request id, else a copy with a new one."""
    if request.request_id:
        return request
    named = ipb.PredictRequest()
    named.CopyFrom(request)
    named.request_id = new_request_id()
    return named


def _feature_values(values: Mapping[str, Any], name: str) -> dict[str, float]:
    """One row's request features, each a real number (protobuf raised a bare TypeError for a str)."""
    checked: dict[str, float] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise InvalidArgument(f"{name}: expected feature names as strings, got {key!r:.80}")
        if not isinstance(value, numbers.Real):  # numpy floats are Real; bool is, as protobuf takes it
            raise InvalidArgument(f"{name}[{key!r}]: expected a number, got {value!r:.80}")
        checked[key] = float(value)
    return checked


def decode_predict_response(response: ipb.PredictResponse) -> PredictResult:
    outputs = {
        t.name: np.frombuffer(t.data, np.dtype(t.dtype).newbyteorder("<")).reshape(tuple(t.shape))
        for t in response.outputs
    }
    return PredictResult(
        outputs=outputs,
        model_name=response.model_name,
        model_version=response.model_version,
        variant=response.variant,
        request_id=response.request_id,
        used_defaults=tuple(r.fallback == ipb.FALLBACK_DEFAULTS for r in response.rows),
        missing_features=tuple(r.missing_features for r in response.rows),
    )


class InferenceClient(ServiceClient):
    """Synchronous client of one data plane at ``target``; each call times out after ``timeout`` s."""

    DEFAULT_TIMEOUT_S = 5.0
    CHANNEL_OPTIONS = DATA_PLANE_CHANNEL_OPTIONS

    @classmethod
    def channel_options(cls, target: str) -> tuple[tuple[str, Any], ...]:
        return data_plane_channel_options(target)

    def _open_stubs(self) -> None:
        self._oip = oip_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._predict = ipb_grpc.InferenceStub(self._channel)  # type: ignore[no-untyped-call]

    def model_ready(self, model: str, version: int | None = None) -> bool:
        request = oip.ModelReadyRequest(name=model, version="" if version is None else str(version))
        return self._call(self._oip.ModelReady, request, oip.ModelReadyResponse).ready

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        *,
        version: int | None = None,
        outputs: Sequence[str] = (),
    ) -> dict[str, Array]:
        request = build_infer_request(model, inputs, version, outputs)
        response = self._call(self._oip.ModelInfer, request, oip.ModelInferResponse)
        return decode_infer_response(response)

    def predict(
        self,
        deployment: str,
        rows: Iterable[Mapping[str, str | int]],
        *,
        routing_key: str = "",
        request_features: Sequence[Mapping[str, float]] = (),
        request_id: str = "",
    ) -> PredictResult:
        request = build_predict_request(
            deployment,
            rows,
            routing_key=routing_key,
            request_features=request_features,
            # Made up here, not by the data plane, when the caller gave none: a request without a routing
            # key is assigned its variant by its request id, and a fleet channel retries a refused call
            # (UNAVAILABLE) on another replica with the same bytes, so the retry keeps the first
            # attempt's variant. An id left to the data plane was made up anew by each replica the call
            # reached, and a keyless retry could land in the other A/B variant.
            request_id=request_id or new_request_id(),
        )
        return decode_predict_response(self._call(self._predict.Predict, request, ipb.PredictResponse))

    def predict_batch(self, requests: Sequence[ipb.PredictRequest]) -> list[PredictResult | AetherError]:
        """One result per request: the prediction, or the error that request alone failed with. A request
        without a request id is sent with a new one (as :meth:`predict` does); ``requests`` stay as given."""
        batch = ipb.PredictBatchRequest(requests=[with_request_id(r) for r in requests])
        response = self._call(self._predict.PredictBatch, batch, ipb.PredictBatchResponse)
        results: list[PredictResult | AetherError] = []
        for result in response.results:
            if result.code == 0:
                results.append(decode_predict_response(result.response))
            else:
                results.append(_error(result.code, result.message))
        return results


@dataclass(frozen=True, slots=True)
class _Status:
    """A per-request status of PredictBatch, shaped like a failed call for ``from_rpc_error``."""

    status: grpc.StatusCode
    message: str

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.message


def _error(code: int, message: str) -> AetherError:
    status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
    return from_rpc_error(_Status(status, message))
