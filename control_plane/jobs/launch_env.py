"""The contract between the executor and a job's code: the environment a job is started with.

The executor starts the job's entrypoint (``python -m MODULE [args]`` or a command) with these variables
set; the in-job training SDK reads them back with :meth:`LaunchEnv.from_env`. Nothing here imports
anything but the standard library, so the SDK side can read the same names.

- ``AETHER_JOB_ID``: the job's id.
- ``AETHER_JOB_ATTEMPT``: 1 on the first start, +1 on each restart after a failure.
- ``AETHER_JOB_SPEC``: path to a JSON file holding the full job spec (``spec.JobSpec.to_json``: name,
  entrypoint, hyperparameters, dataset reference, feature refs, gpus, checkpoint interval, ...).
- ``AETHER_CHECKPOINT_DIR``: the job's checkpoint folder, the same for every attempt of one job.
- ``AETHER_CONTROL_PLANE_ADDR``: where the control plane is reached.
- ``AETHER_TRACKING_EXPERIMENT``: the tracking experiment name (the spec's, else the job name).
- ``AETHER_RUN_ID``: the tracking run the control plane created when the job first started; the same
  for every attempt.
- ``CUDA_VISIBLE_DEVICES``: the allocated GPUs, comma-separated (``""`` for a CPU job).
- ``CUDA_DEVICE_ORDER=PCI_BUS_ID``: the pool's GPU indices are NVML's (PCI bus order); CUDA numbers
  GPUs fastest first unless told otherwise, so on a host with mixed GPUs index 0 could be another GPU.
- ``RANK``: not set by the executor but by ``torch.distributed.run``, which starts a job with more than
  one GPU as one process per GPU; the training SDK lets only rank 0 (or a process without ``RANK``) log
  metrics, write checkpoints and outputs. ``WORLD_SIZE`` (torchrun's too): how many ranks there are;
  rank 0 of several records which checkpoint the attempt resumes from, for the others
  (``control_plane/training/resume_record.py``).

Besides these and the spec's own ``env`` (which overrides what is inherited), a job gets only the variables
of the control plane's environment that :data:`INHERITED_ENV` names: what a process needs to run (``PATH``,
``HOME``, the locale, the temporary folder, the Python path and virtual environment), the GPU stack's
settings (``CUDA_*``, ``NVIDIA_*``, ``NCCL_*``, ``LD_LIBRARY_PATH``), where the state lives
(``AETHER_HOME``, ``AETHER_OFFLINE_ROOT``: a recorded dataset is read from the offline store) and how to
call the control plane back (``AETHER_TOKEN`` / ``AETHER_TOKEN_FILE``, ``AETHER_TLS_CA``,
``AETHER_TLS_SERVER_NAME``). Never the control plane's own secrets: ``AETHER_ADMIN_TOKEN``,
``AETHER_READONLY_TOKEN``, ``AETHER_DB_URL``, ``AETHER_REDIS_URL``, cloud or Kafka credentials. A job
that needs one of those names it in its spec's ``env``. The control plane does not read ``AETHER_TOKEN``
itself: it is there only for its jobs when auth is off. With auth on the supervisor gives each job a token
of its own (``control_plane.api.job_tokens``: it writes only the job's run), as ``AETHER_TOKEN_FILE``
naming a 0600 file in the job's folder (:data:`TOKEN_FILE`), which replaces both inherited variables, so
the admin token is not handed to a job unless its spec says so. A spec that sets either variable keeps its
own and replaces both inherited ones (the SDK would read an inherited ``AETHER_TOKEN`` before the spec's
file).

That keeps secrets out of what a job is given, not out of its reach: unless ``AETHER_JOB_USER`` names
another OS user for jobs (``job_user.py``: then ``HOME``, ``USER`` and ``LOGNAME`` are that user's, and
``AETHER_CHECKPOINT_DIR`` lies in the job user's ``work`` folder), a job runs as the control plane's
user and may read whatever that user may read, the admin token's file (``AETHER_ADMIN_TOKEN_FILE``), other
jobs' token files and specs, the SQLite database, and other processes of the user. With auth on the
control plane takes its own secrets out of what ``/proc/<pid>/environ`` shows and makes itself
non-dumpable (``control_plane.process_secrets``); the launcher, the job's parent, is started with this
environment only. Hostile job code needs another user (``AETHER_JOB_USER``) or a container.

stdout and stderr go to the job's log file (``aetherctl jobs logs``). Exit code 0 means SUCCEEDED; a
non-zero code or a signal is a failed attempt, restarted while attempts <= 1 + max_retries (the job
resumes from its last checkpoint). A job may report outputs by writing ``OUTPUTS_FILE`` (``outputs.json``)
in the parent folder of ``AETHER_CHECKPOINT_DIR``, e.g. ``{"model": "name", "version": 3}``; the control
plane stores it on the job record when the job succeeds (at most 1 MiB and 20 levels deep; ``NaN``,
infinities and integers past 1.8e308, which a double cannot hold, are kept as their text, and half a
surrogate pair, which is no character, as U+FFFD).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

JOB_ID = "AETHER_JOB_ID"
JOB_ATTEMPT = "AETHER_JOB_ATTEMPT"
JOB_SPEC = "AETHER_JOB_SPEC"
CHECKPOINT_DIR = "AETHER_CHECKPOINT_DIR"
CONTROL_PLANE_ADDR = "AETHER_CONTROL_PLANE_ADDR"
TRACKING_EXPERIMENT = "AETHER_TRACKING_EXPERIMENT"
RUN_ID = "AETHER_RUN_ID"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
CUDA_DEVICE_ORDER = "CUDA_DEVICE_ORDER"
RANK = "RANK"
WORLD_SIZE = "WORLD_SIZE"

#: Name of the outputs file, written by the job next to (in the parent of) its checkpoint folder.
OUTPUTS_FILE = "outputs.json"

#: The variables of the control plane's environment a job inherits (see the module docstring): a name,
#: or a prefix ending in ``*``. An allow-list, not a deny-list: a secret the operator gives the control
#: plane under a name nobody thought of (a Kafka password, another cloud's key) stays out of jobs.
INHERITED_ENV: tuple[str, ...] = (
    # To run at all.
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "LANGUAGE", "LC_*",
    "TMPDIR", "TEMP", "TMP",
    # Python: the project importable, the same virtual environment, unbuffered output kept.
    "PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED",
    # GPUs and the numeric libraries' thread counts.
    "CUDA_*", "NVIDIA_*", "NCCL_*", "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    # The platform: where its state lives, and how to call the control plane back.
    "AETHER_HOME", "AETHER_OFFLINE_ROOT",
    "AETHER_TOKEN", "AETHER_TOKEN_FILE", "AETHER_TLS_CA", "AETHER_TLS_SERVER_NAME",
)  # fmt: skip
#: Either names the token the SDK sends; the spec giving one must not leave the other inherited.
_TOKEN_VARIABLES = ("AETHER_TOKEN", "AETHER_TOKEN_FILE")
#: Where the supervisor points a job at the job token it minted (``control_plane.api.job_tokens``).
TOKEN_FILE = "AETHER_TOKEN_FILE"


def sets_token(spec_env: Mapping[str, str]) -> bool:
    """Whether a job's own ``env`` names the token it calls back with (then no job token is minted)."""
    return any(name in spec_env for name in _TOKEN_VARIABLES)


