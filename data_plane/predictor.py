"""Predict, transport-free: a deployment name, a routing key and entity rows in; the outputs and the model
version and variant that produced them out.

Resolution: the deployment's plan (from the deployment watch) routes the request
(:func:`data_plane.routing.choose_variant` on the routing key, or the request id when there is none);
without a plan of that name, a model loaded from the static model config of the same name serves it
(newest READY version, variant ``static``). Then the model's features are fetched and merged
(:mod:`data_plane.feature_vector`), the model runs through its batcher, and the request is logged when
sampled. Shadow variants get a mirrored copy in the background; their answers are only logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from clients.errors import NotFound
from data_plane.deployment_plan import DeploymentPlans
from data_plane.feature_vector import FeatureAssembler, RowFacts
from data_plane.models.manager import ModelManager
from data_plane.models.spec import ModelSpec
from data_plane.prediction_log import PredictionLog, PredictionRecord, now_us
from data_plane.routing import choose_variant
from data_plane.runtime.base import Array

_log = logging.getLogger("aether.data_plane.predictor")

STATIC_VARIANT = "static"


@dataclass(frozen=True, slots=True)
class PredictCall:
    deployment: str
    routing_key: str
    rows: Sequence[Mapping[str, str]]
    request_features: Sequence[Mapping[str, float]]
    request_id: str
    time_remaining_s: float | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    outputs: dict[str, Array]
    model: ModelSpec
    variant: str
    request_id: str
    rows: tuple[RowFacts, ...]


class Predictor:
    def __init__(
        self,
        manager: ModelManager,
        assembler: FeatureAssembler,
        plans: Callable[[], DeploymentPlans] | None = None,
        log: PredictionLog | None = None,
    ) -> None:
        self._manager = manager
        self._assembler = assembler
        self._plans = plans
        self._log = log
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def _route(
        self, call: PredictCall, request_id: str
    ) -> tuple[ModelSpec, str, tuple[tuple[ModelSpec, str], ...]]:
        plan = self._plans().get(call.deployment) if self._plans is not None else None
        if plan is not None:
            routed = choose_variant(plan, call.routing_key or request_id)
            shadows = tuple((s.model, s.name) for s in routed.shadows)
            return routed.primary.model, routed.primary.name, shadows
        try:
            return self._manager.resolve(call.deployment, None), STATIC_VARIANT, ()
        except NotFound:
            raise NotFound(
                f"deployment {call.deployment!r} does not exist (no plan of that name, and no model of that "
                "name in the static model config)"
            ) from None

    async def predict(self, call: PredictCall) -> Prediction:
        request_id = call.request_id or uuid.uuid4().hex
        spec, variant, shadows = self._route(call, request_id)
        deadline = None if call.time_remaining_s is None else time.monotonic() + call.time_remaining_s
        features = await self._assembler.assemble(
            spec, call.rows, call.request_features, call.time_remaining_s
        )
        name = spec.inputs[0].name
        prepared_spec, request = self._manager.prepare(spec.name, spec.version, {name: features.values})
        outputs = await self._manager.run_prepared(prepared_spec, request, deadline)
        log = self._log
        mirrored = bool(shadows) and log is not None
        if log is not None and (mirrored or log.sampled()):
            log.record(self._record(call, request_id, spec, variant, "served", features.values, outputs))
        for shadow_spec, shadow_variant in shadows:
            self._mirror(call, request_id, shadow_spec, shadow_variant, spec, features.values)
        return Prediction(outputs, spec, variant, request_id, features.rows)

    def _record(
        self,
        call: PredictCall,
        request_id: str,
        spec: ModelSpec,
        variant: str,
        role: str,
        features: Array,
        outputs: Mapping[str, Array],
    ) -> PredictionRecord:
        return PredictionRecord(
            request_id=request_id,
            deployment=call.deployment,
            model=spec.name,
            version=spec.version,
            variant=variant,
            role=role,
            routing_key=call.routing_key,
            entities=call.rows,
            features=features,
            outputs=outputs,
            ts_us=now_us(),
        )

    def _mirror(
        self,
        call: PredictCall,
        request_id: str,
        spec: ModelSpec,
        variant: str,
        served: ModelSpec,
        features: Array,
    ) -> None:
        """Runs the shadow in the background (it never delays or fails the served answer). It reuses the
        served request's features when it reads the same ones, and fetches its own otherwise."""

        async def shadow() -> None:
            nonlocal features
            try:
                same = spec.feature_refs == served.feature_refs and spec.inputs[0].np_dtype == features.dtype
                if not same:
                    assembled = await self._assembler.assemble(spec, call.rows, call.request_features, None)
                    features = assembled.values
                outputs = await self._manager.infer(spec.name, spec.version, {spec.inputs[0].name: features})
            except Exception as exc:  # a broken shadow is the shadow's problem: log and move on
                _log.warning(
                    "shadow %s (%s v%d) failed for request %s: %s",
                    variant,
                    spec.name,
                    spec.version,
                    request_id,
                    exc,
                )
                return
            if self._log is not None:
                self._log.record(self._record(call, request_id, spec, variant, "shadow", features, outputs))

        task = asyncio.get_running_loop().create_task(shadow())
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)
