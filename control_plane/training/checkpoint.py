"""Crash-safe training checkpoints: atomic, checksummed, the last K kept, resumed from the newest valid.

A checkpoint is one file ``checkpoint-<seq>.ckpt`` in the job's checkpoint folder::

    MAGIC (8 bytes) | sha256 of the payload (32 bytes) | payload length (8 bytes, big-endian) | payload

The payload is ``torch.save`` of plain data: model, optimizer and LR-scheduler state dicts, epoch, step,
every RNG state (:mod:`.rng`) and the job's extra state. Writing goes to a temporary file in the same
folder, is fsynced, renamed over the final name and the folder fsynced, so after a crash (SIGKILL, power
loss) the final name holds a whole checkpoint or does not exist. The checksum catches what the rename
cannot: a file damaged later (disk, a copy gone wrong). :meth:`CheckpointManager.resume` walks from the
newest checkpoint down, skips — with a :class:`CorruptCheckpointWarning` — one whose header, length or
checksum does not verify (renaming it ``….corrupt`` so it is kept for inspection but never tried again),
or that cannot be read at all (an I/O error: left in place, as the fault may pass), and returns the first
that verifies.

Checkpoints are read with ``torch.load(weights_only=True)``, which refuses most types beyond tensors and
plain Python data. :meth:`CheckpointManager.save` therefore never writes a checkpoint it could not read
back: numpy scalars in the optimizer and LR-scheduler state (``lr=np.float64(0.01)`` from a numpy sweep
grid) are saved as the Python numbers they equal, and any other value the loader would refuse (a numpy
array or scalar, a ``datetime`` or ``Path`` in ``extra``) is a ``TypeError`` naming it, at the save. A
checkpoint whose checksum verifies but whose payload still does not load (written by an older version,
or another torch) is intact, not corrupt: resuming stops with :class:`UnreadableCheckpoint` and leaves it
in place, as setting it aside would silently restart the training from an older checkpoint or scratch.

The ranks of a job share its checkpoint folder, and only one process may write it (rank 0): a manager
made with ``writer=False`` only reads. It never removes temporary files (the writer's checkpoint in
flight: a reading rank deleted it when made, and the writer's rename then failed) nor sets a corrupt
checkpoint aside (it skips it; two ranks renaming one file raced, the second failing on a file gone).
It sees only renamed, whole checkpoints; one the writer prunes while it reads is skipped like an
unreadable one. Without a process group nothing orders a reader after the writer, so the other ranks do
not pick a checkpoint themselves: they load (:meth:`CheckpointManager.load`) the one rank 0 resumed from,
which rank 0 records for the attempt (``resume_record.py``) and keeps from pruning
(:meth:`CheckpointManager.keep`) until the attempt ends.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from control_plane.training.rng import OwnedGenerator, capture_rng_state, restore_rng_state

MAGIC = b"AETHCKP1"
_DIGEST_BYTES = 32
_LENGTH_BYTES = 8
HEADER_BYTES = len(MAGIC) + _DIGEST_BYTES + _LENGTH_BYTES
FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(?P<seq>[0-9]{8,})\.ckpt(?P<corrupt>\.corrupt)?$")
_TEMP_PREFIX = ".checkpoint-"


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint failed verification and was skipped."""


class CorruptCheckpoint(Exception):
    """A checkpoint file that does not verify (header, length or checksum): damaged after it was written."""


class UnreadableCheckpoint(Exception):
    """A checkpoint whose checksum verifies but whose payload does not load here (a type
    ``torch.load(weights_only=True)`` refuses, an unknown format). The file is whole, so it is neither
    skipped nor set aside: training would silently start over from an older checkpoint."""


