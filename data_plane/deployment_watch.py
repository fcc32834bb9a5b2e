"""Keeps the data plane's deployment plans current: a background task on ``Deployments.WatchDeploymentPlans``.

Each snapshot becomes a new immutable :class:`DeploymentPlans`, swapped in at once (``current()``), and is
written to a file atomically, so that a data plane restarted during a control-plane outage serves the last
plans it knew. Model versions follow the plans: before a snapshot is swapped in, every version it newly
references is loaded (``ensure_loaded``, all at once), so a new canary is READY before it gets traffic;
after the swap, versions that no plan references any more are unloaded. Only versions this watch loaded
are ever unloaded: a version the manager already held when a plan first referred to it (one served from
the static model config, ``--model-config``) is not the watch's, and stays loaded when the plans stop
referring to it. A version that fails to load is
still routed to: its requests fail (UNAVAILABLE), which is what the canary controller must see to roll
it back. It is loaded again by a retry loop with
capped exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``), never by a snapshot (which
would wait for it before going live): a load that failed once
(an artifact store that did not answer at start) no longer left a deployment UNAVAILABLE until its plan
changed or the data plane restarted. An unloaded version stops taking requests at once and finishes
those it already has (:meth:`data_plane.models.manager.ModelManager.unload`), so a rollback or a promotion
fails none. When the
stream fails the task reconnects with capped, jittered exponential backoff; serving goes on from the
plans it has. Plans of another metadata database than the held plans' are refused (unless
``accept_store_id`` names it), as the plans of an empty database would unload every model: see
:mod:`data_plane.watch_stream`.

Which versions a call naming their model reaches follows the plans too: a plan's primary is reachable by
name, a version the plans hold only as a canary or a shadow is not (unless the static config holds it as
well). With each snapshot swapped in, every version the plans use is told its new role
(``set_plan_use``), in the same step: a canary promoted to primary becomes reachable, and a primary
demoted to canary (made a canary of the deployment that another version is now primary of) stops being so,
named or as its model's newest version; its requests in flight are answered.

A plan whose spec changes only serving fields of a loaded version (``allow_non_finite``, batching) is
applied to it in place (``ensure_loaded``; see :mod:`data_plane.models.manager`). The manager holds one
spec per version, so when two deployments share a version with different serving configs, the last plan
applied wins for what the version itself holds (its batch policy and warm-up): the spec of a plan that
changed in this snapshot, else the one already applied (:func:`shared_specs`); the disagreement is logged.
Each deployment's requests are still filled and validated by its own plan's spec (feature defaults, the
missing-entity policy, ``allow_non_finite``: see :mod:`data_plane.models.manager`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import grpc.aio

from clients.aether.v1 import deployments_pb2, deployments_pb2_grpc
from clients.sdk.auth import ChannelSecurity
from data_plane.deployment_plan import EMPTY_PLANS, DeploymentPlans, plans_from_snapshot
from data_plane.models.spec import ModelSpec
from data_plane.models.version import ModelState, Use
from data_plane.settings import DataPlaneSettings
from data_plane.watch_stream import WatchStream, load_message

_log = logging.getLogger("aether.data_plane.deployment_watch")

#: File name of the persisted plans, next to the registry snapshot.
PLANS_FILE_NAME = "deployment_plans.pb"
#: ``on_refused``'s reason for a snapshot whose plans cannot be served (malformed).
INVALID_PLAN = "invalid_plan"


class ModelLoader(Protocol):
    """The part of the model manager the watch drives."""

    def ensure_loaded(self, spec: ModelSpec, *, use: Use = Use.DIRECT) -> Awaitable[None]: ...

    def set_plan_use(self, name: str, version: int, use: Use) -> None: ...

    def unload(self, name: str, version: int) -> Awaitable[None]: ...

    def state(self, name: str, version: int) -> ModelState: ...


def shared_specs(
    plans: DeploymentPlans, previous: DeploymentPlans, applied: Mapping[tuple[str, int], ModelSpec]
) -> dict[tuple[str, int], ModelSpec]:
    """One spec per model version the plans reference. Where deployments disagree on a version's spec
    (their serving configs differ), the last plan applied wins: the spec of a deployment whose plan
    changed since ``previous`` (the later one in the snapshot if several did), else the one ``applied``."""
    wanted: dict[tuple[str, int], ModelSpec] = {}
    users: dict[tuple[str, int], dict[ModelSpec, list[str]]] = {}
    changed: dict[tuple[str, int], ModelSpec] = {}
    for name, plan in plans.plans.items():
        fresh = previous.get(name) != plan
        for spec in plan.models():
            wanted[spec.key] = spec
            users.setdefault(spec.key, {}).setdefault(spec, []).append(name)
            if fresh:
                changed[spec.key] = spec
    for key, by_spec in users.items():
        if len(by_spec) < 2:
            continue
        current = applied.get(key)
        wanted[key] = changed.get(key) or (current if current in by_spec else wanted[key])
        _log.warning(
            "deployments %s use model %s version %d with different serving configs; the data plane batches "
            "and warms each version one way: that of %s (the last plan applied); each deployment's feature "
            "fill and NaN rule stay its own",
            sorted(n for names in by_spec.values() for n in names),
            *key,
            sorted(by_spec[wanted[key]]),
        )
    return wanted


def load_plans_snapshot(path: Path) -> deployments_pb2.DeploymentPlanSnapshot | None:
    """The persisted snapshot, or None when there is none or it cannot be parsed (logged)."""
    return load_message(path, deployments_pb2.DeploymentPlanSnapshot, "deployment plans")


def _watch_plans(channel: grpc.aio.Channel) -> AsyncIterator[deployments_pb2.DeploymentPlanSnapshot]:
    stub = deployments_pb2_grpc.DeploymentsStub(channel)  # type: ignore[no-untyped-call]
    request = deployments_pb2.WatchDeploymentPlansRequest(known_revision=0)
    stream: AsyncIterator[deployments_pb2.DeploymentPlanSnapshot] = stub.WatchDeploymentPlans(request)
    return stream


class DeploymentWatch:
    def __init__(
        self,
        control_plane_addr: str,
        snapshot_path: Path,
        loader: ModelLoader,
        *,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        security: ChannelSecurity | None = None,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        accept_store_id: str = "",
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._loader = loader
        self._on_refused = on_refused
        self._retry_initial_s, self._retry_max_s = retry_initial_s, retry_max_s
        self._retrying: asyncio.Task[None] | None = None
        # Versions loaded outside the plans (the static model config): retried as the plans' are when
        # their load failed, and never unloaded by the watch.
        self._static: dict[tuple[str, int], ModelSpec] = {}
        # The versions some installed plan serves as its primary: reachable by name (see _use).
        self._primaries: frozenset[tuple[str, int]] = frozenset()
        self._plans = EMPTY_PLANS
        # Which watch stream the plans came from (0: the persisted file, or none yet), and the stream that
        # is delivering now (0 between streams). A revision number means something only together with its
        # stream: a control plane restarted on a fresh or restored database hands out the numbers it
        # handed out before, for other content, so the file's plans or an earlier stream's must not
        # satisfy wait_for_revision.
        self._plans_stream = 0
        self._streams = 0
        self._delivering = 0
        self._loaded: dict[tuple[str, int], ModelSpec] = {}  # every version the plans refer to
        # Those of them the manager held before a plan referred to them (static models): never unloaded.
        self._not_ours: set[tuple[str, int]] = set()
        self._installed = asyncio.Condition()
        # What wait_for_plans waits for besides installed plans: the stream failed (the control plane
        # did not answer), or a snapshot was refused (malformed): no plans are coming soon either way.
        self._unanswered = False
        self._refused = False
        self._stream = WatchStream(
            "deployment plans",
            control_plane_addr,
            snapshot_path,
            deployments_pb2.DeploymentPlanSnapshot,
            self._follow,
            self._install,
            security=security,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            accept_store_id=accept_store_id,
            on_refused=on_refused,
        )
        self.connected = self._stream.connected  # set while a watch stream is delivering snapshots
        self.has_plans = asyncio.Event()  # set once plans were installed (from the stream or the file)

    def current(self) -> DeploymentPlans:
        return self._plans

    @property
    def store_id(self) -> str:
        """The metadata database the plans came from (empty: unknown, or none yet)."""
        return self._stream.store_id

    @property
    def refused_store_id(self) -> str:
        """The other database whose plans were refused since plans were last installed, if any."""
        return self._stream.refused_store_id

    async def wait_for_revision(self, revision: int, timeout_s: float) -> DeploymentPlans:
        """The plans once the control plane's watch stream delivering now has installed ``revision`` or a
        later one (``TimeoutError`` after ``timeout_s``). Plans from the persisted file or from an earlier
        stream never count, whatever their number: the revision ``revision`` came from the control plane
        serving now, and one restarted on another database numbers other content alike."""

        def reached() -> bool:
            current = self._delivering != 0 and self._plans_stream == self._delivering
            return current and self._plans.revision >= revision

        async with asyncio.timeout(timeout_s), self._installed:
            await self._installed.wait_for(reached)
            return self._plans

    async def wait_for_plans(self, wait_s: float) -> bool:
        """True once plans are installed (from the stream or the file), the loads of the versions they
        use settled (READY or FAILED); False as soon as it is clear none are coming soon: the stream
        failed (the control plane is unreachable), a snapshot was refused, or ``wait_s`` passed with no
        snapshot arriving. A snapshot that did arrive is waited for however long its loads take: serving
        before they settle would answer NOT_FOUND for deployments that exist."""

        def decided() -> bool:
            return self.has_plans.is_set() or self._unanswered or self._refused

        async with self._installed:
            try:
                async with asyncio.timeout(wait_s):
                    await self._installed.wait_for(decided)
            except TimeoutError:
                if not self.connected.is_set():
                    return False  # a silent stream: nothing to wait for
                await self._installed.wait_for(decided)
        return self.has_plans.is_set()

    async def _follow(
        self, channel: grpc.aio.Channel
    ) -> AsyncIterator[deployments_pb2.DeploymentPlanSnapshot]:
        """The plans stream, noting a failure for :meth:`wait_for_plans` and which stream delivers for
        :meth:`wait_for_revision` (each one starts with a full snapshot: ``known_revision`` is 0)."""
        self._streams += 1
        self._delivering = stream = self._streams
        try:
            async for snapshot in _watch_plans(channel):
                yield snapshot  # installed (by _install) before this generator resumes
        except grpc.aio.AioRpcError:
            async with self._installed:
                self._unanswered = True
                self._installed.notify_all()
            raise
        finally:
            # Unless a later stream began meanwhile (a generator left unfinished is closed later).
            if self._delivering == stream:
                self._delivering = 0

    async def load_persisted(self) -> bool:
        """Serves from the persisted plans, if any; True when some were loaded."""
        snapshot = await self._stream.load_persisted()
        if snapshot is None:
            return False
        _log.info("serving deployment plans revision %d from %s", snapshot.revision, self._stream.path)
        return True

    def start(self) -> None:
        self._stream.start()
        self._retrying = asyncio.create_task(self._retry_failed_loads())

    async def stop(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.gather(self._retrying, return_exceptions=True)
            self._retrying = None
        await self._stream.stop()

    def keep_loaded(self, specs: Sequence[ModelSpec]) -> None:
        """Also retries these versions (loaded from the static model config) when their load failed; they
        are the ones :meth:`static_models` lists."""
        self._static.update((spec.key, spec) for spec in specs)

    def static_models(self) -> Collection[tuple[str, int]]:
        """The (model, version) keys of the static model config (those given to :meth:`keep_loaded`), as
        a live view. Predict without a plan reaches only these by model name: a version the plans loaded
        (a canary, a shadow) answers only through its deployment's plan."""
        return self._static.keys()

    async def _retry_failed_loads(self) -> None:
        """Loads again the versions the plans use whose load failed, every ``retry_initial_s`` at first and
        half as often after each round that still fails, down to every ``retry_max_s``."""
        delay = self._retry_initial_s
        while True:
            await asyncio.sleep(delay)
            wanted = {**self._static, **self._loaded}
            failed = [spec for key, spec in wanted.items() if self._loader.state(*key) is ModelState.FAILED]
            if not failed:
                delay = self._retry_initial_s
                continue
            await asyncio.gather(*(self._retry_load(spec) for spec in failed))
            delay = min(delay * 2, self._retry_max_s)

    async def _retry_load(self, spec: ModelSpec) -> None:
        try:
            await self._loader.ensure_loaded(spec, use=self._use(spec.key))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the watch is stopping
            return  # the load was cancelled (a plan dropped the version): the loop goes on
        except Exception as exc:
            _log.warning("model %s version %d still fails to load: %s", spec.name, spec.version, exc)
            return
        _log.info("model %s version %d loaded on a retry", spec.name, spec.version)
        if spec.key not in self._loaded and spec.key not in self._not_ours and spec.key not in self._static:
            await self._loader.unload(*spec.key)  # the plans dropped it meanwhile: nothing will unload it

    async def _install(self, snapshot: deployments_pb2.DeploymentPlanSnapshot) -> bool:
        try:
            plans = plans_from_snapshot(snapshot, self._plans)
        except ValueError as exc:  # a malformed plan: keep serving the previous ones (and their file)
            _log.error("ignoring deployment plans revision %d: %s", snapshot.revision, exc)
            if self._on_refused is not None:
                self._on_refused(INVALID_PLAN)
            async with self._installed:
                self._refused = True
                self._installed.notify_all()
            return False
        wanted = shared_specs(plans, self._plans, self._loaded)
        # A version that failed to load before is left to the retry loop: awaiting it here held up every
        # plan change, other deployments' too, for as long as its broken load took. The versions are
        # loaded with the uses the installed plans give them (a new one as a canary): the new plans' uses
        # take effect with the plans themselves, below.
        new = [spec for key, spec in wanted.items() if self._loaded.get(key) != spec]
        await asyncio.gather(*(self._load(spec) for spec in new))
        async with self._installed:
            self._plans = plans
            # Reachability by name follows the plans, in the same step as they are swapped in: a canary
            # made primary becomes reachable, and a primary the plans keep only as a canary or a shadow
            # (an UpdateDeployment that made another version primary) stops being so, named or as the
            # newest version of its model, unless the static config holds it too (the manager keeps
            # that). Recomputed for every version, as a version's role can change without its spec.
            self._primaries = frozenset(plan.primary.model.key for plan in plans.plans.values())
            for key in wanted:
                self._loader.set_plan_use(*key, self._plan_use(key))
            self._plans_stream = self._delivering  # 0 for the persisted file's
            self.has_plans.set()  # before the notify: wait_for_plans checks it
            self._installed.notify_all()
        for key in [key for key in self._loaded if key not in wanted]:
            del self._loaded[key]
            if key in self._not_ours:
                self._not_ours.discard(key)
                continue
            try:
                await self._loader.unload(*key)
            except Exception:
                _log.exception("unloading model %s version %d failed", *key)
        return True

    def _plan_use(self, key: tuple[str, int]) -> Use:
        """What the installed plans make of version ``key`` (see :class:`data_plane.models.version.Use`):
        some plan's primary, or only a canary or a shadow, which answers only through its deployments'
        plans. A deployment's primary is what a call naming its model (the Open Inference Protocol)
        reaches, as it did before plans hid anything; a canary or a shadow reached by name would bypass the
        canary controller."""
        return Use.PLAN_PRIMARY if key in self._primaries else Use.PLAN_ONLY

    def _use(self, key: tuple[str, int]) -> Use:
        """What a load of version ``key`` by the watch is for: a static config's version is held directly
        (reachable by name whatever the plans make of it), any other as :meth:`_plan_use` says."""
        return Use.DIRECT if key in self._static else self._plan_use(key)

    async def _load(self, spec: ModelSpec) -> None:
        if spec.key not in self._loaded and self._loader.state(*spec.key) is not ModelState.UNLOADED:
            self._not_ours.add(spec.key)  # loaded (or tried) by someone else: not the watch's to unload
        self._loaded[spec.key] = spec  # even when it fails: it is routed to, and unloaded when unused
        try:
            # A canary or shadow answers only through its plan unless loaded otherwise too (the manager
            # keeps that).
            await self._loader.ensure_loaded(spec, use=self._use(spec.key))
        except Exception:
            _log.exception("loading model %s version %d failed", spec.name, spec.version)


def plans_path(settings: DataPlaneSettings) -> Path:
    return settings.snapshot_path.with_name(PLANS_FILE_NAME)


async def start_deployment_watch(
    settings: DataPlaneSettings, manager: ModelLoader, on_refused: Callable[[str], None] | None = None
) -> DeploymentWatch:
    """Serves the persisted plans at once (if any) and starts following the control plane's. The handle
    gives ``current()`` plans, ``has_plans`` / ``connected`` events and ``async stop()``."""
    watch = DeploymentWatch(
        settings.control_plane_addr,
        plans_path(settings),
        manager,
        backoff_initial_s=settings.watch_backoff_initial_s,
        backoff_max_s=settings.watch_backoff_max_s,
        security=settings.channel_security,
        accept_store_id=settings.accept_store_id,
        on_refused=on_refused,
    )
    await watch.load_persisted()
    watch.start()
    return watch
