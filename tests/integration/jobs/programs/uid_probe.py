"""A job for the uid-range tests (``AETHER_JOB_UID_RANGE``): ``python -m
tests.integration.jobs.programs.uid_probe [--peers FILE]``.

Prints ``probe up``; with ``--peers`` it then waits (at most 120 s) for ``FILE``, a JSON object of job id
to job folder, and tries the other jobs' token files, ``work`` folders and checkpoint folders (read,
list, create a file). Standard library only (no torch: it starts fast). Writes its outputs (``uid``,
``gid``, ``groups``, ``home``, whether it read its own token, and for each try ``"done"`` or the name of
the error it raised) to ``outputs.json`` beside its checkpoint folder."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def attempt(path: Path, *, write: bool = False) -> str:
    try:
        if write:
            (path / "from-another-job").write_text("x")
        elif path.is_dir():
            os.listdir(path)
        else:
            path.read_bytes()
    except OSError as exc:
        return type(exc).__name__
    return "done"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=Path)
    args = parser.parse_args()
    print("probe up", flush=True)
    tried = {}
    if args.peers:
        deadline = time.monotonic() + 120
        while not args.peers.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        own = os.environ["AETHER_JOB_ID"]
        for job_id, folder in json.loads(args.peers.read_text()).items():
            if job_id != own:
                work = Path(folder) / "work"
                tried[f"{job_id} token"] = attempt(Path(folder) / "token")
                tried[f"{job_id} work"] = attempt(work)
                tried[f"{job_id} write work"] = attempt(work, write=True)
                tried[f"{job_id} checkpoints"] = attempt(work / "checkpoints")
    outputs = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "home": os.environ.get("HOME", ""),
        "own_token": attempt(Path(os.environ["AETHER_TOKEN_FILE"])),
        "tried": tried,
    }
    outputs_file = Path(os.environ["AETHER_CHECKPOINT_DIR"]).parent / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))


if __name__ == "__main__":
    main()
