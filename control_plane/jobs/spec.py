"""A job spec as submitted: validation of its shape, its JSON form (the file behind ``AETHER_JOB_SPEC``)
and the submission-time check that its entrypoint exists.

Checks that need other state (feature refs against the registry, a dataset hash against the offline
store, the GPU count against the pool) live in ``service.py``; this module looks at the spec alone.
"""

from __future__ import annotations

import importlib.machinery
import math
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import json_format, struct_pb2

from clients.aether.v1 import jobs_pb2 as pb
from clients.errors import InvalidArgument
from clients.sdk.jobs import job_spec
from clients.tracking_rules import check_name
from control_plane.training.spec import Hyperparameters, hyperparameter_text, keep_last_checkpoints
from control_plane.training.trainer.config import TrainerConfig

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_GPUS = 1024
#: Retries a job may ask for. The proto field is a uint32, the column a signed 32-bit integer: a larger
#: value was stored on SQLite and failed INTERNAL on PostgreSQL. A thousand attempts is far past any
#: job worth retrying, and the attempt counter (max_retries + 1) stays inside the column.
MAX_RETRIES = 1000
#: The longest timeout a job may ask for: one year. The supervisor works in integer microseconds
#: (start + timeout + kill grace for the scheduler's bounds): a timeout of 1e303 s was accepted and its
#: conversion overflowed on every tick, so no job at all was scheduled again. No attempt runs for a year.
MAX_TIMEOUT_S = 365 * 24 * 3600
#: CPUs a job may record for executors that reserve them (a container executor hands them on as
#: millicores): far past any machine, and no float nonsense (1e300) reaches an executor.
MAX_CPUS = 100_000
#: Memory a job may record, in MB: the most whose size in bytes fits a signed 64-bit integer, which is how
#: container runtimes and cgroups take it (the proto field, a uint64, goes twice as far).
MAX_MEMORY_MB = (2**63 - 1) // 2**20
#: The built-in trainer's module. With more than one GPU the executor starts it through torchrun, one
#: process per GPU, and it trains data-parallel (``control_plane.training.distributed``).
BUILT_IN_TRAINER = "control_plane.training.trainer"


