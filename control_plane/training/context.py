"""The training context: what a job's code gets from the platform, read from the launch environment.

    ctx = TrainingContext.from_env()
    data = ctx.dataset()                      # training set (Arrow / numpy / torch) + its dataset hash
    lr = ctx.hyperparameters.number("lr", 1e-3)
    state = TrainingState(model, optimizer, scheduler, generators={"batches": generator})
    if (last := ctx.resume()) is not None:    # attempt 2+ after a crash: continue where it stopped
        last.restore(state)
    for epoch in range(state.epoch, epochs):
        ...
        ctx.log_metrics(epoch, loss=loss)    # buffered; a background thread ships it
        state.epoch = epoch + 1
        ctx.checkpoint(state)                 # atomic, checksummed, the last K kept
    ctx.write_outputs({"model": "churn", "version": 3})
    ctx.close()

The executor's side of the contract is :mod:`control_plane.jobs.launch_env`. This module does not import
torch: checkpoints (which do) are loaded on first use.

Under ``torch.distributed.run`` (a job with more than one GPU: one process per GPU, each with its
``RANK``) only rank 0 is *primary*: it alone logs metrics, writes checkpoints and ``outputs.json``; on the
other ranks those calls do nothing, so a curve gets one point per step and no two processes write the same
file. Every rank resumes from the checkpoint rank 0 resumed from: rank 0 picks it (and sets corrupt ones
aside), records it for the attempt, and the other ranks load that one (``resume_record.py``): each took
the newest it found, and without a process group rank 0 could write a newer one between its resume and
another rank's. When the job has initialised a ``torch.distributed`` process group,
:meth:`TrainingContext.checkpoint` is a barrier for all ranks on both sides of rank 0's write, so no rank
runs ahead of a checkpoint being written, and :meth:`TrainingContext.resume` one between rank 0's record
and the others' reads. The other ranks' checkpoint manager only reads (``CheckpointManager(writer=False)``):
they deleted rank 0's checkpoint in flight and renamed the corrupt checkpoints it set aside.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, SupportsFloat

import numpy as np

from clients.errors import AetherError, FailedPrecondition
from clients.sdk.tracking_values import checked_metrics
from control_plane.jobs.launch_env import LaunchEnv
from control_plane.training.dataset import PINS_FILE, TrainingData, load_training_data
from control_plane.training.metrics import BATCH_PREFIX, MetricsLogger
from control_plane.training.resume_record import RECORD_WAIT_S, await_record, write_failure, write_record
from control_plane.training.spec import Hyperparameters, TrainingSpec

if TYPE_CHECKING:
    from control_plane.training.checkpoint import Checkpoint, CheckpointManager, TrainingState

#: How long a checkpoint waits for the metric points logged before it to be sent.
CHECKPOINT_FLUSH_S = 5.0


class TrainingContext:
    """One attempt of one job. Use as a context manager (or call :meth:`close`): leaving it sends the
    buffered metrics."""

    def __init__(self, launch: LaunchEnv, spec: TrainingSpec, *, log_per_batch: bool | None = None) -> None:
        self.launch = launch
        self.spec = spec
        self.hyperparameters = Hyperparameters(spec.hyperparameters)
        #: Per-batch metrics are off unless asked for (hyperparameter ``log_every_batch``): an epoch
        #: curve is what most runs want, and per-batch points cost a buffer append each.
        self.log_per_batch = (
            self.hyperparameters.flag("log_every_batch", False) if log_per_batch is None else log_per_batch
        )
        self._metrics: MetricsLogger | None = None
        self._checkpoints: CheckpointManager | None = None
        self._dataset: TrainingData | None = None
        self._resumed: Checkpoint | None = None
        #: Epoch metrics logged so far, by epoch (restored from a checkpoint on resume), and the
        #: (key, epoch) points the tracking server already holds — see :meth:`_read_server_points`.
        self._epoch_metrics: dict[int, dict[str, float]] = {}
        # Whether per-batch points were logged since the last checkpoint (which then sends them first).
        self._batch_points_unsaved = False
        self._on_server: set[tuple[str, int]] = set()
        #: Per-batch keys (without the ``batch/`` prefix) the run already holds, with the highest step of
        #: each: a replayed batch at or below it was shipped by an earlier attempt. Empty on a fresh run.
        self._batch_on_server: dict[str, int] = {}
        self._server_read: bool | None = None  # not tried yet; then whether it succeeded
        #: Epoch points restored from the resumed checkpoint that still await :meth:`_mend_metric_curves`:
        #: the run could not be read at the resume (a later checkpoint, or closing, tries again).
        self._unmended: dict[int, dict[str, float]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingContext:
        """The context of the job this process runs as (``KeyError`` naming the variable when the launch
        environment is incomplete: the code was not started by an executor)."""
        launch = LaunchEnv.from_env(environ)
        return cls(launch, TrainingSpec.from_file(launch.spec_path))

    # Identity --------------------------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.launch.job_id

    @property
    def attempt(self) -> int:
        return self.launch.attempt

    @property
    def checkpoint_dir(self) -> Path:
        return self.launch.checkpoint_dir

    @property
    def run_id(self) -> str:
        """The tracking run the metrics go to (started here when the executor gave none)."""
        return self.metrics.run_id

    @property
    def is_primary(self) -> bool:
        """Whether this process is rank 0 (or the job's only process): the one that logs and writes."""
        return self.launch.rank == 0

    # Data ------------------------------------------------------------------------------------------------

    def dataset(self) -> TrainingData:
        """The spec's training set, fetched once per attempt, on the feature versions the job's first
        attempt pinned (:data:`~control_plane.training.dataset.PINS_FILE`). FAILED_PRECONDITION when the
        checkpoint this attempt resumed was trained on another dataset (:meth:`_check_resumed_dataset`)."""
        if self._dataset is None:
            pins = self.checkpoint_dir.parent / PINS_FILE
            self._dataset = load_training_data(self.launch.control_plane_addr, self.spec.dataset, pins=pins)
            self._check_resumed_dataset()
        return self._dataset

    def _check_resumed_dataset(self) -> None:
        """Refuses to go on from a checkpoint trained on another dataset than this attempt's: the data
        under the pinned feature versions changed between attempts (rows added to a version), and the
        model would be trained on a mix of both while its version records only the last."""
        if self._resumed is None or self._dataset is None:
            return
        saved = self._resumed.sdk.get("dataset_hash")
        if saved and saved != self._dataset.dataset_hash:
            raise FailedPrecondition(
                f"checkpoint {self._resumed.path.name} was trained on dataset {saved}, but this attempt's"
                f" training set ({', '.join(self._dataset.feature_refs)}) is dataset"
                f" {self._dataset.dataset_hash}: the data changed since the job started, and resuming"
                " would train one model on both; resubmit the job to train on the new data from scratch"
            )

    # Metrics ---------------------------------------------------------------------------------------------

    @property
    def metrics(self) -> MetricsLogger:
        if self._metrics is None:
            self._metrics = MetricsLogger(
                self.launch.control_plane_addr,
                run_id=self.launch.run_id,
                experiment=self.launch.tracking_experiment or self.spec.experiment or self.spec.name,
                run_name=self.spec.name,
            )
            # A run the control plane created already carries the job's parameters (and they are
            # immutable, so logging another spelling of one would be refused along with the metric points
            # of the same batch); a run started here gets them from the spec.
            if not self.launch.run_id and self.spec.hyperparameters:
                self._metrics.log_params(self.spec.hyperparameters)
            self._metrics.set_tags({"aether.job_id": self.job_id, "aether.attempt": self.attempt})
        return self._metrics

    def log_metrics(
        self, epoch: int, values: Mapping[str, SupportsFloat] | None = None, /, **metrics: SupportsFloat
    ) -> None:
        """Buffers one point per metric at step ``epoch`` (``values`` for names that are not identifiers,
        e.g. ``val/loss``); a value is a number, a numpy scalar or a 0-d torch tensor (the loss itself), as
        the tracking SDK takes them (``Run.log_metrics``). A point the run already holds from an earlier
        attempt is not sent again. Never waits on the network, except on the first call of a retried
        attempt that did not :meth:`resume`, which reads what the run holds (:meth:`_read_server_points`).
        Nothing is logged on a rank other than 0: every rank would send the same step."""
        if not self.is_primary:
            return
        self._read_server_points()
        # The checked floats, not what the caller passed: a numpy scalar (``np.mean(losses)``) kept raw
        # would go into every checkpoint's epoch metrics, which ``torch.load(weights_only=True)`` refuses,
        # so resuming would find every checkpoint unreadable. A bad value is refused before it is kept.
        merged = checked_metrics({**(values or {}), **metrics})
        self._epoch_metrics.setdefault(int(epoch), {}).update(merged)
        if unmended := self._unmended.get(int(epoch)):  # logged (or not) from here: not mended again
            for key in merged:
                unmended.pop(key, None)
        fresh = {key: value for key, value in merged.items() if (key, int(epoch)) not in self._on_server}
        if fresh:
            self.metrics.log_epoch(epoch, fresh)

    def log_batch_metrics(
        self, step: int, values: Mapping[str, SupportsFloat] | None = None, /, **metrics: SupportsFloat
    ) -> None:
        """Per-batch points (``batch/<name>`` at the global ``step``), only when per-batch logging is on.
        A batch an earlier attempt of a retried job already shipped (one this attempt replays) is not sent
        again (:meth:`_read_server_points`)."""
        if not self.log_per_batch or not self.is_primary:
            return
        merged = {**(values or {}), **metrics}
        self._read_server_points()
        if self._batch_on_server:
            shipped = self._batch_on_server
            merged = {
                key: value for key, value in merged.items() if key not in shipped or step > shipped[key]
            }
            if not merged:
                return
        self.metrics.log_batch(step, merged)
        self._batch_points_unsaved = True

    # Checkpoints -----------------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> CheckpointManager:
        if self._checkpoints is None:
            from control_plane.training.checkpoint import CheckpointManager

            # Rank 0 alone writes: another rank's manager only reads (checkpoint.py), as without a
            # process group nothing keeps it from resuming while rank 0 writes.
            self._checkpoints = CheckpointManager(
                self.checkpoint_dir, self.spec.keep_last, writer=self.is_primary
            )
        return self._checkpoints

    def checkpoint(self, state: TrainingState) -> Path | None:
        """Saves ``state`` with every RNG state, atomically; keeps the spec's last K checkpoints. The epoch
        metrics logged so far go into the checkpoint too (a few numbers per epoch). Only rank 0 writes
        (None elsewhere): ranks of one job share the checkpoint folder, and two writers of one file
        name would race on it and on the pruning of old ones."""
        _barrier()
        if self.is_primary and self._metrics is not None and (self._batch_points_unsaved or self._unmended):
            # Per-batch points up to this checkpoint are not in it: sent now, as a resume from it does not
            # replay their steps' logging. Buffered, a crash right after the save lost them for good (the
            # data-parallel test's batch/loss steps 1-5, once in CI). Bounded: an unreachable control plane
            # must not hold training up. Epoch points need no wait: they are in the checkpoint, and a
            # resume sends those the run lacks (a round trip per checkpoint was most of the SDK's time).
            # Still unsaved when the wait timed out: the next checkpoint waits for them again, even with
            # no batch logged in between (a resume from it does not replay their steps either).
            # A resume that could not read the run mends its curves once the control plane answers:
            # after a flush that went through, not at each checkpoint of an outage (a read waits longer).
            sent = self._metrics.flush(CHECKPOINT_FLUSH_S)
            self._batch_points_unsaved = not sent
            if sent and self._unmended:
                self._mend()
        sdk: dict[str, Any] = {"epoch_metrics": self._epoch_metrics}
        if self._dataset is not None:  # what a resume is checked against
            sdk["dataset_hash"] = self._dataset.dataset_hash
        path = self.checkpoints.save(state, sdk) if self.is_primary else None
        _barrier()
        return path

    def resume(self, *, record_wait_s: float = RECORD_WAIT_S) -> Checkpoint | None:
        """The newest valid checkpoint of this job (skipping corrupt ones with a warning), or None. On a
        rank other than 0, the one rank 0 of this attempt resumed from, whose record it waits for up to
        ``record_wait_s`` (``resume_record.py``); call it once per attempt on every rank.

        Resuming also mends the run's metric curves. Points still in the buffer when the previous attempt
        was killed never reached the server; those of epochs up to the checkpoint are in it and are sent
        again now, and points the server already holds (epochs the previous attempt shipped after the
        checkpoint, which this attempt replays) are not sent twice (:meth:`_read_server_points`). When
        the run cannot be read now (the control plane briefly unreachable), they are sent later: at the
        first checkpoint whose wait for the buffered points succeeds, or at :meth:`close`."""
        # Rank 0 alone picks: resuming renames a corrupt checkpoint it skips (two ranks renaming one file
        # race: the second fails on a file gone), and without a process group it may write a newer one
        # before another rank looks. The others load what it recorded (module doc).
        checkpoint = self._resume_as_rank_0() if self.is_primary else None
        _barrier()
        if not self.is_primary:
            checkpoint = self._resume_as_rank_0_did(record_wait_s)
        self._resumed = checkpoint
        self._check_resumed_dataset()
        if checkpoint is not None and self.is_primary:  # other ranks log nothing, so mend nothing
            saved = checkpoint.sdk.get("epoch_metrics", {})
            self._epoch_metrics = {int(epoch): dict(values) for epoch, values in saved.items()}
            self._unmended = {epoch: dict(values) for epoch, values in self._epoch_metrics.items()}
            self._mend()
        return checkpoint

    def _resume_as_rank_0(self) -> Checkpoint | None:
        """Rank 0's resume: the newest valid checkpoint, recorded for the other ranks of the attempt. When
        it fails, the failure is recorded instead before the error is raised: the other ranks waited for a
        record that never came (``record_wait_s``, 10 minutes by default) before failing themselves."""
        recording = self.launch.world_size > 1
        try:
            checkpoint = self.checkpoints.resume()
            if recording:
                if checkpoint is not None:
                    self.checkpoints.keep(checkpoint.path)
                write_record(self.checkpoint_dir, self.attempt, checkpoint)
        except BaseException as exc:
            if recording:
                try:
                    write_failure(self.checkpoint_dir, self.attempt, exc)
                except OSError as unrecorded:  # the other ranks wait out record_wait_s then; say why
                    exc.add_note(f"the other ranks could not be told ({unrecorded})")
                # With a process group the other ranks wait in the barrier after the record: let them
                # through to read it, rather than leave them there until the group times out.
                try:
                    _barrier()
                except Exception as barrier_error:  # rank 0's own error is the one to raise
                    exc.add_note(f"the barrier after recording it failed too: {barrier_error}")
            raise
        return checkpoint

    def _resume_as_rank_0_did(self, record_wait_s: float) -> Checkpoint | None:
        """The checkpoint rank 0 of this attempt recorded (``resume_record.py``), loaded; a
        ``FailedPrecondition`` when it cannot be, rather than another one than rank 0's."""
        from control_plane.training.checkpoint import CorruptCheckpoint

        rank = self.launch.rank
        name = await_record(self.checkpoint_dir, self.attempt, rank, record_wait_s)
        if name is None:
            return None
        try:
            return self.checkpoints.load(name)
        except (OSError, ValueError, CorruptCheckpoint) as exc:
            raise FailedPrecondition(
                f"rank {rank} cannot resume from {name}, the checkpoint rank 0 resumed attempt {self.attempt}"
                f" from: {exc}; resuming from another would train this rank's replica from another state"
            ) from exc

    def _read_server_points(self, *, resumed: bool = False) -> bool:
        """Learns, once per attempt (again after a failed read: :meth:`_mend`), which epoch points the
        job's run already holds: every metric key the run has (not only those a checkpoint saved: a key
        first logged after the last checkpoint, or an attempt killed before its first checkpoint, left
        points too), one history read per key.
        Per-batch keys are not read point by point (a long run holds hundreds of thousands): the run's
        summary gives each one's highest step, and the shipper sends a key's points in the order they
        were logged, with steps that only grow, so every step up to that one is on the server already.
        Only a retried attempt (or one that ``resumed`` a checkpoint) logging into the control plane's run
        can find points of its own there.
        For an epoch this attempt recomputes, the point already on the server stays and the new value is
        not logged: a curve holds one point per step, and the server keeps what it was sent first (a
        replay from a checkpoint recomputes the same value; one from scratch may differ slightly, which
        is not worth a second point). False when the server could not be read: points logged meanwhile
        may then be duplicates, and a resume's mending waits for a read that succeeds (:meth:`_mend`)."""
        if self._server_read is not None:
            return self._server_read
        self._server_read = True
        if not self.launch.run_id or (self.attempt <= 1 and not resumed):
            return True
        client = self.metrics.client
        try:
            summaries = client.get_run(self.run_id).metrics
            self._batch_on_server = {
                m.key.removeprefix(BATCH_PREFIX): int(m.latest_step)
                for m in summaries
                if m.key.startswith(BATCH_PREFIX)
            }
            keys = [m.key for m in summaries if not m.key.startswith(BATCH_PREFIX)]
            for key in keys:
                series = client.metric_history(self.run_id, key)
                self._on_server.update((key, int(step)) for step in series.steps)
        except AetherError as exc:
            warnings.warn(
                f"could not read the run's metrics to avoid logging them twice: {exc}", stacklevel=3
            )
            self._server_read = False
        return self._server_read

    def _mend(self) -> None:
        """Sends the resumed checkpoint's epoch points the run lacks, once it can be read: a read that
        failed is tried again here (from scratch), and until one succeeds the points stay unmended."""
        if self._server_read is False:
            self._server_read = None
            self._on_server.clear()
            self._batch_on_server = {}
        if self._read_server_points(resumed=True):
            self._mend_metric_curves()

    def _mend_metric_curves(self) -> None:
        unmended, self._unmended = self._unmended, {}
        for epoch, values in sorted(unmended.items()):
            missing = {key: value for key, value in values.items() if (key, epoch) not in self._on_server}
            if missing:
                self.metrics.log_epoch(epoch, missing)

    # Outputs ---------------------------------------------------------------------------------------------

    def write_outputs(self, outputs: Mapping[str, Any]) -> Path:
        """Writes ``outputs.json`` beside the checkpoint folder (atomically), where the control plane
        picks it up when the job succeeds. Only rank 0 writes it; other ranks get its path and write
        nothing.

        The file is JSON for any reader: a NaN or an infinity (a diverged loss) is written as the text
        ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, and an integer no double holds as its digits, which
        is what the control plane keeps such values as (``control_plane.jobs.files.read_outputs``); a
        warning names where they were. Python's ``json.dumps`` wrote ``NaN`` and ``Infinity``, which
        strict JSON readers refuse."""
        path = self.launch.outputs_path
        if not self.is_primary:
            return path
        not_json: list[str] = []
        document = json.dumps(
            json_outputs(dict(outputs), "", not_json), indent=2, sort_keys=True, allow_nan=False
        )
        if not_json:
            warnings.warn(
                f"outputs.json: numbers no double holds (NaN, an infinity, past 1.8e308) written as text"
                f" at {', '.join(not_json)}",
                stacklevel=2,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(document)
        with open(temp, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temp, path)
        return path

    # Lifecycle -------------------------------------------------------------------------------------------

    def close(self, status: str = "FINISHED") -> None:
        if self._metrics is not None:
            # The last chance to mend what a resume could not (:meth:`resume`), if the control plane
            # answers: a read while it does not would add its wait to the close's own.
            if self._unmended and self.is_primary and self._metrics.flush(CHECKPOINT_FLUSH_S):
                self._mend()
            self._metrics.close(status)
            self._metrics = None

    def __enter__(self) -> TrainingContext:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close("FINISHED" if exc_type is None else "FAILED")


def json_outputs(value: Any, where: str, not_json: list[str]) -> Any:
    """``value`` as plain JSON values: numpy scalars and arrays and torch tensors (what a training loop
    holds: ``json.dumps`` refused all but np.float64) as the Python numbers, booleans and lists they hold,
    tuples as lists; each float that is not finite, and each integer no double holds, replaced by its text
    (``"NaN"``, ``"Infinity"``, ``"-Infinity"``, the integer's digits), where each was (``metrics.best[0]``)
    appended to ``not_json``. ``TypeError`` naming where for a value JSON has none for (a complex number,
    an object), before anything is written."""
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        not_json.append(where or "(the value)")
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            not_json.append(where or "(the value)")
            return str(value)
        return value
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        plain: dict[Any, Any] = {}
        for key, item in value.items():
            key = _plain(key)
            inside = f"{where}.{key}" if where else str(key)
            if key is not None and not isinstance(key, str | int | float):
                _refuse(f"{inside} (a key)", key)
            plain[key] = json_outputs(item, inside, not_json)
        return plain
    if isinstance(value, list | tuple):
        return [json_outputs(item, f"{where}[{index}]", not_json) for index, item in enumerate(value)]
    _refuse(where or "(the value)", value)


def _plain(value: Any) -> Any:
    """A numpy scalar or array, or a torch tensor, as the Python value(s) it holds; anything else as it
    is. torch is looked for only when the job imported it (this module does not)."""
    if isinstance(value, np.ndarray):
        return value.tolist()  # nested lists of Python scalars (np.longdouble's stay: converted below)
    if isinstance(value, np.generic) and not isinstance(value, str | bytes):
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)  # np.longdouble's item() is itself
        return value.item()  # a complex, a datetime: refused by the caller, named
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()  # detached: no autograd warning for a loss
    return value


def _refuse(where: str, value: object) -> NoReturn:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:80]}... ({len(shown)} characters)"
    raise TypeError(
        f"outputs.json: {where}: {shown} ({type(value).__name__}) is not a JSON value (a number, text,"
        " true or false, null, a list or a mapping of them); nothing was written"
    )


def _barrier() -> None:
    """Waits for every rank when the job runs a ``torch.distributed`` process group; else nothing (a
    single process, or ranks that do not communicate: they cannot be made to wait for each other)."""
    if "torch" not in sys.modules:  # no process group without torch imported; do not import it here
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
