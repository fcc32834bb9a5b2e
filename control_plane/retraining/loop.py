"""The retraining loop: triggers → validated data window → retraining job → evaluation → promotion.

Every ``interval_s``, for each deployment with an enabled trigger config (:class:`Retrainer.tick`):

1. **follow up** its submitted jobs: a job that FAILED or was CANCELLED, or whose row is gone, marks its
   decision ``job_failed`` and raises an alert — nothing else changes, so the champion keeps serving; a
   job that SUCCEEDED has its new model version (the one registered by the job's run) evaluated against
   the champion (the version of its model the deployment serves by then) on the labelled production
   holdout (:mod:`.holdout`, :mod:`.evaluation`) and promoted or rejected (:mod:`.promotion`; steps 1
   and 2 live in :mod:`.challengers`). An evaluation that fails for a
   reason that will not go away (ONNX Runtime refuses the holdout, an artifact will not open), or that
   failed :data:`.challengers.MAX_FOLLOW_UP_ATTEMPTS` ticks in a row for a passing one (the database or
   Redis unavailable), marks its decision
   ``evaluation_failed`` with the reason and alerts: left ``submitted``, it failed every tick and its
   "still running" guard refused every later trigger of the deployment, manual ones included;
2. **advance** promotions in progress (approval, the hand-off to a deployment busy with another canary,
   shadow phase with its agreement rate, canary), and start again any whose start was cut short;
3. **decide** with the pure trigger step (:func:`.triggers.decide`) on what the monitor observed;
4. on a trigger: look up the serving version's training spec, **validate** the latest data window
   (:mod:`.data_window`) — a failure blocks the retraining and alerts with the reasons — and submit the
   spec over that window through the jobs core. The decision is stored (``submitting``) before the job
   is submitted under a name derived from it, then marked ``submitted`` with the job's id: a failed
   write no longer leaves a job no decision tracks, for a retry to submit a second one. A decision left
   ``submitting`` (the job's id could not be recorded, or the control plane stopped) adopts the job
   named after it at the next tick or manual trigger, or ends ``submit_failed`` when there is none
   (after :data:`SUBMIT_GRACE_S`). The ``submitting`` row is stored only if no other retraining of the
   deployment is in flight by then, and no promotion of its challengers is in progress, checked in its
   transaction: control planes sharing the database submit one job between them. An automatic trigger is
stored (submitting, or blocked) only if no other decision triggered since its step read the last trigger,
checked under the same lock: two planes ticking at once for one signal stored, and alerted, a blocked
retraining twice; the second now stores ``not_triggered`` (:data:`.records.TRIGGERED_MEANWHILE`).

A deployment does not retrain while the promotion of its previous challenger is in progress (not
started yet, awaiting a reviewer, pending, in shadow or in canary): the tick's decision is
``not_triggered`` with the reason (:func:`.triggers.still_promoting`, naming the challenger and its
status), as while its job runs, and a manual trigger gets that decision back. Nor while another
deployment serving the same model retrains it (its job in flight, or its challenger's promotion in
progress: :func:`.records.retraining_elsewhere`), since the ``challenger`` alias is the model's: the
other deployment's challenger took it from the one awaiting its reviewer. Before, a retraining
triggered meanwhile and its challenger took the ``challenger`` alias, so once a reviewer approved the
first challenger it entered the canary while the alias named the second. The guard lifts when the
promotion ends (promoted, rolled back, rejected or failed): signals counted since the last trigger
(quality windows, drift reports, labels) then trigger at the next tick; a cron minute that fell while
it held is skipped, as while a job runs. A promotion that never ends on its own (a reviewer who never
decides) is ended by rejecting its version in the registry (``aetherctl models reject``), and a canary by
ending it on the deployment; the promotion then ends ``rejected`` or ``rolled_back`` at the next tick.

Each submitted decision, promotion and deployment is handled on its own: one that fails is logged and
tried again next tick, and the others go on. An enabled config of a deployment deleted since (deleting
a deployment keeps its trigger config, as it keeps its monitor config) is passed by, with one warning.
A promotion that waits for its deployment, or fails, raises an alert. A manual trigger
(:meth:`Retrainer.trigger_now`) runs steps 3–4 at once for one deployment. Every decision, outcome,
evaluation and promotion step is in the audit log (actor ``retraining`` or the person who asked). The
schedule rule's window runs from the deployment's previous tick, which is stored (:mod:`.ticks`) once
the tick's decision is: after a restart it still starts at the last tick before the restart, so a cron
minute missed while the control plane was down fires once at the first tick after it.
Only a deployment's very first tick just marks the start of the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis.asyncio
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import monitoring_pb2 as monpb
from clients.aether.v1 import retraining_pb2 as pb
from clients.env_values import env_float
from clients.errors import AetherError, FailedPrecondition, NotFound
from control_plane.background import BackgroundLoop
from control_plane.deployments.core import DeploymentManager
from control_plane.jobs.service import JobService
from control_plane.model_registry.registry import ModelRegistry
from control_plane.monitoring import config as monitor_configs
from control_plane.monitoring.alerts import Alerter
from control_plane.monitoring.settings import DEFAULT_STREAM
from control_plane.offline.resolve import ViewCatalog
from control_plane.offline.store import OfflineStore
from control_plane.retraining import config as configs
from control_plane.retraining import observe, records, ticks
from control_plane.retraining.challengers import ACTOR, Challengers
from control_plane.retraining.data_window import check_window
from control_plane.retraining.promotion import IN_PROGRESS, PROMOTED, Promoter
from control_plane.retraining.tables import RetrainingDecisionRow
from control_plane.retraining.triggers import ManualRequest, Observations, decide

_log = logging.getLogger("aether.control_plane.retraining")
#: Seconds a decision stays ``submitting`` with no job, from its row's write, before it is taken for an
#: interrupted one.
SUBMIT_GRACE_S = 120.0


def _job_tail(decision: pb.TriggerDecision) -> str:
    """How the name of a decision's job ends (the spec's name, then the decision's second and id): a
    decision whose job id could not be recorded finds its job by it, rather than submitting another."""
    return f"-retrain-{decision.at_us // 1_000_000}-d{decision.id}"


@dataclass(frozen=True)
class RetrainingSettings:
    interval_s: float = 30.0
    stream: str = DEFAULT_STREAM
    #: Alerts go here ("" = the monitor's webhook setting, else the log only).
    webhook_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetrainingSettings:
        """``AETHER_RETRAIN_INTERVAL_S``, ``AETHER_PREDICTION_LOG_STREAM`` and ``AETHER_RETRAIN_WEBHOOK_URL``
        (default ``AETHER_MONITOR_WEBHOOK_URL``)."""
        env = os.environ if env is None else env
        return cls(
            interval_s=env_float(env, "AETHER_RETRAIN_INTERVAL_S", cls.interval_s, above=0.0),
            stream=env.get("AETHER_PREDICTION_LOG_STREAM") or DEFAULT_STREAM,
            webhook_url=env.get("AETHER_RETRAIN_WEBHOOK_URL") or env.get("AETHER_MONITOR_WEBHOOK_URL") or "",
        )


class Retrainer:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: ModelRegistry,
        deployments: DeploymentManager,
        jobs: JobService,
        catalog: ViewCatalog,
        offline: OfflineStore,
        client: redis.asyncio.Redis,
        settings: RetrainingSettings,
        alerter: Alerter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self.sessions = sessions
        self._registry = registry
        self._deployments = deployments
        self._jobs = jobs
        self._catalog = catalog
        self._offline = offline
        self._client = client
        self._settings = settings
        self.alerter = alerter or Alerter(settings.webhook_url)
        self._clock = clock
        self.challengers = Challengers(
            sessions, registry, jobs, Promoter(sessions, registry, deployments), client, settings.stream,
            self.alerter, clock,
        )  # fmt: skip
        self.promoter = self.challengers.promoter
        self._background = BackgroundLoop("retraining-loop")
        self._lock = asyncio.Lock()
        #: Deployments with enabled triggers found deleted, already warned about (until they exist again).
        self._gone: set[str] = set()

    # -- the loop ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        """Ends the loop and waits for it (it closes its Redis client on the way out)."""
        await self._background.stop()

    async def _run(self) -> None:
        try:
            while self._background.running:
                try:
                    await self.tick()
                except Exception:  # one bad tick must not end the loop
                    _log.exception("retraining tick failed")
                await self._background.pause(self._settings.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    async def tick(self) -> list[pb.TriggerDecision]:
        async with self._lock:
            try:
                await self._resume_submits()
            except Exception:  # still submitting: the next tick tries again
                _log.exception("resuming interrupted retraining submissions failed")
            await self.follow_up()
            await self.advance_promotions()
            decisions = []
            for config in await asyncio.to_thread(configs.enabled_configs, self._sessions):
                try:
                    deployment = await self._live_deployment(config.deployment)
                    if deployment is None:
                        continue
                    decision = await self._step(config, deployment, None)
                except Exception:  # one deployment's failure must not stop the others' decisions
                    _log.exception("retraining decision for deployment %r failed", config.deployment)
                    continue
                if decision is not None:
                    decisions.append(decision)
            return decisions

    async def trigger_now(self, deployment: str, actor: str, reason: str = "") -> pb.TriggerDecision:
        async with self._lock:
            config = await asyncio.to_thread(configs.get_config, self._sessions, deployment)
            adopted = [d for d in await self._resume_submits(deployment) if d.outcome == records.SUBMITTED]
            if adopted:  # a retry of a trigger whose job was submitted but not recorded: that job it is
                return adopted[-1]
            # NOT_FOUND for a deployment deleted since (or never created): asked for, it is an error.
            found = await asyncio.to_thread(self._deployments.get, deployment)
            decision = await self._step(config, found, ManualRequest(actor, reason))
            if decision is None:
                raise FailedPrecondition(f"deployment {deployment!r} has no primary variant to retrain")
            return decision

    # -- one deployment ----------------------------------------------------------------------------------

    async def _live_deployment(self, name: str) -> dpb.Deployment | None:
        """Deployment ``name``, or None when it was deleted. Deleting a deployment keeps its trigger config,
        as it keeps its monitor config and its records (readable, and in force again for a deployment
        created under the name): the loop passes it by, with one warning per deletion, where it logged a
        NotFound traceback as an ERROR on every tick."""
        try:
            deployment = await asyncio.to_thread(self._deployments.get, name)
        except NotFound:
            if name not in self._gone:
                self._gone.add(name)
                _log.warning(
                    "deployment %r has enabled retraining triggers but no longer exists: no retraining for "
                    "it until a deployment of that name is created again (or its triggers are disabled)",
                    name,
                )
            return None
        self._gone.discard(name)  # deleted again later: said again
        return deployment

    async def _step(
        self, config: pb.TriggerConfig, deployment: dpb.Deployment, manual: ManualRequest | None
    ) -> pb.TriggerDecision | None:
        now = int(self._clock() * 1e6)
        name = config.deployment
        primary = next((v for v in deployment.variants if v.role == dpb.VARIANT_ROLE_PRIMARY), None)
        if primary is None:
            return None
        monitor = await asyncio.to_thread(monitor_configs.get_config, self._sessions, name)
        if not config.performance_metric:
            config = configs.effective(config, monitor.alert_metric)
        seen, labels_until_us = await asyncio.to_thread(
            self._observe, config, monitor, now, manual, primary.model_name
        )
        decision = decide(configs.rules_of(config), seen)
        actor = manual.actor if manual is not None else ACTOR
        draft = records.Draft(
            name,
            now,
            decision.triggered,
            decision.rules,
            actor,
            primary.model_name,
            int(primary.version),
            seen_last_triggered_us=seen.last_triggered_us if manual is None else None,
            labels_until_us=labels_until_us,
        )
        problem = configs.gates_unscorable(config, monitor) if decision.triggered else None
        if not decision.triggered:
            stored = await asyncio.to_thread(
                records.add_decision, self._sessions, draft, decision.reasons, records.NOT_TRIGGERED
            )
        elif problem is not None:  # before any job: its challenger could only be rejected
            stored = await self._blocked(draft, records.BLOCKED_NO_METRIC, [*decision.reasons, problem])
        else:
            stored = await self._retrain(config, primary, decision.reasons, draft)
        # The window moves on only once its decision is stored: a crash before this line makes the next
        # tick decide the same window again, and the cooldown and running-job guards see the decision.
        await asyncio.to_thread(ticks.record, self._sessions, name, now)
        return stored

    def _observe(
        self,
        config: pb.TriggerConfig,
        monitor: monpb.MonitorConfig,
        now: int,
        manual: ManualRequest | None,
        model: str,
    ) -> tuple[Observations, int]:
        """What the step decides on for deployment ``config.deployment``, which serves ``model``, and where
        its label-volume period ends (the database's clock, which labels are stamped by: see
        :func:`.observe.label_volume`), stored with a trigger as the next period's start. The other
        signals are dated by this loop's clock (``now``)."""
        name = config.deployment
        last = records.last_triggered_us(self._sessions, name)
        if config.new_labels:
            labels = observe.label_volume(
                self._sessions, name, records.last_label_period_end(self._sessions, name)
            )
        else:  # not counted, but a trigger still starts the next period (the rule may be turned on)
            labels = observe.LabelVolume(0, observe.label_period_end(self._sessions))
        seen = Observations(
            now_us=now,
            previous_tick_us=ticks.previous(self._sessions, name),
            last_triggered_us=last,
            champion_since_us=records.last_promoted_us(self._sessions, name, PROMOTED),
            retraining_running=bool(records.submitted(self._sessions, name, records.IN_FLIGHT)),
            promotion_in_progress=records.promotion_in_progress(self._sessions, name, IN_PROGRESS) or "",
            held_by=records.retraining_elsewhere(self._sessions, name, model, IN_PROGRESS) or "",
            performance=observe.performance_windows(self._sessions, monitor, last, now),
            drift=observe.drift_reports(self._sessions, name, last, now),
            new_labels=labels.count,
            manual=manual,
        )
        return seen, labels.until_us

    async def _retrain(
        self, config: pb.TriggerConfig, primary: dpb.Variant, reasons: tuple[str, ...], draft: records.Draft
    ) -> pb.TriggerDecision:
        now = draft.at_us
        champion = await asyncio.to_thread(
            self._registry.get_version, primary.model_name, int(primary.version)
        )
        found = await asyncio.to_thread(observe.training_spec, self._sessions, champion.run_id)
        if found is None:
            why = f"no training job recorded for {primary.model_name} v{primary.version}: nothing to resubmit"
            return await self._blocked(draft, "blocked_no_spec", [*reasons, why])
        _job_id, original = found
        try:  # reads the recorded dataset's features: off the event loop
            spec = await asyncio.to_thread(
                observe.retraining_spec, original, config, primary.model_name, now, self._offline
            )
        except FailedPrecondition as exc:
            return await self._blocked(draft, "blocked_no_spec", [*reasons, exc.message])
        moment = dt.datetime.fromtimestamp(now / 1e6, dt.UTC)
        check = await asyncio.to_thread(
            check_window, config, spec, self._catalog, self._offline, moment, self._jobs.datasets_root
        )
        if not check.passed:
            invalid = ["data window invalid: " + r for r in check.reasons]
            return await self._blocked(draft, "blocked_validation", [*reasons, *invalid])
        pending = await asyncio.to_thread(
            records.add_submitting,
            self._sessions,
            draft,
            reasons,
            lambda: int(self._clock() * 1e6),
            promoting=IN_PROGRESS,
        )
        if pending.outcome != records.SUBMITTING:  # another control plane's retraining got there first
            return pending
        tail = _job_tail(pending)
        spec.name = spec.name.rsplit("-retrain-", 1)[0][: 128 - len(tail)] + tail
        try:
            job = await asyncio.to_thread(self._jobs.submit, spec, actor=draft.actor)
        except AetherError as exc:
            return await self._submit_failed(pending, f"job submission refused: {exc}")
        return await asyncio.to_thread(
            records.set_outcome,
            self._sessions,
            pending.id,
            records.SUBMITTED,
            f"submitted job {job.job_id}",
            actor=draft.actor,
            job_id=job.job_id,
        )

    async def _resume_submits(self, deployment: str | None = None) -> list[pb.TriggerDecision]:
        """Ends the decisions left ``submitting``: each adopts the job submitted under its name, or with
        none (the control plane stopped, or the jobs core failed, before it was stored) ends
        ``submit_failed`` so that the deployment may trigger again. The lock keeps this control plane's
        own submissions out of the way; another's may be in flight, so a decision without a job is left
        alone for :data:`SUBMIT_GRACE_S` (ended at once, its job was submitted after all, and this
        control plane retrained a second time). The grace runs from the row's write (``stored_at_us``),
        not from the decision's moment (``at_us``, its step's start): a slow step ate into it."""
        ended, now = [], int(self._clock() * 1e6)
        for row in await asyncio.to_thread(
            records.submitted, self._sessions, deployment, (records.SUBMITTING,)
        ):
            message = records.decision_message(row)
            job_id = await asyncio.to_thread(
                observe.job_ending, self._sessions, _job_tail(message), row.at_us
            )
            if job_id is None and now - row.stored_at_us < SUBMIT_GRACE_S * 1e6:
                continue
            if job_id is None:
                why = "interrupted before its job was submitted: nothing runs; trigger again"
                ended.append(await self._submit_failed(message, why))
                continue
            adopted = await asyncio.to_thread(
                records.set_outcome,
                self._sessions,
                row.id,
                records.SUBMITTED,
                f"submitted job {job_id} (adopted: its id had not been recorded)",
                actor=row.actor,
                job_id=job_id,
            )
            ended.append(adopted)
        return ended

    async def _submit_failed(self, decision: pb.TriggerDecision, why: str) -> pb.TriggerDecision:
        stored = await asyncio.to_thread(
            records.set_outcome, self._sessions, decision.id, "submit_failed", why, actor=decision.actor
        )
        message = f"retraining of {decision.deployment} blocked (submit_failed)"
        await self._alert(decision.deployment, "retraining_blocked", message, list(stored.reasons))
        return stored

    async def _blocked(self, draft: records.Draft, outcome: str, reasons: list[str]) -> pb.TriggerDecision:
        decision = await asyncio.to_thread(records.add_decision, self._sessions, draft, reasons, outcome)
        if not decision.triggered:  # another control plane triggered meanwhile, and alerted for it
            return decision
        message = f"retraining of {draft.deployment} blocked ({outcome})"
        await self._alert(draft.deployment, "retraining_blocked", message, reasons)
        return decision

    async def _alert(self, deployment: str, kind: str, message: str, reasons: list[str]) -> None:
        await self.alerter.alert(
            {"kind": kind, "deployment": deployment, "message": message, "reasons": reasons}
        )

    # -- after the job (:mod:`.challengers`) -------------------------------------------------------------

    async def follow_up(self) -> None:
        await self.challengers.follow_up()

    async def evaluate_challenger(
        self, decision: RetrainingDecisionRow, challenger_version: int
    ) -> pb.Evaluation:
        """Evaluates ``challenger_version`` against the decision's champion and starts its promotion."""
        return await self.challengers.evaluate(decision, challenger_version)

    async def advance_promotions(self) -> None:
        await self.challengers.advance_promotions()