@dataclass(frozen=True)
class LaunchEnv:
    """The launch variables of one attempt of one job."""

    job_id: str
    attempt: int
    spec_path: Path
    checkpoint_dir: Path
    control_plane_addr: str
    tracking_experiment: str
    run_id: str
    #: Allocated device ids (as the pool names them); empty for a CPU job.
    devices: tuple[str, ...] = ()
    #: This process's global rank under torchrun (``RANK``); 0 for a job run as one process. Not part of
    #: :meth:`to_env`: torchrun sets it per process.
    rank: int = 0
    #: How many ranks the attempt runs (``WORLD_SIZE``, set as ``RANK`` is); 1 for a job run as one process.
    world_size: int = 1

    @property
    def outputs_path(self) -> Path:
        """Where the job writes its outputs (``{"model": ..., "version": ...}``) before exiting 0."""
        return self.checkpoint_dir.parent / OUTPUTS_FILE

    def to_env(self) -> dict[str, str]:
        """The variables to add to the job process's environment."""
        return {
            JOB_ID: self.job_id,
            JOB_ATTEMPT: str(self.attempt),
            JOB_SPEC: str(self.spec_path),
            CHECKPOINT_DIR: str(self.checkpoint_dir),
            CONTROL_PLANE_ADDR: self.control_plane_addr,
            TRACKING_EXPERIMENT: self.tracking_experiment,
            RUN_ID: self.run_id,
            CUDA_VISIBLE_DEVICES: ",".join(self.devices),
            CUDA_DEVICE_ORDER: "PCI_BUS_ID",
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LaunchEnv:
        """Reads the launch variables (``environ`` defaults to the process environment). Raises
        ``KeyError`` naming the variable when one the executor always sets is missing, i.e. the code is
        not running as an Aether job."""
        env = os.environ if environ is None else environ
        devices = env.get(CUDA_VISIBLE_DEVICES, "")
        return cls(
            job_id=env[JOB_ID],
            attempt=_whole(JOB_ATTEMPT, env[JOB_ATTEMPT]),
            spec_path=Path(env[JOB_SPEC]),
            checkpoint_dir=Path(env[CHECKPOINT_DIR]),
            control_plane_addr=env.get(CONTROL_PLANE_ADDR, "127.0.0.1:50051"),
            tracking_experiment=env.get(TRACKING_EXPERIMENT, ""),
            run_id=env.get(RUN_ID, ""),
            devices=tuple(d for d in devices.split(",") if d),
            rank=_whole(RANK, env.get(RANK) or "0"),
            world_size=_whole(WORLD_SIZE, env.get(WORLD_SIZE) or "1"),
        )


def _whole(name: str, text: str) -> int:
    """A launch variable that is a whole number; ValueError naming it otherwise (``int`` named neither
    the variable nor what it should hold)."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{name}={text!r}: expected a whole number >= 0")
    return int(text)


def inherited(environ: Mapping[str, str], spec_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of ``environ`` (the control plane's environment) that :data:`INHERITED_ENV` lets a job
    have, less the token variables when ``spec_env`` (the job's own) sets one of them."""
    names = {entry for entry in INHERITED_ENV if not entry.endswith("*")}
    prefixes = tuple(entry[:-1] for entry in INHERITED_ENV if entry.endswith("*"))
    own = spec_env or {}
    dropped = set(_TOKEN_VARIABLES) if any(name in own for name in _TOKEN_VARIABLES) else set()
    return {
        name: value
        for name, value in environ.items()
        if (name in names or name.startswith(prefixes)) and name not in dropped
    }
