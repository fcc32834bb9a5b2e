"""Which checkpoint the ranks of one attempt resume from: decided once, by rank 0.

Each rank used to resume from the newest checkpoint it found. With a ``torch.distributed`` process group
the barriers of ``TrainingContext.resume`` and ``checkpoint`` keep every rank's look at the folder between
the same two writes of rank 0; without one (ranks started as separate processes that do not talk to each
other) rank 0 could write a new checkpoint between its own resume and another rank's, which then resumed
from the new one while rank 0 had resumed from the old: replicas trained on from different states.

Now rank 0 of an attempt with several ranks records, once it has resumed, which checkpoint that was (or
that there was none) in the checkpoint folder, ``resumed-attempt-<attempt>.json``, written atomically (a
temporary file renamed over the name: it is whole or absent), and removes the records of earlier attempts
(their ranks have ended: attempts never overlap). Every other rank waits for the record of its own attempt
(:func:`await_record`, up to ``RECORD_WAIT_S`` by default) and loads exactly that checkpoint; rank 0 keeps
it from pruning for the attempt (``CheckpointManager.keep``), so a rank that starts late still finds it. A
rank that cannot (no record in time, the checkpoint gone or damaged since) stops with
``FailedPrecondition`` saying why, rather than resuming from another checkpoint than rank 0's.

When rank 0's own resume fails (an ``UnreadableCheckpoint``, any other error), it records that instead
(:func:`write_failure`, same file, its ``failed`` naming the error) and raises its error: the other ranks
waited for a record that never came, the whole ``RECORD_WAIT_S``, before failing; now each stops at once
with ``FailedPrecondition`` naming rank 0's error. A rank 0 that fails before it resumes (loading its
data, building its model) records nothing; a job's ranks run under torchrun, which stops the others as
soon as rank 0 exits, naming its error in the job's log, so only ranks started by hand wait out
``RECORD_WAIT_S`` then.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from clients.errors import FailedPrecondition

if TYPE_CHECKING:
    from control_plane.training.checkpoint import Checkpoint

#: How long a rank other than 0 waits, by default, for rank 0 to record the checkpoint it resumed from:
#: rank 0 may fetch its training set before it resumes, which can take minutes.
RECORD_WAIT_S = 600.0

_RECORD = re.compile(r"^resumed-attempt-(?P<attempt>[0-9]+)\.json$")
#: How often a waiting rank looks for the record: first soon, then every second at most.
_FIRST_POLL_S = 0.02
_MAX_POLL_S = 1.0


def record_path(directory: Path, attempt: int) -> Path:
    """Where rank 0 of ``attempt`` records the checkpoint it resumed from."""
    return directory / f"resumed-attempt-{attempt}.json"


def write_record(directory: Path, attempt: int, checkpoint: Checkpoint | None) -> Path:
    """Records (atomically) that ``attempt`` resumes from ``checkpoint`` (None: from scratch), and removes
    the records of earlier attempts. Rank 0's, after its resume."""
    from control_plane.training.checkpoint import write_atomically

    record = {"attempt": attempt, "checkpoint": None if checkpoint is None else checkpoint.path.name}
    path = record_path(directory, attempt)
    write_atomically(path, json.dumps(record).encode())
    for entry in directory.iterdir():
        if (match := _RECORD.fullmatch(entry.name)) is not None and int(match["attempt"]) < attempt:
            entry.unlink(missing_ok=True)
    return path


def write_failure(directory: Path, attempt: int, error: BaseException) -> Path:
    """Records (atomically) that rank 0 of ``attempt`` could not resume, naming ``error``, so that the
    other ranks stop at once rather than wait for a record of a checkpoint that never comes."""
    from control_plane.training.checkpoint import write_atomically

    record = {"attempt": attempt, "checkpoint": None, "failed": f"{type(error).__name__}: {error}"}
    path = record_path(directory, attempt)
    write_atomically(path, json.dumps(record).encode())
    return path


def await_record(directory: Path, attempt: int, rank: int, wait_s: float = RECORD_WAIT_S) -> str | None:
    """The name of the checkpoint rank 0 of ``attempt`` resumed from (None: it resumed from none), read
    from its record once there, waiting up to ``wait_s``; ``FailedPrecondition`` naming the record when it
    did not come in time or cannot be read, or naming rank 0's error when it records that it failed."""
    path = record_path(directory, attempt)
    deadline = time.monotonic() + wait_s
    poll_s = _FIRST_POLL_S
    while True:
        try:
            text = path.read_text(encoding="utf-8")
            break
        except FileNotFoundError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FailedPrecondition(
                    f"rank {rank}: rank 0 did not record which checkpoint attempt {attempt} resumes from"
                    f" within {wait_s:g} s ({path}): every rank resumes from the one rank 0 resumed from, so"
                    " rank 0 must call resume() too, and run with WORLD_SIZE set above 1"
                ) from None
            time.sleep(min(poll_s, left))
            poll_s = min(poll_s * 2, _MAX_POLL_S)
        except OSError as exc:
            raise FailedPrecondition(f"rank {rank}: cannot read {path}: {exc}") from exc
    try:
        record = json.loads(text)
        name = record["checkpoint"]
        failed = record.get("failed")
    except (ValueError, TypeError, KeyError) as exc:
        raise FailedPrecondition(f"rank {rank}: {path} is not a resume record: {exc!r}") from exc
    if failed is not None:
        raise FailedPrecondition(
            f"rank {rank}: rank 0 failed to resume attempt {attempt}, so there is no checkpoint to resume"
            f" from as it did ({path}): {failed}"
        )
    if name is not None and not isinstance(name, str):
        raise FailedPrecondition(f"rank {rank}: {path} names no checkpoint: {name!r}")
    return name
