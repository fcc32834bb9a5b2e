"""A job that reports who it runs as and what it can reach, for the job-user tests:
``python -m tests.integration.jobs.programs.job_user_probe --try NAME=PATH ...``.

Through the training SDK (with the job's own token when auth is on) it logs a metric, saves a
checkpoint and writes its outputs: ``uid``, ``gid``, ``groups`` and, for each ``--try`` path, the name
of the error opening it raised (``PermissionError``) or ``"read"`` (a folder is listed, a file read)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from control_plane.training.checkpoint import TrainingState
from control_plane.training.context import TrainingContext


def attempt(path: Path) -> str:
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            path.read_bytes()
    except OSError as exc:
        return type(exc).__name__
    return "read"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--try", dest="paths", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args()
    tried = {name: attempt(Path(path)) for name, _, path in (entry.partition("=") for entry in args.paths)}
    with TrainingContext.from_env() as ctx:
        ctx.log_metrics(1, loss=0.25)
        checkpoint = ctx.checkpoint(TrainingState(model=torch.nn.Linear(1, 1), epoch=1))
        ctx.write_outputs(
            {
                "uid": os.getuid(),
                "gid": os.getgid(),
                "groups": os.getgroups(),
                "home": os.environ.get("HOME", ""),
                "checkpoint": str(checkpoint),
                "tried": tried,
            }
        )


if __name__ == "__main__":
    main()