@dataclass
class TrainingState:
    """What one checkpoint captures. ``model``, ``optimizer`` and ``scheduler`` are saved (and restored)
    through their ``state_dict``; ``generators`` are job-owned RNGs (e.g. the batch-order generator);
    ``extra`` is any plain data (tensors, Python numbers, strings, lists, tuples, dicts): what
    ``torch.load(weights_only=True)`` reads back; anything else (numpy values, ``datetime``, ``Path``,
    ``defaultdict``) makes :meth:`CheckpointManager.save` raise ``TypeError``."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    epoch: int = 0
    step: int = 0
    generators: Mapping[str, OwnedGenerator] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint read back from disk."""

    path: Path
    sequence: int
    payload: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.payload["epoch"])

    @property
    def step(self) -> int:
        return int(self.payload["step"])

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.payload["extra"])

    @property
    def sdk(self) -> dict[str, Any]:
        return dict(self.payload.get("sdk", {}))

    def restore(self, state: TrainingState) -> None:
        """Loads the saved state dicts into ``state``'s objects, sets its epoch, step and extra, and
        restores every RNG (global ones and ``state.generators``) to where the checkpoint was taken."""
        state.model.load_state_dict(self.payload["model"])
        if state.optimizer is not None:
            state.optimizer.load_state_dict(self.payload["optimizer"])
        if state.scheduler is not None:
            state.scheduler.load_state_dict(self.payload["scheduler"])
        state.epoch = self.epoch
        state.step = self.step
        state.extra = self.extra
        restore_rng_state(self.payload["rng"], state.generators)


class CheckpointManager:
    """Checkpoints of one job in ``directory`` (shared by all its attempts), keeping the newest
    ``keep_last``."""

    def __init__(self, directory: Path, keep_last: int = 3, *, writer: bool = True) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        #: Whether this process writes the folder (module doc): a reader changes nothing in it.
        self.writer = writer
        #: A checkpoint :meth:`prune` never deletes: the one this attempt's ranks resume from (:meth:`keep`).
        self._kept: Path | None = None
        if writer:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_partial_writes()

    # Writing ---------------------------------------------------------------------------------------------

    def save(self, state: TrainingState, sdk: Mapping[str, Any] | None = None) -> Path:
        """Writes a checkpoint of ``state`` atomically, prunes to the newest ``keep_last``, returns its path.
        ``sdk`` is the training SDK's own bookkeeping (e.g. the epoch metrics logged so far).

        Numpy scalars in the optimizer and scheduler state are saved as Python numbers (restoring them
        gives the same optimizer); any value ``torch.load(weights_only=True)`` would refuse raises
        ``TypeError`` naming it, and nothing is written."""
        self._check_writer("save")
        payload = {
            "format": FORMAT_VERSION,
            "epoch": int(state.epoch),
            "step": int(state.step),
            "model": state.model.state_dict(),
            "optimizer": _plain_numbers(state.optimizer.state_dict()) if state.optimizer is not None else {},
            "scheduler": _plain_numbers(state.scheduler.state_dict()) if state.scheduler is not None else {},
            "rng": capture_rng_state(state.generators),
            "extra": dict(state.extra),
            "sdk": dict(sdk or {}),
        }
        check_loadable(payload)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path = self.directory / f"checkpoint-{self._next_sequence():08d}.ckpt"
        write_atomically(path, encode(buffer.getvalue()))
        self.prune()
        return path

    def prune(self) -> list[Path]:
        """Deletes all but the newest ``keep_last`` checkpoints (corrupt ones are left alone); returns
        the deleted paths."""
        self._check_writer("prune")
        valid = [path for seq, path, corrupt in self._listing() if not corrupt]
        doomed = [path for path in valid[: max(0, len(valid) - self.keep_last)] if path != self._kept]
        for path in doomed:
            path.unlink(missing_ok=True)
        if doomed:
            fsync_directory(self.directory)
        return doomed

    def keep(self, path: Path) -> None:
        """Keeps ``path`` through every later :meth:`prune` of this manager, beyond the newest
        ``keep_last``: the checkpoint the attempt's other ranks resume from, which a rank slower to
        start than rank 0's next ``keep_last`` saves would otherwise find gone. The next attempt's prune
        drops it."""
        self._check_writer("keep")
        self._kept = Path(path)

    # Reading ---------------------------------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """The checkpoint files not known to be corrupt, oldest first."""
        return [path for _, path, corrupt in self._listing() if not corrupt]

    def resume(self) -> Checkpoint | None:
        """The newest checkpoint that verifies, or None when there is none. Each newer one that does not
        verify is skipped with a :class:`CorruptCheckpointWarning` and renamed ``….corrupt``, and one that
        cannot be read (an ``OSError``) is skipped with that warning and left where it is; one that
        verifies but does not load raises :class:`UnreadableCheckpoint` and stays where it is."""
        for sequence, path, corrupt in reversed(self._listing()):
            if corrupt:
                continue
            try:
                payload = load_payload(path)
            except CorruptCheckpoint as exc:
                warnings.warn(
                    f"skipping corrupt checkpoint {path.name}: {exc}; falling back to the one before",
                    CorruptCheckpointWarning,
                    stacklevel=2,
                )
                if not self.writer:  # the writer sets it aside (module doc)
                    continue
                path.replace(path.with_name(path.name + ".corrupt"))
                fsync_directory(self.directory)
                continue
            except OSError as exc:
                # Its bytes cannot be read (an I/O error, a file gone since the listing): nothing verifies,
                # so it is skipped like a damaged one, but left in place, the fault being perhaps the
                # disk's and passing. It stopped resume, and every retry of the job failed the same way.
                warnings.warn(
                    f"cannot read checkpoint {path.name}: {exc}; falling back to the one before (the file"
                    " is left in place)",
                    CorruptCheckpointWarning,
                    stacklevel=2,
                )
                continue
            return Checkpoint(path, sequence, payload)
        return None

    def load(self, name: str) -> Checkpoint:
        """The checkpoint file ``name`` of the folder, verified (the one rank 0 resumed from, for another
        rank): ``FileNotFoundError`` when there is none, :class:`CorruptCheckpoint` when it does not
        verify, :class:`UnreadableCheckpoint` when it does but does not load. Nothing is set aside."""
        match = _NAME.fullmatch(name)
        if match is None or match["corrupt"] is not None:
            raise ValueError(f"{name!r} is not the name of a checkpoint (checkpoint-<number>.ckpt)")
        path = self.directory / name
        return Checkpoint(path, int(match["seq"]), load_payload(path))

    def _check_writer(self, doing: str) -> None:
        if not self.writer:
            raise RuntimeError(
                f"cannot {doing} checkpoints in {self.directory}: this manager only reads them"
            )

    def _listing(self) -> list[tuple[int, Path, bool]]:
        found = []
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:  # a reader's, before the writer made the folder: no checkpoint yet
            return []
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match is not None and entry.is_file():
                found.append((int(match["seq"]), entry, match["corrupt"] is not None))
        return sorted(found)

    def _next_sequence(self) -> int:
        """One past the highest number any entry holds, files or not: a folder (or another entry that is
        no checkpoint) on a checkpoint's name is passed over by :meth:`resume`, and writing onto its name
        failed every save, so every attempt of the job."""
        numbers = [
            int(match["seq"])
            for entry in self.directory.iterdir()
            if (match := _NAME.fullmatch(entry.name)) is not None
        ]
        return max(numbers, default=0) + 1

    def _remove_partial_writes(self) -> None:
        """Temporary files of a writer that died before its rename: never a checkpoint, safe to drop."""
        for entry in self.directory.iterdir():
            if entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)


