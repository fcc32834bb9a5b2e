"""The model manager: loads model versions (artifact checksum verified) into a runtime, warms them up,
reports their state and serves inference through one dynamic batcher per version. Several versions of a
model live side by side; a version is unloaded when nothing references it any more (the deployment watch
or the static model config decides that and calls :meth:`ModelManager.unload`).

A request holds its version through a :class:`VersionLease`, taken when it is routed (before its features
are fetched) and let go once it is answered. Unloading (a rollback, a promotion) stops new leases on the
version at once, lets the requests that hold one finish through the batcher as usual, and releases the
session once the last lets go, or after ``unload_grace_s`` at most (whatever is still queued then fails
with UNAVAILABLE). So a new plan never fails a request that the old plan had already routed.

States: LOADING (fetching, verifying, building the runtime) → WARMING → READY; a failure at any stage
leaves FAILED with the reason (:meth:`ModelManager.failure`); UNLOADED for versions not (or no longer)
held. Only READY versions serve; others answer UNAVAILABLE, unknown ones NOT_FOUND.

Serving config changes: :meth:`ModelManager.ensure_loaded` with a new spec for a loaded version (same
artifact) applies its serving fields in place, without a reload: the input validation (e.g.
``allow_non_finite``), the batch policy (``max_batch_size``, ``max_queue_delay_us``) and the spec that
leases give out, for requests admitted from then on; requests already validated or queued are not failed.
The manager holds one spec per version, so two deployments that share a version share its batching and
warm-up: the last spec applied wins (the deployment watch decides which one that is when plans disagree,
see :mod:`data_plane.deployment_watch`). What decides a request's answer stays each deployment's own:
Predict fills missing features and applies ``missing_entity_policy`` by its plan's spec, and validates NaN
and infinities by that spec's ``allow_non_finite`` (:meth:`VersionLease.prepare`), not the version's.

Reachability by name: the manager remembers what each version is loaded for (:class:`Use`): directly (the
static model config, a benchmark; until unloaded), as some deployment plan's primary, or only as a plan's
canary or shadow. A call naming the model (:meth:`ModelManager.named_lease`, :meth:`ModelManager.resolve`
with ``by_name``; without a version, :meth:`ModelManager.lease`) reaches a version unless only the last
holds it (:attr:`LoadedVersion.plan_only`), so that no such call bypasses the canary controller or is
answered by a shadow. The plans' use changes with the plans (:meth:`ModelManager.set_plan_use`, called by
the deployment watch as it installs each snapshot): a canary promoted to primary becomes reachable, and a
primary demoted to canary (an UpdateDeployment that makes an older version primary and keeps this one at
a few percent) stops being so at once, named or as the newest version a call without one reaches; the
requests that already hold it are answered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from clients.errors import AetherError, FailedPrecondition, NotFound
from data_plane.batching import BatchPolicy, DynamicBatcher
from data_plane.inline_gate import InlineGate
from data_plane.models.artifacts import fetch_verified
from data_plane.models.batch_check import batching_problem
from data_plane.models.options import ManagerObserver, ManagerOptions, RuntimeFactory, default_runtime
from data_plane.models.runner import run_batch
from data_plane.models.spec import ModelSpec, defaults_problem
from data_plane.models.spec_changes import RELOAD_FIELDS, changed_fields, signature_mismatch
from data_plane.models.validation import InputValidator, batchable
from data_plane.models.version import LoadedVersion, ModelState, Use, VersionLease
from data_plane.models.warmup import recorded_inputs, warm_up, warms_every_size
from data_plane.runtime.base import Array

_log = logging.getLogger("aether.data_plane.models")


class ModelManager:
    def __init__(
        self,
        options: ManagerOptions | None = None,
        *,
        runtime_factory: RuntimeFactory = default_runtime,
        observer: ManagerObserver | None = None,
    ) -> None:
        self.options = options or ManagerOptions()
        self._factory = runtime_factory
        self._observer = observer or ManagerObserver()
        self._versions: dict[tuple[str, int], LoadedVersion] = {}
        self._latest_ready: dict[str, LoadedVersion] = {}  # cache of resolve(name, None), cleared on changes
        self._releasing: set[asyncio.Task[None]] = set()  # unloaded versions finishing their requests
        self._closing = False  # set by close(): the process is stopping
        self._executor = ThreadPoolExecutor(self.options.inference_threads, thread_name_prefix="aether-infer")
        self._shadow_executor = ThreadPoolExecutor(
            self.options.shadow_threads, thread_name_prefix="aether-shadow"
        )

    # ---- lifecycle -------------------------------------------------------------------------------

    async def ensure_loaded(self, spec: ModelSpec, *, use: Use = Use.DIRECT) -> None:
        """Loads the version if it is not loaded (idempotent; concurrent calls share one load) and
        returns once it is READY. Raises the error that failed the load (the version then stays FAILED,
        and a later call retries). A loaded version given a spec with other serving fields takes them
        (see :meth:`_reconfigure`); the last spec given wins. ``use``: what it is loaded for (see
        :class:`Use`), which decides whether a call naming its model reaches it: ``DIRECT`` (the static
        config) holds until it is unloaded, and a plan's use replaces the plans' previous one, as
        :meth:`set_plan_use` does (before this call awaits anything)."""
        entry = self._versions.get(spec.key)
        if entry is not None and entry.spec.artifact_sha256 != spec.artifact_sha256:
            raise FailedPrecondition(
                f"model {spec.name} v{spec.version} is loaded from artifact {entry.spec.artifact_sha256}; "
                f"a version's artifact cannot change to {spec.artifact_sha256}"
            )
        if entry is not None:
            self._hold(entry, use)
        if entry is None or entry.state is ModelState.FAILED:
            # A new load of a FAILED version keeps what the version was held for besides this call.
            direct = entry is not None and entry.direct
            plan_use = None if entry is None else entry.plan_use
            entry = LoadedVersion(spec, direct=direct, plan_use=plan_use)
            self._hold(entry, use)
            self._versions[spec.key] = entry
            entry.loading = asyncio.create_task(self._load(entry), name=f"load {spec.name} v{spec.version}")
            self._observer.model_state(spec.name, spec.version, ModelState.LOADING)
        if entry.loading is not None:
            await asyncio.shield(entry.loading)
        if entry.state is ModelState.FAILED:
            raise FailedPrecondition(f"model {spec.name} v{spec.version} failed to load: {entry.failure}")
        if entry.spec != spec and self._versions.get(spec.key) is entry:
            self._reconfigure(entry, spec)

    def set_plan_use(self, name: str, version: int, use: Use) -> None:
        """What the deployment plans make of a loaded version now: ``PLAN_PRIMARY`` (some plan's primary)
        or ``PLAN_ONLY`` (only a canary or a shadow), without loading anything (a version not held is left
        alone). A primary demoted to canary stops being reachable by name at once unless it is also held
        ``DIRECT``: a call naming its model, with a version or without, no longer reaches it (one without
        goes to the newest version still reachable). Requests that already hold a lease on it keep it and
        are answered; nothing is unloaded."""
        if use is Use.DIRECT:
            raise ValueError("set_plan_use takes a plan's use; a direct hold comes with ensure_loaded")
        entry = self._versions.get((name, version))
        if entry is not None:
            self._hold(entry, use)

    def _hold(self, entry: LoadedVersion, use: Use) -> None:
        """Records ``use`` on ``entry`` (see :class:`Use`); when that changes whether a call naming the model
        reaches it, the cached newest version a name reaches is dropped (it may be this one, or no longer)."""
        was = entry.plan_only
        if use is Use.DIRECT:
            entry.direct = True
        else:
            entry.plan_use = use
        if entry.plan_only != was:
            self._latest_ready.pop(entry.spec.name, None)

    def _reconfigure(self, entry: LoadedVersion, spec: ModelSpec) -> None:
        """Applies a READY version's new serving fields in place (one step on the loop, so every request
        sees either the old config or the new one): its validator, its spec and its batcher's policy. The
        session, its warm-up and the inline gate's timings stay (they do not depend on these fields).
        FAILED_PRECONDITION, changing nothing, for a field that cannot change without a reload."""
        old = entry.spec
        changed = changed_fields(old, spec)
        refused = [name for name in changed if name in RELOAD_FIELDS]
        if "feature_defaults" in changed and (problem := defaults_problem(spec)):
            refused.append(f"feature_defaults ({problem})")
        # A runtime built for a largest batch (a TensorRT engine's optimisation profile) cannot take a
        # larger one: refused, so that the version keeps batching within what its engine runs.
        limit = getattr(entry.runtime, "max_batch_rows", None)
        if "max_batch_size" in changed and isinstance(limit, int) and spec.max_batch_size > limit:
            refused.append(f"max_batch_size (the runtime was built for batches of at most {limit})")
        if refused:
            raise FailedPrecondition(
                f"model {spec.name} v{spec.version} cannot change {', '.join(refused)} while it is loaded; "
                "it keeps serving with the spec it was loaded with"
            )
        if entry.batcher is None:  # not READY (cannot happen after a successful load)
            raise FailedPrecondition(f"model {spec.name} v{spec.version} is {entry.state.value}, not READY")
        entry.validator = InputValidator(spec, self.options.max_answer_bytes)
        entry.batcher.update_policy(self._policy(spec, entry.batches))
        entry.spec = spec
        _log.info(
            "model %s v%d serving config changed: %s",
            spec.name,
            spec.version,
            "; ".join(f"{name} {getattr(old, name)!r} -> {getattr(spec, name)!r}" for name in changed),
        )

    def _policy(self, spec: ModelSpec, batches: bool) -> BatchPolicy:
        return BatchPolicy(
            max_batch_size=spec.max_batch_size if batches and batchable(spec) else 1,
            max_queue_delay_s=spec.max_queue_delay_us / 1e6,
            max_queue_size=self.options.max_queue_size,
            max_in_flight=self.options.max_in_flight_batches,
            max_background_in_flight=self.options.max_in_flight_batches,
            inline_below_s=self.options.inline_batch_below_us / 1e6,
        )

    async def unload(self, name: str, version: int) -> None:
        """Stops admitting requests to the version (from now on it is unknown: NOT_FOUND) and returns at
        once; the requests that already hold it finish, then its session is released in the background
        (see :meth:`released`)."""
        entry = self._versions.pop((name, version), None)
        self._latest_ready.pop(name, None)
        if entry is None:
            return
        if entry.loading is not None and not entry.loading.done():
            entry.loading.cancel()
        self._observer.model_state(name, version, ModelState.UNLOADED)
        task = asyncio.get_running_loop().create_task(self._release(entry), name=f"unload {name} v{version}")
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def released(self) -> None:
        """Returns once every version unloaded so far has released its session."""
        while self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def _release(self, entry: LoadedVersion) -> None:
        name, version = entry.spec.name, entry.spec.version
        if entry.leases:
            entry.idle = asyncio.Event()
            try:
                async with asyncio.timeout(self.options.unload_grace_s):
                    await entry.idle.wait()
            except TimeoutError:
                _log.warning(
                    "model %s v%d still had %d requests after %.1f s; failing those still queued",
                    name,
                    version,
                    entry.leases,
                    self.options.unload_grace_s,
                )
        entry.state = ModelState.UNLOADED
        if entry.batcher is not None:
            entry.batcher.close()
        if entry.runtime is not None:
            runtime = entry.runtime
            entry.runtime = None
            # Close off the loop, after any batch already running on it (the executor runs them in order
            # per thread; closing only drops the session's native memory once no batch holds it).
            await asyncio.get_running_loop().run_in_executor(self._executor, runtime.close)
        # Loaded again during the grace (a rollback undone, say), the version's series are the new load's.
        # At shutdown they stay: the process's last scrape must still count what it served.
        if (name, version) not in self._versions and not self._closing:
            self._observer.version_released(name, version)
        _log.info("unloaded model %s v%d", name, version)

    async def close(self) -> None:
        self._closing = True
        for name, version in list(self._versions):
            await self.unload(name, version)
        await self.released()
        self._executor.shutdown(wait=False)
        self._shadow_executor.shutdown(wait=False)

    async def _load(self, entry: LoadedVersion) -> None:
        spec = entry.spec
        started = time.monotonic()
        try:
            if problem := defaults_problem(spec):
                raise FailedPrecondition(f"model {spec.name} v{spec.version}: {problem}")
            data = await asyncio.to_thread(fetch_verified, spec.artifact_uri, spec.artifact_sha256)
            runtime = await asyncio.to_thread(self._factory, data, spec, self.options)
            declared_inputs = getattr(runtime, "inputs", None)
            if isinstance(declared_inputs, tuple):
                mismatch = signature_mismatch(spec.inputs, declared_inputs) or signature_mismatch(
                    spec.outputs, getattr(runtime, "outputs", ())
                )
                if mismatch:
                    raise FailedPrecondition(
                        f"the spec of model {spec.name} v{spec.version} does not match its artifact: "
                        f"{mismatch}"
                    )
            entry.runtime = runtime
            entry.description = runtime.description
            self._set_state(entry, ModelState.WARMING)
            uri = spec.warmup_samples_uri
            samples = await asyncio.to_thread(recorded_inputs, spec, uri) if uri else []  # may be remote
            warmed = await asyncio.to_thread(warm_up, runtime, spec, samples)
            problem = await asyncio.to_thread(batching_problem, runtime, spec, samples)
            if problem:
                entry.batches = False
                _log.warning(
                    "model %s v%d: %s, so its first dimension is no batch dimension: its requests run one "
                    "at a time", spec.name, spec.version, problem,
                )  # fmt: skip
            policy = self._policy(spec, entry.batches)
            entry.batcher = DynamicBatcher(
                policy,
                functools.partial(run_batch, runtime, spec),  # no Python frame of its own
                self._executor,
                self._observer.for_model(spec.name, spec.version),
                InlineGate(
                    policy.inline_below_s,
                    # None: never inline. A dynamic non-batch dimension leaves a batch's size unbounded by
                    # its rows (the gate's only per-request check), so the warm-up's time is no estimate.
                    warmed.largest_seconds
                    if warms_every_size(spec) and not runtime.waits_on_device
                    else None,
                    warmed.largest_rows,
                ),
                f"model {spec.name} v{spec.version}",
                self._shadow_executor,
            )
            entry.validator = InputValidator(spec, self.options.max_answer_bytes)
            batcher = entry.batcher
            self._observer.track_queue_depth(spec.name, spec.version, lambda: batcher.queue_depth)
            self._observer.track_batch_wait_rows(spec.name, spec.version, lambda: batcher.wait_rows)
            self._set_state(entry, ModelState.READY)
            measured = "not measured" if warmed.largest_seconds is None else (
                f"{warmed.largest_seconds * 1000:.3f} ms for {warmed.largest_rows} rows"
            )  # fmt: skip
            _log.info(
                "model %s v%d READY on %s in %.2fs; warm-up batch %s: batches run %s",
                spec.name,
                spec.version,
                entry.description,
                time.monotonic() - started,
                measured,
                "on the event loop" if entry.batcher.inline.open else "in worker threads",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            entry.failure = exc.message if isinstance(exc, AetherError) else f"{type(exc).__name__}: {exc}"
            entry.runtime = None
            self._set_state(entry, ModelState.FAILED)
            _log.error("model %s v%d failed to load: %s", spec.name, spec.version, entry.failure)
        finally:
            entry.loading = None

    def _set_state(self, entry: LoadedVersion, state: ModelState) -> None:
        entry.state = state
        self._latest_ready.pop(entry.spec.name, None)
        self._observer.model_state(entry.spec.name, entry.spec.version, state)

    # ---- queries ---------------------------------------------------------------------------------

    def state(self, name: str, version: int) -> ModelState:
        entry = self._versions.get((name, version))
        return ModelState.UNLOADED if entry is None else entry.state

    def failure(self, name: str, version: int) -> str:
        entry = self._versions.get((name, version))
        return "" if entry is None else entry.failure

    def description(self, name: str, version: int) -> str:
        entry = self._versions.get((name, version))
        return "" if entry is None else entry.description

    def versions(self, name: str, *, by_name: bool = False) -> list[int]:
        """``by_name``: only those a call naming the model reaches (not :attr:`LoadedVersion.plan_only`)."""
        return sorted(
            v for (n, v), e in self._versions.items() if n == name and not (by_name and e.plan_only)
        )

    def holds(self, name: str) -> bool:
        """Whether any version of model ``name`` is held (in any state)."""
        return any(n == name for n, _ in self._versions)

    def specs(self) -> list[ModelSpec]:
        return [entry.spec for entry in self._versions.values()]

    def can_serve(self) -> bool:
        """Some version is READY, or none is held (nothing was asked of this server yet)."""
        entries = self._versions.values()
        return not entries or any(e.state is ModelState.READY for e in entries)

    def queue_depth(self, name: str, version: int) -> int:
        entry = self._versions.get((name, version))
        return 0 if entry is None or entry.batcher is None else entry.batcher.queue_depth

    def runs_batches_inline(self, name: str, version: int) -> bool:
        """Whether the version's batches run on the event loop (see ``InlineGate``)."""
        entry = self._versions.get((name, version))
        return entry is not None and entry.batcher is not None and entry.batcher.inline.open

    def resolve(self, name: str, version: int | None, *, by_name: bool = False) -> ModelSpec:
        """The spec of ``name`` at ``version``; without a version, the newest READY one (or the newest
        known one, so that the caller learns it is not ready). NOT_FOUND when neither exists. A version
        deployment plans hold only as a canary or a shadow (:attr:`LoadedVersion.plan_only`; a demoted
        primary too, from the plans' install on) is never the one without a version, and with ``by_name``
        (a call naming the model, not routed by a plan) not even named."""
        if version is not None:
            entry = self._versions.get((name, version))
            if entry is not None and by_name and entry.plan_only:
                raise NotFound(
                    f"model {name!r} version {version} answers only through the deployment plans that serve "
                    "it as a canary or shadow (it is reached through its deployment, so that no call naming "
                    "its model bypasses the canary controller)"
                )
            if entry is None:
                # With each one's state: a FAILED version is known here, not loaded.
                known = ", ".join(
                    f"{v} {self._versions[(name, v)].state.value}"
                    for v in self.versions(name, by_name=by_name)
                )
                raise NotFound(
                    f"model {name!r} has no version {version} here"
                    + (f" (it has: {known})" if known else "; no version of it is loaded")
                )
            return entry.spec
        held = [e for (n, _), e in self._versions.items() if n == name]
        candidates = [e for e in held if not e.plan_only]
        if not candidates:
            raise NotFound(
                f"model {name!r} is not loaded"
                + ("; its versions here answer only through deployment plans" if held else "")
            )
        ready = [e for e in candidates if e.state is ModelState.READY]
        return max(ready or candidates, key=lambda e: e.spec.version).spec

    # ---- inference -------------------------------------------------------------------------------

    def lease(self, name: str, version: int | None) -> VersionLease:
        """A hold on ``name`` at ``version`` (without a version, the newest READY one that is not
        :attr:`LoadedVersion.plan_only` now: the cache of it is dropped whenever a version's state or
        reachability changes) for one request: NOT_FOUND when no such version is loaded. Use it as a
        context manager; the hold outlives a later change of the version's reachability (a demotion). A
        plan's routing names the version; a call naming the model takes :meth:`named_lease`."""
        entry = self._versions.get((name, version)) if version is not None else self._latest_ready.get(name)
        if entry is None:
            entry = self._versions[self.resolve(name, version).key]
            if version is None and entry.state is ModelState.READY:
                self._latest_ready[name] = entry
        return VersionLease(entry)

    def named_lease(self, name: str, version: int | None) -> VersionLease:
        """:meth:`lease` for a call that names the model itself (ModelInfer): a version that deployment
        plans hold only as a canary or a shadow is NOT_FOUND there, named or not (see :meth:`resolve`),
        from the moment a plan demotes it (see :meth:`set_plan_use`)."""
        if version is None:
            return self.lease(name, None)
        entry = self._versions.get((name, version))
        if entry is None or entry.plan_only:
            entry = self._versions[self.resolve(name, version, by_name=True).key]  # raises NOT_FOUND
        return VersionLease(entry)

    async def infer(
        self,
        name: str,
        version: int | None,
        inputs: Mapping[str, Array],
        deadline: float | None = None,
        *,
        shadow: bool = False,
        allow_non_finite: bool | None = None,
    ) -> dict[str, Array]:
        """Runs one request through the version's batcher. ``deadline`` is on the ``time.monotonic()``
        clock; a request still queued when it passes is dropped with DEADLINE_EXCEEDED. A ``shadow`` copy
        runs in the shadow threads (see :meth:`VersionLease.run`). ``allow_non_finite``: the calling
        deployment's rule (see :meth:`VersionLease.prepare`)."""
        with self.lease(name, version) as lease:
            request = lease.prepare(inputs, allow_non_finite=allow_non_finite)
            return await lease.run(request, deadline, shadow=shadow)
