"""One loaded model version as the manager holds it (:class:`LoadedVersion`), its state
(:class:`ModelState`), and a request's hold on it from routing to answer (:class:`VersionLease`).

Kept apart from :mod:`data_plane.models.manager`, which loads, reconfigures and unloads these entries:
this is the part every request touches (a lease, ``prepare``, ``run``), and it needs nothing of loading.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from clients.errors import Unavailable
from data_plane.batching import DynamicBatcher
from data_plane.models.runner import Outputs
from data_plane.models.spec import ModelSpec
from data_plane.models.validation import InputValidator, ValidInputs
from data_plane.runtime.base import Array, Runtime


class ModelState(enum.Enum):
    LOADING = "LOADING"
    WARMING = "WARMING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


class Use(enum.Enum):
    """What a version is loaded for, which decides whether a call naming its model reaches it (see
    :attr:`LoadedVersion.plan_only`). A version may be held for several: by the static config and by
    a plan; it is reachable by name while any but ``PLAN_ONLY`` holds."""

    # Outside the deployment plans: the static model config, a benchmark. Holds until unloaded.
    DIRECT = "direct"
    # The primary of some deployment plan: holds while a plan has it so.
    PLAN_PRIMARY = "plan primary"
    # Only a canary or a shadow of deployment plans: reached through its plan alone.
    PLAN_ONLY = "plan only"


@dataclass(eq=False)
class LoadedVersion:
    spec: ModelSpec
    state: ModelState = ModelState.LOADING
    failure: str = ""
    runtime: Runtime | None = None
    batcher: DynamicBatcher[ValidInputs, Outputs] | None = None
    description: str = ""
    loading: asyncio.Task[None] | None = field(default=None, repr=False)
    validator: InputValidator | None = field(default=None, repr=False)
    leases: int = 0  # requests holding this version (routed to it and not yet answered)
    batches: bool = True  # False once rows run together disagreed with rows run alone (batch_check)
    idle: asyncio.Event | None = field(default=None, repr=False)  # set when leases drop to 0 (unloading)
    # Why it is loaded (see :class:`Use`): ``direct``, loaded outside the deployment plans (the static
    # config), holds until it is unloaded; ``plan_use`` is what the plans make of it now (None: no plan
    # loaded it), and changes as they do (a canary promoted, a primary demoted to canary).
    direct: bool = False
    plan_use: Use | None = None

    @property
    def plan_only(self) -> bool:
        """Only deployment plans hold it, and only as a canary or a shadow (no plan's primary, not in the
        static config): a call naming the model (ModelInfer, ModelMetadata, ModelReady) does not reach it,
        so that none can bypass the canary controller or be answered by a shadow. Turns True again when
        the last plan that had it as its primary demotes it, and False when one promotes it."""
        return not self.direct and self.plan_use is Use.PLAN_ONLY


class VersionLease:
    """One request's hold on one model version, from routing to answer (a context manager). While any
    lease is held, unloading the version waits (up to the grace) before releasing its session."""

    __slots__ = ("_entry", "_held", "spec")

    def __init__(self, entry: LoadedVersion) -> None:
        self._entry = entry
        self.spec = entry.spec
        self._held = True
        entry.leases += 1

    def __enter__(self) -> VersionLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        entry = self._entry
        entry.leases -= 1
        if entry.leases == 0 and entry.idle is not None:
            entry.idle.set()

    def prepare(
        self, inputs: Mapping[str, Array], *, answerable: bool = False, allow_non_finite: bool | None = None
    ) -> ValidInputs:
        """Validates a request without running it: UNAVAILABLE when the version is not READY,
        INVALID_ARGUMENT when the inputs do not fit its signature, both before it joins a batch.
        ``answerable``: RESOURCE_EXHAUSTED, too, for more rows than one answer message can hold
        (:attr:`InputValidator.max_rows`; ModelInfer, whose rows nothing else bounds).
        ``allow_non_finite``: the calling deployment's own rule for NaN and infinities, where it has one
        (None: the version's spec's; see :class:`InputValidator`)."""
        entry = self._entry
        validator = entry.validator
        if entry.state is not ModelState.READY or validator is None:
            detail = f": {entry.failure}" if entry.failure else ""
            raise Unavailable(
                f"model {entry.spec.name} v{entry.spec.version} is {entry.state.value}, not READY{detail}"
            )
        valid = validator(inputs, allow_non_finite)
        if answerable and valid.rows > validator.max_rows:
            raise validator.too_many_rows(valid.rows)
        return valid

    async def run(self, request: ValidInputs, deadline: float | None, *, shadow: bool = False) -> Outputs:
        """Runs a prepared request through the version's batcher (``deadline`` on ``time.monotonic()``).
        A ``shadow`` copy batches only with other shadow copies, in the manager's shadow threads."""
        batcher = self._entry.batcher
        if batcher is None or self._entry.state is not ModelState.READY:
            raise Unavailable(f"model {self.spec.name} v{self.spec.version} is no longer READY")
        return await batcher.submit(request, request.rows, request.group, deadline, background=shadow)
