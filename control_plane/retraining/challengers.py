"""After a retraining job: follow up the submitted decisions' jobs, evaluate each new model version (the
challenger) against the champion, and move the promotions along — steps 1 and 2 of a retraining tick
(:mod:`control_plane.retraining.loop`, whose docstring tells the whole loop).

A decision whose job FAILED, was CANCELLED or is gone, or registered no version, ends ``job_failed``
with an alert. A follow-up that fails for a passing reason (:func:`.failures.passing`: the database or
Redis unavailable) is tried again at the next tick, up to :data:`MAX_FOLLOW_UP_ATTEMPTS` in a row; one that
fails for another reason, or too often, ends ``evaluation_failed``, and the champion keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import AetherError, FailedPrecondition, NotFound
from control_plane.jobs.service import JobService
from control_plane.jobs.store import JobState
from control_plane.model_registry.model_classes import DeclaredClasses, classes_in_model
from control_plane.model_registry.registry import ModelRegistry
from control_plane.monitoring import config as monitor_configs
from control_plane.monitoring.alerts import Alerter
from control_plane.retraining import config as configs
from control_plane.retraining import evaluation_records, observe, records
from control_plane.retraining.evaluation import evaluate
from control_plane.retraining.failures import passing
from control_plane.retraining.holdout import production_holdout
from control_plane.retraining.promotion import FAILED, IN_PROGRESS, PENDING, SHADOW, Promoter
from control_plane.retraining.shadow import Agreement, agreement_rate
from control_plane.retraining.tables import RetrainingDecisionRow

_log = logging.getLogger("aether.control_plane.retraining")
ACTOR = "retraining"
_ENDED_BADLY = (JobState.FAILED.proto, JobState.CANCELLED.proto)
EVALUATION_FAILED = "evaluation_failed"
#: Ticks in a row a follow-up may fail for a passing reason before its decision is given up.
MAX_FOLLOW_UP_ATTEMPTS = 10


class Challengers:
    """``stream``: the prediction log's Redis stream, where the production holdout and the shadow
    agreement are read."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: ModelRegistry,
        jobs: JobService,
        promoter: Promoter,
        client: redis.asyncio.Redis,
        stream: str,
        alerter: Alerter,
        clock: Callable[[], float],
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._jobs = jobs
        self.promoter = promoter
        self._client = client
        self._stream = stream
        self._alerter = alerter
        self._clock = clock
        #: Decision id -> follow-ups failed in a row (kept in memory: a restart starts the count again).
        self._follow_up_failures: dict[int, int] = {}
        #: (model, version) -> the classes its ONNX file declares (:meth:`_declared_classes`).
        self._classes: dict[tuple[str, int], DeclaredClasses | None] = {}

    async def _alert(self, deployment: str, kind: str, message: str, reasons: list[str]) -> None:
        await self._alerter.alert(
            {"kind": kind, "deployment": deployment, "message": message, "reasons": reasons}
        )

    async def follow_up(self) -> None:
        for row in await asyncio.to_thread(records.submitted, self._sessions):
            try:
                await self._follow_up(row)
                self._follow_up_failures.pop(row.id, None)
            except Exception as exc:
                tries = self._follow_up_failures.get(row.id, 0) + 1
                self._follow_up_failures[row.id] = tries
                _log.exception("follow-up of retraining decision %d (%s) failed", row.id, row.deployment)
                if passing(exc) and tries < MAX_FOLLOW_UP_ATTEMPTS:
                    continue  # the decision stays submitted, so the next tick tries it again
                with contextlib.suppress(Exception):  # logged above; still submitted, tried next tick
                    await self._give_up(row, exc, tries)

    async def _give_up(self, row: RetrainingDecisionRow, exc: Exception, tries: int) -> None:
        """Ends a decision whose follow-up keeps failing: the champion keeps serving, and the deployment
        may retrain again."""
        attempts = f" ({tries} attempts)" if tries > 1 else ""
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AetherError) else str(exc)
        why = f"evaluation of job {row.job_id}'s model failed{attempts}: {error}; champion keeps serving"
        await asyncio.to_thread(
            records.set_outcome, self._sessions, row.id, EVALUATION_FAILED, why[:2000], actor=ACTOR
        )
        self._follow_up_failures.pop(row.id, None)
        message = f"evaluation of the retraining of {row.deployment} failed"
        await self._alert(row.deployment, "retraining_failed", message, [why])

    async def _follow_up(self, row: RetrainingDecisionRow) -> None:
        try:
            job = await asyncio.to_thread(self._jobs.get, row.job_id)
        except NotFound as exc:  # its row deleted: nothing will ever finish, the decision ends now
            why = f"job {row.job_id!r} is gone ({exc}); champion keeps serving"
            await asyncio.to_thread(
                records.set_outcome, self._sessions, row.id, "job_failed", why, actor=ACTOR
            )
            message = f"retraining of {row.deployment} failed"
            await self._alert(row.deployment, "retraining_failed", message, [why])
            return
        if job.state in _ENDED_BADLY:
            state = JobState.from_proto(job.state).value
            why = f"job {job.job_id} ended {state}: {job.reason}; champion keeps serving"
            await asyncio.to_thread(
                records.set_outcome, self._sessions, row.id, "job_failed", why, actor=ACTOR
            )
            await self._alert(
                row.deployment, "retraining_failed", f"retraining of {row.deployment} failed", [why]
            )
        elif job.state == JobState.SUCCEEDED.proto:
            version = await asyncio.to_thread(
                observe.version_of_run, self._registry, row.model_name, job.run_id
            )
            if version is None:
                why = f"job {job.job_id} registered no version of {row.model_name}; champion keeps serving"
                await asyncio.to_thread(
                    records.set_outcome, self._sessions, row.id, "job_failed", why, actor=ACTOR
                )
                await self._alert(row.deployment, "retraining_failed", why, [why])
            else:
                await self.evaluate(row, version)

    async def evaluate(self, decision: RetrainingDecisionRow, challenger_version: int) -> pb.Evaluation:
        """Evaluates ``challenger_version`` against the champion (the version of its model the decision's
        deployment serves now: :meth:`_serving`) and starts its promotion."""
        config = await asyncio.to_thread(configs.get_config, self._sessions, decision.deployment)
        monitor = await asyncio.to_thread(monitor_configs.get_config, self._sessions, decision.deployment)
        config = configs.effective(config, monitor.alert_metric)
        problem = configs.gates_unscorable(config, monitor)
        if problem is not None:  # the monitor changed since the job was submitted: not the challenger's fault
            raise FailedPrecondition(f"the challenger cannot be evaluated: {problem}")
        now = int(self._clock() * 1e6)
        found = await production_holdout(
            self._sessions,
            self._client,
            self._stream,
            decision.deployment,
            now - int(config.gates.holdout_seconds * 1e6),
            now,
            self._feature_refs,
        )
        if found.duplicate_request_ids:
            _log.warning(
                "holdout of %s: %d logged rows re-use the request id and row of a labelled prediction"
                " without being it; the labels are paired with the prediction they joined (the first),"
                " those rows left out",
                decision.deployment,
                found.duplicate_request_ids,
            )
        champion_version = await asyncio.to_thread(self._serving, decision, challenger_version)
        champion = await asyncio.to_thread(self._version, decision.model_name, champion_version)
        challenger = await asyncio.to_thread(self._version, decision.model_name, challenger_version)
        # Each model gets the logged columns its own feature refs name; one the holdout lacks fails the
        # evaluation (FAILED_PRECONDITION: evaluation_failed, the champion untouched), never a column of
        # another feature in its place.
        result = await asyncio.to_thread(
            evaluate,
            self._open(champion),
            self._open(challenger),
            found.holdout,
            configs.gates_of(config),
            monitor,
            champion_refs=tuple(champion.feature_refs),
            challenger_refs=tuple(challenger.feature_refs),
        )
        # The evaluation and the decision's "evaluated" outcome are one write, so a retry after a failed
        # write never stores a second evaluation of the same decision.
        evaluation = await asyncio.to_thread(
            evaluation_records.add_evaluation,
            self._sessions,
            decision.deployment,
            decision,
            challenger_version,
            config.gates.metric,
            result,
            actor=ACTOR,
            champion_version=champion_version,
        )
        if not result.passed:
            await self._alert(
                decision.deployment,
                "challenger_rejected",
                f"challenger {decision.model_name} v{challenger_version} failed the gates",
                list(result.reasons),
            )
        # Should this fail, the evaluation is stored all the same: advance_promotions starts it again.
        await self._start_promotion(evaluation, config.promotion)
        return evaluation

    def _serving(self, decision: RetrainingDecisionRow, challenger_version: int) -> int:
        """The champion a challenger is judged against: the version of its model the deployment serves now
        (its primary), which a person may have changed while the job ran. Judged against the version that
        served when the retraining triggered, a challenger losing to that one was rejected in the registry
        for good without being compared with the serving one, and one beating it was approved (so
        deployable) though it may be worse than the serving one, then failed as superseded.
        FAILED_PRECONDITION (the evaluation fails, the registry untouched) when the deployment serves
        another model now, or nothing: there is no version of the challenger's model to judge it against;
        NOT_FOUND when the deployment is gone."""
        deployment = self.promoter.deployments.get(decision.deployment)
        primary = next((v for v in deployment.variants if v.role == dpb.VARIANT_ROLE_PRIMARY), None)
        if primary is None or primary.model_name != decision.model_name:
            serves = "no primary" if primary is None else f"{primary.model_name} v{primary.version}"
            raise FailedPrecondition(
                f"deployment {decision.deployment!r} now serves {serves}, not model {decision.model_name!r}:"
                f" no champion to judge challenger {decision.model_name} v{challenger_version} against"
            )
        return int(primary.version)

    def _declared_classes(self, model_name: str, version: int) -> DeclaredClasses | None:
        """The classes a model version's ONNX file declares, read once per version (a version's artifact
        never changes; the shadow phase compares its answers on every tick)."""
        key = (model_name, version)
        if key not in self._classes:
            self._classes[key] = classes_in_model(self._artifact(model_name, version))
        return self._classes[key]

    def _artifact(self, model_name: str, version: int) -> bytes:
        return self._open(self._version(model_name, version))

    def _version(self, model_name: str, version: int) -> mpb.ModelVersion:
        return self._registry.get_version(model_name, version)

    def _open(self, version: mpb.ModelVersion) -> bytes:
        return self._registry.artifacts.open_verified(version.artifact.sha256)

    def _feature_refs(self, model_name: str, version: int) -> tuple[str, ...] | None:
        """The refs naming the columns a version's logged entries carry; None when it is gone (its rows
        cannot be named, so the holdout leaves them out)."""
        try:
            return tuple(self._version(model_name, version).feature_refs)
        except NotFound:
            return None

    async def advance_promotions(self) -> None:
        for evaluation in await asyncio.to_thread(evaluation_records.unstarted_promotions, self._sessions):
            try:
                config = await asyncio.to_thread(configs.get_config, self._sessions, evaluation.deployment)
                await self._start_promotion(evaluation, config.promotion)
            except Exception:  # the promotion is still unstarted: the next tick tries again
                _log.exception("promotion of evaluation %d cannot start", evaluation.id)
        now = int(self._clock() * 1e6)
        for evaluation in await asyncio.to_thread(
            evaluation_records.promotions_in, self._sessions, IN_PROGRESS
        ):
            try:
                await self._advance(evaluation, now)
            except AetherError as exc:
                _log.warning("promotion of evaluation %d cannot advance: %s", evaluation.id, exc)
            except Exception:
                _log.exception("promotion of evaluation %d cannot advance", evaluation.id)

    async def _start_promotion(self, evaluation: pb.Evaluation, policy: pb.PromotionPolicy) -> None:
        status = await asyncio.to_thread(self.promoter.start, evaluation, policy)
        await self._report(evaluation, status)

    async def _advance(self, evaluation: pb.Evaluation, now: int) -> None:
        config = await asyncio.to_thread(configs.get_config, self._sessions, evaluation.deployment)
        agreement = Agreement(None, 0)
        if evaluation.promotion_status == SHADOW:
            monitor = await asyncio.to_thread(
                monitor_configs.get_config, self._sessions, evaluation.deployment
            )
            agreement = await agreement_rate(
                self._client,
                self._stream,
                evaluation.deployment,
                self.promoter.shadow_variant(evaluation),
                evaluation.updated_at_us,
                monitor,
                classes_of=self._declared_classes,
            )
        status = await asyncio.to_thread(
            self.promoter.advance,
            evaluation,
            config.promotion,
            now,
            agreement.rate,
            not_comparable=agreement.not_comparable,
        )
        await self._report(evaluation, status)

    async def _report(self, before: pb.Evaluation, status: str) -> None:
        """Alerts once when a promotion starts waiting for its deployment (it shows nowhere else, and a
        person may want to end the canary in the way) or fails."""
        if status == before.promotion_status or status not in (*PENDING, FAILED):
            return
        after = await asyncio.to_thread(evaluation_records.get_evaluation, self._sessions, before.id)
        what = f"promotion of {after.model_name} v{after.challenger_version} on {after.deployment}"
        if status == FAILED:
            await self._alert(
                after.deployment, "promotion_failed", f"{what} failed", [after.promotion_reason]
            )
        else:
            message = f"{what} is waiting for the deployment ({status})"
            await self._alert(after.deployment, "promotion_waiting", message, [after.promotion_reason])