def encode(payload: bytes) -> bytes:
    return MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(_LENGTH_BYTES, "big") + payload


def decode(data: bytes) -> bytes:
    """The payload of an encoded checkpoint; :class:`CorruptCheckpoint` when anything does not verify."""
    if len(data) < HEADER_BYTES or not data.startswith(MAGIC):
        raise CorruptCheckpoint("not an Aether checkpoint (bad header)")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST_BYTES]
    length = int.from_bytes(data[len(MAGIC) + _DIGEST_BYTES : HEADER_BYTES], "big")
    payload = data[HEADER_BYTES:]
    if len(payload) != length:
        raise CorruptCheckpoint(f"payload is {len(payload)} bytes, the header says {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpoint("sha256 checksum mismatch")
    return payload


def load_payload(path: Path) -> dict[str, Any]:
    """The payload of the checkpoint at ``path``: :class:`CorruptCheckpoint` when the file does not
    verify, :class:`UnreadableCheckpoint` when it does but its payload does not load."""
    path = Path(path)
    payload = decode(path.read_bytes())
    # Past the checksum the bytes are what the writer wrote: a failure now is a type or format this code
    # cannot read (e.g. a numpy scalar saved by an older version), which no retry and no renaming mends.
    try:
        loaded = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(path, f"Its payload does not load: {exc}") from exc
    if not isinstance(loaded, dict) or loaded.get("format") != FORMAT_VERSION:
        raise _unreadable(path, f"Unknown checkpoint format (this version reads format {FORMAT_VERSION}).")
    return loaded


def _unreadable(path: Path, why: str) -> UnreadableCheckpoint:
    return UnreadableCheckpoint(
        f"checkpoint {path.name} is intact (its sha256 verifies) but cannot be resumed; it is left in place"
        " rather than skipped, as starting over from an older checkpoint or from scratch would silently"
        f" discard training (move it aside to resume from the one before). {why}"
    )


# Saving only what loads ------------------------------------------------------------------------------


def _plain_numbers(value: Any) -> Any:
    """``value`` with numpy scalars turned into the Python numbers they equal, through dicts, lists and
    tuples. For optimizer and scheduler state: a learning rate from a numpy grid (``np.float64``) lands in
    ``param_groups`` and a scheduler's ``base_lrs``; loaded back as a float it trains the same."""
    if isinstance(value, np.generic):
        return value.item()
    if type(value) is dict:
        return {key: _plain_numbers(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain_numbers(item) for item in value)
    return value


def check_loadable(payload: Mapping[str, Any]) -> None:
    """``TypeError`` naming the first value of ``payload`` that ``torch.load(weights_only=True)`` refuses
    (or that does not pickle at all). Round-trips the payload with each plain tensor swapped for an empty
    one of its dtype: the loader refuses types, never tensor data, and the weights are then neither
    serialized twice nor held twice in memory."""
    if _plainly_loadable(payload):
        return
    skeleton = _skeleton(payload)
    if _loads(skeleton):
        return
    where, value = _first_unloadable(skeleton, "")
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = f"{shown[:_SHOWN_CHARS]}..."
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    raise TypeError(
        f"cannot checkpoint {where.lstrip('.')} = {shown} ({kind}): torch.load(weights_only=True) would"
        " refuse it, so no resume could read the checkpoint; save plain data instead (tensors, Python"
        " numbers, strings, lists, tuples, dicts), e.g. torch.from_numpy(array) or number.item()"
    )


#: Types ``torch.load(weights_only=True)`` always reads back (exact types: a subclass may not be). Not
#: ``bytes``: it refuses ``b""`` (pickled as a call of ``bytes``), so bytes go through the round trip.
_PLAIN_LEAVES = frozenset({int, float, bool, complex, str, type(None), torch.dtype, torch.device, torch.Size})


def _plainly_loadable(value: Any) -> bool:
    """Whether ``value`` is made only of plain containers, plain tensors and :data:`_PLAIN_LEAVES`, all of
    which the loader reads: the common checkpoint (state dicts, numbers, strings), checked by a walk in
    microseconds. Anything else is not judged here (False) but by the round trip of :func:`check_loadable`,
    which took half of the SDK's time per epoch when it ran on every checkpoint (the training-overhead
    benchmark went from 1.2 % to 4.6 %, over its 3 % target)."""
    kind = type(value)
    if kind is torch.Tensor:
        return value.layout == torch.strided and not value.is_quantized
    if kind in _PLAIN_LEAVES:
        return True
    if kind in (dict, OrderedDict):
        return all(_plainly_loadable(k) and _plainly_loadable(v) for k, v in value.items())
    if kind in (list, tuple):
        return all(_plainly_loadable(item) for item in value)
    return False


#: The most characters of a refused value's repr that :func:`check_loadable` shows.
_SHOWN_CHARS = 80


def _skeleton(value: Any) -> Any:
    """``value`` with every plain strided tensor replaced by an empty one of the same dtype (other
    tensors, e.g. quantized or subclasses, kept as they are: they are what the loader may refuse)."""
    if type(value) is torch.Tensor and value.layout == torch.strided and not value.is_quantized:
        return torch.empty(0, dtype=value.dtype)
    if type(value) in (dict, OrderedDict):
        return type(value)((key, _skeleton(item)) for key, item in value.items())
    if type(value) in (list, tuple):
        return type(value)(_skeleton(item) for item in value)
    return value


def _loads(value: Any) -> bool:
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    except Exception:  # refused by the loader, or not picklable at all: both unloadable
        return False
    return True


def _first_unloadable(value: Any, where: str) -> tuple[str, Any]:
    """The path (``.extra['v']``) and value of the innermost part of ``value`` that does not load: a
    container whose parts all load is itself the culprit (a ``defaultdict``)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not _loads(key):
                return _first_unloadable(key, f"a key of {where.lstrip('.') or 'the checkpoint'}")
            if not _loads(item):
                name = f".{key}" if not where and isinstance(key, str) else f"[{key!r}]"
                return _first_unloadable(item, where + name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if not _loads(item):
                return _first_unloadable(item, f"{where}[{index}]")
    return where, value


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or keeps what it held: temp file in the same folder, fsync, rename,
    fsync of the folder (so the rename itself survives a power loss)."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
