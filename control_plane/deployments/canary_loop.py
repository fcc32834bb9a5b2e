"""The canary controller's background loop: every ``interval_s`` it takes each deployment whose canary
runs, observes the canary and the primary since the current step began (:mod:`observations`), asks the
pure :func:`~control_plane.deployments.canary.decide` what to do and applies it through the core, as
actor ``canary-controller`` (so every automatic advance, promotion and rollback is in the audit log with
its reason). A decision is applied only if the canary is still where it was observed (the same variant
at the same step, started at the same moment), so a person's promote, rollback or restart of the canary
in between always wins. Each deployment is evaluated on its own: an error with one is
logged and the rest are still decided.

A step whose prediction-log entries were trimmed before they were read is observed again from the
stream's first entry, and one whose entries the data plane dropped (a gap marker in the stream) from
just after the marker (:mod:`observations`): its bake counts from there, and while it holds its reason
says so ("... (observed since 12:00:05 UTC: the prediction log was trimmed past entries of the step not
yet read)", or "...: the data plane could not log 40 requests of the deployment between ... and ..."),
so the canary neither advances nor is promoted on a window with a gap; what was read before the gap
still counts toward a rollback (``whole_step``). The age of the canary's newest
observed entry, by this loop's clock, goes to :func:`decide` too: while Redis refuses the data plane's
writes no marker can arrive yet, and the canary waits for recent entries rather than advancing on old
ones.

The first step's bake runs from the canary's first request observed in it, not from the step's start: a
data plane routes to a new version only once it has loaded it, and a canary whose first request came
after the bake was over advanced as soon as ``min_requests`` arrived."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from clients.aether.v1 import deployments_pb2 as pb
from clients.env_values import env_float
from control_plane.background import BackgroundLoop
from control_plane.deployments.canary import Action, Decision, decide
from control_plane.deployments.core import DeploymentManager
from control_plane.deployments.messages import stored_policy
from control_plane.deployments.observations import DEFAULT_STREAM, TRIMMED, PredictionLogObserver

_log = logging.getLogger("aether.control_plane.canary")

ACTOR = "canary-controller"


@dataclass(frozen=True)
class CanaryLoopSettings:
    interval_s: float = 10.0
    stream: str = DEFAULT_STREAM

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CanaryLoopSettings:
        """``AETHER_CANARY_INTERVAL_S`` and ``AETHER_PREDICTION_LOG_STREAM``."""
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            # Above 0: a negative interval made the loop spin a full core; a typo was a traceback.
            interval_s=env_float(env, "AETHER_CANARY_INTERVAL_S", defaults.interval_s, above=0.0),
            stream=env.get("AETHER_PREDICTION_LOG_STREAM") or defaults.stream,
        )


class CanaryLoop:
    def __init__(
        self,
        manager: DeploymentManager,
        observer: PredictionLogObserver,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._manager = manager
        self._observer = observer
        self._interval_s = interval_s
        self._clock = clock
        self._background = BackgroundLoop("canary-loop")

    async def tick(self) -> dict[str, Decision]:
        """One pass over the running canaries; their decisions by deployment (a deployment whose
        evaluation failed is logged and left out)."""
        decisions: dict[str, Decision] = {}
        running = await asyncio.to_thread(self._manager.progressing)
        for deployment in running:
            # Each deployment on its own: one that cannot be decided (say, a policy edited mid-canary
            # before such edits were refused) must not stop a breaching canary after it from rolling back.
            try:
                decisions[deployment.name] = await self._step(deployment)
            except Exception:
                _log.exception(
                    "canary %s of %s could not be evaluated (if this repeats, promote or roll it back)",
                    deployment.canary.variant,
                    deployment.name,
                )
        self._observer.forget_except({d.name for d in running})
        return decisions

    async def _step(self, deployment: pb.Deployment) -> Decision:
        state = deployment.canary
        primary = next(v.name for v in deployment.variants if v.role == pb.VARIANT_ROLE_PRIMARY)
        # Each variant's entries only of the model version it serves in this plan: a data plane still on
        # an older plan logs another version's requests under the same name (blue/green alternation).
        serves = {
            v.name: (v.model_name, int(v.version))
            for v in deployment.variants
            if v.name in (state.variant, primary)
        }
        seen = await self._observer.observe(
            deployment.name, state.step_started_at_us, state.variant, primary, serves=serves
        )
        # The bake runs from where the observations do: the step's start, or later when the stream was
        # trimmed past entries of the step not yet read (the window restarted there).
        since_us = max(state.step_started_at_us, seen.since_us)
        # The first step bakes from the canary's first request: a data plane routes to a new version only
        # once it has loaded it (a large model, or a data plane reconnecting to a restarted control plane,
        # takes a while), and a canary whose first request came after the bake advanced as soon as
        # min_requests arrived. Later steps' canary serves already: their bake runs from the step's start.
        bake_from_us = since_us
        if state.step_index == 0 and seen.canary_first_us is not None:
            bake_from_us = max(since_us, seen.canary_first_us)
        now = self._clock()
        baked_s = now - bake_from_us / 1e6
        # No canary entry at all: as old as the window (it then holds for min_requests anyway).
        newest_us = seen.canary_newest_us if seen.canary_newest_us is not None else since_us
        decision = decide(
            stored_policy(deployment.canary_policy),
            state.step_index,
            baked_s,
            seen.canary,
            seen.primary,
            read_through=seen.caught_up,
            newest_canary_age_s=max(0.0, now - newest_us / 1e6),
            # Failures read before a restart still count toward the rollback.
            whole_step=(seen.canary_step, seen.primary_step),
        )
        if decision.action is Action.HOLD and since_us > state.step_started_at_us:
            why = seen.restarted_by or TRIMMED
            decision = replace(decision, reason=f"{decision.reason} ({_restarted(since_us, why)})")
        elif decision.reason.startswith("baking") and bake_from_us > since_us:
            decision = replace(
                decision, reason=f"{decision.reason} (from its first request, {_clock(bake_from_us)})"
            )
        if decision.action is Action.HOLD:
            replaced = await asyncio.to_thread(
                self._manager.note_hold, deployment.name, state, decision.reason
            )
            # Logged when the kind of wait changes (baking -> waiting for requests), not on every tick.
            if replaced is not None and replaced.split(" ", 1)[0] != decision.reason.split(" ", 1)[0]:
                _log.info("canary %s of %s holds: %s", state.variant, deployment.name, decision.reason)
        else:
            applied = await asyncio.to_thread(
                self._manager.apply_decision,
                deployment.name,
                state,
                decision,
                actor=ACTOR,
            )
            if applied is not None:
                _log.info(
                    "canary %s of %s: %s (%s)",
                    state.variant,
                    deployment.name,
                    decision.action.value,
                    decision.reason,
                )
        return decision

    async def run(self) -> None:
        try:
            while self._background.running:
                try:
                    await self.tick()
                except Exception:  # the database or Redis is down: try again next time
                    _log.exception("canary controller pass failed")
                await self._background.pause(self._interval_s)
        finally:
            await self._observer.close()

    def start(self) -> None:
        self._background.start(self.run())

    async def stop(self) -> None:
        await self._background.stop()


def _restarted(since_us: int, why: str) -> str:
    return f"observed since {_clock(since_us)}: {why}"


def _clock(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
