"""Predict, transport-free: a deployment name, a routing key and entity rows in; the outputs and the model
version and variant that produced them out.

Resolution: the deployment's plan (from the deployment watch) routes the request
(:func:`data_plane.routing.choose_variant` on the routing key, or the request id when there is none);
without a plan of that name, a model loaded from the static model config of the same name serves it
(its newest READY version from that config, variant ``static``). Only the static config's versions: a
version a plan loaded (a canary, a shadow) is served through its deployment's plan alone, so that a
request naming its model can neither reach a shadow nor bypass the canary controller; such a name is
NOT_FOUND. Then the model's features are fetched and merged
(:mod:`data_plane.feature_vector`), the model runs through its batcher, and the request is logged when
sampled. Shadow variants get a mirrored copy in the background; their answers are only logged. Every
request leaves a prediction-log entry with its latency and status, failures included.

A shadow never takes capacity the served requests need: its batches run in the model manager's shadow
threads, and each shadow variant has at most one mirrored copy in flight (queued or running); a copy
mirrored while one is in flight is shed, counted in :attr:`Predictor.shadow_dropped` and logged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from clients.errors import AetherError, NotFound
from data_plane.deployment_plan import DeploymentPlan, DeploymentPlans
from data_plane.feature_vector import FeatureAssembler, FeatureMatrix, RowFacts
from data_plane.model_references import ModelReferenceError
from data_plane.models.manager import ModelManager
from data_plane.models.spec import ModelSpec
from data_plane.models.version import ModelState
from data_plane.prediction_log import SERVED, SHADOW, PredictionLog, PredictionRecord, now_us
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


@dataclass(slots=True)
class _Trace:
    """How far a request got, for its prediction-log entry when it fails."""

    spec: ModelSpec | None = None
    variant: str = ""
    features: Array | None = None


@dataclass(frozen=True, slots=True)
class _Served:
    spec: ModelSpec
    variant: str
    shadows: tuple[tuple[ModelSpec, str], ...]
    assembled: FeatureMatrix
    outputs: dict[str, Array]


class Predictor:
    def __init__(
        self,
        manager: ModelManager,
        assembler: FeatureAssembler,
        plans: Callable[[], DeploymentPlans] | None = None,
        log: PredictionLog | None = None,
        static: Collection[tuple[str, int]] = (),
    ) -> None:
        """``static``: the (model, version) keys loaded from the static model config, the only versions a
        request naming no deployment plan may reach (read on each such request: a live view such as
        :meth:`DeploymentWatch.static_models` follows the versions added later)."""
        self._manager = manager
        self._static = static
        self._assembler = assembler
        self._plans = plans
        self._log = log
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._shadow_busy: set[tuple[str, str]] = set()  # (deployment, shadow variant) with a copy in flight
        #: Mirrored copies shed because their shadow variant already had one in flight, by
        #: (deployment, shadow variant).
        self.shadow_dropped: dict[tuple[str, str], int] = {}

    def _plan(self, deployment: str) -> DeploymentPlan | None:
        return self._plans().get(deployment) if self._plans is not None else None

    def serves(self, deployment: str) -> bool:
        """Whether ``deployment`` names a deployment plan or a model of the static config."""
        return self._plan(deployment) is not None or any(name == deployment for name, _ in self._static)

    def _route(
        self, call: PredictCall, request_id: str, plan: DeploymentPlan | None
    ) -> tuple[ModelSpec, str, tuple[tuple[ModelSpec, str], ...]]:
        if plan is not None:
            routed = choose_variant(plan, call.routing_key or request_id)
            shadows = tuple((s.model, s.name) for s in routed.shadows)
            return routed.primary.model, routed.primary.name, shadows
        return self._static_spec(call.deployment), STATIC_VARIANT, ()

    def _static_spec(self, name: str) -> ModelSpec:
        """The newest READY version of model ``name`` among those of the static config, else the newest of
        them held (its lease then says why it cannot serve). NOT_FOUND when the config has none held."""
        held: list[ModelSpec] = []
        for version in sorted(v for n, v in self._static if n == name):
            try:
                held.append(self._manager.resolve(name, version))
            except NotFound:
                continue
        if not held:
            raise NotFound(
                f"deployment {name!r} does not exist (no plan of that name, and no model of that name in "
                "the static model config)"
            )
        ready = [spec for spec in held if self._manager.state(name, spec.version) is ModelState.READY]
        return (ready or held)[-1]  # the versions are in ascending order

    async def predict(self, call: PredictCall) -> Prediction:
        """Serves one request. Every request, answered or failed, leaves one prediction-log entry with its
        latency and status (the canary controller's evidence); features and outputs only when sampled."""
        started = time.perf_counter()
        request_id = call.request_id or secrets.token_hex(16)  # as random as uuid4().hex, cheaper
        deadline = None if call.time_remaining_s is None else time.monotonic() + call.time_remaining_s
        trace = _Trace()
        log = self._log
        try:
            served = await self._serve(call, request_id, deadline, trace)
        except BaseException as exc:  # logged with its status, then answered as before
            if log is not None:
                sampled = log.sampled()
                # A CancelledError is the caller's cancel or its deadline; the canary controller takes
                # CANCELLED as the caller's doing, so a version that times out must not be logged so.
                passed = deadline is not None and time.monotonic() >= deadline - _DEADLINE_SLACK_S
                log.record(
                    self._record(
                        call, request_id, trace.spec, trace.variant, SERVED, started,
                        status_name(exc, passed), trace.features, None, sampled,
                    )
                )  # fmt: skip
            raise
        spec, variant, features = served.spec, served.variant, served.assembled.values
        if log is not None:
            sampled = bool(served.shadows) or log.sampled()  # a mirrored request is always logged in full
            log.record(
                self._record(
                    call, request_id, spec, variant, SERVED, started, None, features, served.outputs, sampled
                )
            )
        for shadow_spec, shadow_variant in served.shadows:
            self._mirror(call, request_id, shadow_spec, shadow_variant, spec, served.assembled)
        return Prediction(served.outputs, spec, variant, request_id, served.assembled.rows)

    async def _serve(
        self, call: PredictCall, request_id: str, deadline: float | None, trace: _Trace
    ) -> _Served:
        """Routes, assembles the features and runs the model; ``trace`` shows how far it got. The request
        holds its version from routing on (a lease), so a new plan that unloads it meanwhile (a rollback, a
        promotion) lets it finish there."""
        plan = self._plan(call.deployment)
        spec, variant, shadows = self._route(call, request_id, plan)
        trace.spec, trace.variant = spec, variant
        with self._manager.lease(spec.name, spec.version) as lease:
            remaining = None if deadline is None else deadline - time.monotonic()
            # What the plan's other variants read is accepted too (see refuse_unknown): looked up only for
            # a request that carries request-time features.
            also = plan.others_read[variant] if plan is not None and call.request_features else frozenset()
            try:
                assembled = await self._assembler.assemble(
                    spec, call.rows, call.request_features, remaining, also_read=also
                )
            except ModelReferenceError as exc:  # the error path only: a try costs nothing until it raises
                raise exc.in_deployment(call.deployment, "" if plan is None else variant) from None
            trace.features = assembled.values
            # Validated by this deployment's own rule for NaN: its plan's spec filled the input by it, and
            # the version's may be another deployment's config (one spec per version).
            request = lease.prepare(
                {spec.inputs[0].name: assembled.values}, allow_non_finite=spec.allow_non_finite
            )
            outputs = await lease.run(request, deadline)
        return _Served(spec, variant, shadows, assembled, outputs)

    def _record(
        self,
        call: PredictCall,
        request_id: str,
        spec: ModelSpec | None,
        variant: str,
        role: str,
        started: float,
        error_code: str | None,  # the failure's status name; None: answered
        features: Array | None,
        outputs: Mapping[str, Array] | None,
        sampled: bool,
    ) -> PredictionRecord:
        return PredictionRecord(
            request_id=request_id,
            deployment=call.deployment,
            model="" if spec is None else spec.name,
            version=0 if spec is None else spec.version,
            variant=variant,
            role=role,
            routing_key=call.routing_key,
            ts_us=now_us(),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            ok=error_code is None,
            error_code="OK" if error_code is None else error_code,
            entities=call.rows if sampled else None,
            features=features if sampled else None,
            outputs=outputs if sampled else None,
        )

    def _mirror(
        self,
        call: PredictCall,
        request_id: str,
        spec: ModelSpec,
        variant: str,
        served: ModelSpec,
        assembled: FeatureMatrix,
    ) -> None:
        """Runs the shadow in the background (it never delays or fails the served answer). It reuses the
        served request's input when its own would be the same, assembles its own from the served
        request's read when it reads the same references (another dtype, fill or policy), and reads its
        own otherwise (:meth:`FeatureAssembler.assemble_like`). Its entry
        (role ``shadow``, always sampled) is logged whether it answered or failed. A copy mirrored while the
        shadow variant still has one in flight is shed (counted and logged, not run)."""
        key = (call.deployment, variant)
        if key in self._shadow_busy:
            dropped = self.shadow_dropped.get(key, 0) + 1
            self.shadow_dropped[key] = dropped
            if dropped & (dropped - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... drop: a slow shadow, not a flood
                _log.warning(
                    "shadow %s of deployment %s (%s v%d) is still busy with an earlier copy: request %s not "
                    "mirrored to it (%d copies dropped so far)",
                    variant, call.deployment, spec.name, spec.version, request_id, dropped,
                )  # fmt: skip
            return
        self._shadow_busy.add(key)

        async def shadow() -> None:
            started = time.perf_counter()
            features: Array | None = None  # logged only once the shadow's own input is assembled
            try:
                own = await self._assembler.assemble_like(
                    spec, served, assembled, call.rows, call.request_features
                )
                features = own.values
                outputs = await self._manager.infer(
                    spec.name,
                    spec.version,
                    {spec.inputs[0].name: features},
                    shadow=True,
                    allow_non_finite=spec.allow_non_finite,
                )
            except Exception as exc:  # a broken shadow is the shadow's problem: log and move on
                _log.warning(
                    "shadow %s (%s v%d) failed for request %s: %s",
                    variant,
                    spec.name,
                    spec.version,
                    request_id,
                    exc,
                )
                if self._log is not None:
                    code = status_name(exc)
                    record = self._record(
                        call, request_id, spec, variant, SHADOW, started, code, features, None, True
                    )
                    self._log.record(record)
                return
            if self._log is not None:
                self._log.record(
                    self._record(
                        call, request_id, spec, variant, SHADOW, started, None, features, outputs, True
                    )
                )

        def done(task: asyncio.Task[None]) -> None:
            self._shadow_tasks.discard(task)
            self._shadow_busy.discard(key)

        task = asyncio.get_running_loop().create_task(shadow())
        self._shadow_tasks.add(task)
        task.add_done_callback(done)


def status_name(error: BaseException, deadline_passed: bool = False) -> str:
    """The gRPC status name a request failed with, as its client sees it: what ``maps_errors`` answers for
    it, or for a cancelled handler, DEADLINE_EXCEEDED once the call's deadline has passed and CANCELLED
    otherwise (grpc.aio cancels the handler in both cases). The prediction log and the metrics
    (:func:`data_plane.api.outcomes.call_status`) both name failures with it, so they agree."""
    if isinstance(error, AetherError):
        name: str = error.code.name
        return name
    if isinstance(error, asyncio.CancelledError):
        return "DEADLINE_EXCEEDED" if deadline_passed else "CANCELLED"
    return "INTERNAL"


# The request's deadline here is taken from the time remaining a moment after gRPC computed it, so it can
# fall a little after gRPC's own; a cancellation this close to it is the deadline's.
_DEADLINE_SLACK_S = 0.001