def validate(spec: pb.JobSpec) -> pb.JobSpec:
    """A copy of ``spec`` with defaults filled in (experiment = name), or INVALID_ARGUMENT naming the
    first problem."""
    if not NAME_PATTERN.fullmatch(spec.name):
        raise InvalidArgument(
            f"job name {spec.name!r} must be 1-128 of lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    entry = spec.entrypoint
    if bool(entry.module) == bool(entry.command):
        raise InvalidArgument("the entrypoint needs exactly one of 'module' and 'command'")
    if entry.module and not all(part.isidentifier() for part in entry.module.split(".")):
        raise InvalidArgument(f"entrypoint module {entry.module!r} is not a dotted Python module name")
    if entry.command and not entry.command[0]:
        raise InvalidArgument("the entrypoint command's program is empty")
    if spec.gpus > MAX_GPUS:
        raise InvalidArgument(f"gpus {spec.gpus} exceeds {MAX_GPUS}")
    if spec.max_retries > MAX_RETRIES:
        raise InvalidArgument(f"max_retries {spec.max_retries} exceeds {MAX_RETRIES}")
    problem = timeout_problem(spec.timeout_s)
    if problem is not None:
        raise InvalidArgument(problem)
    if not (math.isfinite(spec.cpus) and 0 <= spec.cpus <= MAX_CPUS):
        raise InvalidArgument(f"cpus must be a number from 0 to {MAX_CPUS}, got {spec.cpus}")
    if spec.memory_mb > MAX_MEMORY_MB:
        raise InvalidArgument(f"memory_mb {spec.memory_mb} exceeds {MAX_MEMORY_MB}")
    for key, value in spec.env.items():
        if not _ENV_NAME.fullmatch(key):
            raise InvalidArgument(f"environment variable name {key!r} is not valid")
        _refuse_nul(f"env[{key!r}]", value)
    # An argument or environment value with a NUL byte cannot reach a process (execve ends strings
    # there): accepted, every attempt failed to start and the job ended as "lost", its cause in no log.
    for index, part in enumerate(entry.command):
        _refuse_nul(f"entrypoint command[{index}]", part)
    for index, arg in enumerate(entry.args):
        _refuse_nul(f"entrypoint args[{index}]", arg)
    # The job reads its hyperparameters as text (the training SDK, tracking params, model versions):
    # one that has no text form (an object, null, NaN or an infinity: JSON has none) is refused here,
    # not on every attempt at run time.
    for key, number in spec.hyperparameters.fields.items():
        _refuse_non_finite(f"hyperparameter {key!r}", number)
    texts = {
        key: hyperparameter_text(key, value)
        for key, value in json_format.MessageToDict(spec.hyperparameters).items()
    }
    if entry.module == BUILT_IN_TRAINER:
        # The built-in trainer's settings are known here: a bad one (a negative seed, epochs 0) is refused
        # at submission, as the trainer would read it, not with the same error on every attempt.
        TrainerConfig.from_hyperparameters(Hyperparameters(texts), job_name=spec.name)
        Hyperparameters(texts).flag("log_every_batch", False)
    # The training SDK of every job (the built-in trainer or not) reads this one when it starts: a value
    # it refuses would fail each attempt the same way.
    keep_last_checkpoints(Hyperparameters(texts))
    source = spec.dataset.WhichOneof("source")
    if entry.module == BUILT_IN_TRAINER and source is None:
        # The trainer loads its training set first thing: accepted, every attempt failed on the same
        # missing dataset, spending the job's GPUs and retries on a spec that can never train.
        raise InvalidArgument(
            f"the built-in trainer ({BUILT_IN_TRAINER}) needs a dataset: set dataset.point_in_time"
            " (entity_rows_path and features) or dataset.dataset_hash"
        )
    if source == "dataset_hash" and not re.fullmatch(r"[0-9a-f]{64}", spec.dataset.dataset_hash):
        raise InvalidArgument(f"dataset hash {spec.dataset.dataset_hash!r} is not 64 lowercase hex digits")
    if source == "point_in_time":
        query = spec.dataset.point_in_time
        if not query.entity_rows_path or not query.features:
            raise InvalidArgument("a point-in-time dataset needs entity_rows_path and features")
    normalized = pb.JobSpec()
    normalized.CopyFrom(spec)
    if not normalized.experiment:
        normalized.experiment = spec.name
    # Every attempt logs into this experiment (created by the control plane, passed to the job in its
    # environment): a name tracking refuses, or one with a NUL no environment variable can hold, was
    # accepted here and then failed each attempt, spending its GPUs and retries on the same error.
    check_name(normalized.experiment, "experiment")
    _refuse_nul("experiment name", normalized.experiment)
    return normalized


def timeout_problem(timeout_s: float) -> str | None:
    """Why ``timeout_s`` is not a timeout a job may have (naming the field and the bound), else None. The
    supervisor asks it too, of jobs stored before the bound existed."""
    if not (math.isfinite(timeout_s) and 0 <= timeout_s <= MAX_TIMEOUT_S):
        return (
            f"timeout_s must be a number of seconds from 0 (no timeout) to {MAX_TIMEOUT_S} (one year), "
            f"got {timeout_s}"
        )
    return None


def _refuse_nul(what: str, text: str) -> None:
    if "\x00" in text:
        raise InvalidArgument(f"{what} contains a NUL byte, which no process argument or variable can hold")


def _refuse_non_finite(what: str, value: struct_pb2.Value) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value" and not math.isfinite(value.number_value):
        raise InvalidArgument(f"{what} is {value.number_value}: give a finite number")
    if kind == "list_value":
        for item in value.list_value.values:
            _refuse_non_finite(what, item)


def spec_from_mapping(data: Mapping[str, object]) -> pb.JobSpec:
    """A spec from its JSON/YAML form (field names as in the .proto); INVALID_ARGUMENT for unknown or
    mistyped fields, as the SDK parses it (:func:`clients.sdk.jobs.job_spec`)."""
    return job_spec(data)


def spec_to_json(spec: pb.JobSpec) -> str:
    """The spec file the job reads through ``AETHER_JOB_SPEC``: every field present (defaults included),
    names as in the .proto, hyperparameters as plain JSON values."""
    return json_format.MessageToJson(
        spec, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=2
    )


def entrypoint_problem(spec: pb.JobSpec, cwd: Path | None = None) -> str | None:
    """Why the entrypoint cannot start, as far as the control plane can tell without starting it, else
    None. A module is looked up (its top-level package, without importing anything) on the job's
    ``PYTHONPATH``, its working folder and the control plane's ``sys.path``; a command on the job's
    ``PATH``. The launcher checks again in the job's real environment."""
    entry = spec.entrypoint
    if entry.module:
        top = entry.module.split(".")[0]
        extra = [p for p in spec.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        search = [*extra, str(cwd or Path.cwd()), *sys.path]
        if top in sys.builtin_module_names:
            return None
        if importlib.machinery.PathFinder.find_spec(top, search) is None:
            return f"entrypoint module {entry.module!r} not found (no {top!r} on the Python path)"
        return None
    program = entry.command[0]
    search_path = spec.env.get("PATH") or os.environ.get("PATH", os.defpath)
    if os.sep in program:
        path = Path(program) if Path(program).is_absolute() else (cwd or Path.cwd()) / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"entrypoint command {program!r} not found or not executable"
        return None
    if shutil.which(program, path=search_path) is None:
        return f"entrypoint command {program!r} not found on PATH"
    return None
