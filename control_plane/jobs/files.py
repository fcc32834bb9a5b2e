"""Where one job's files live: one folder per job, shared by its attempts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from clients.files import make_private, open_private, replace_when_done


@dataclass(frozen=True)
class JobFiles:
    folder: Path

    @property
    def spec(self) -> Path:
        """The spec as JSON (``AETHER_JOB_SPEC``)."""
        return self.folder / "spec.json"

    @property
    def log(self) -> Path:
        """stdout and stderr of every attempt, with the supervisor's ``[aether]`` markers between them."""
        return self.folder / "job.log"

    @property
    def checkpoints(self) -> Path:
        """``AETHER_CHECKPOINT_DIR``: the same for every attempt. ``outputs.json`` goes next to it."""
        return self.folder / "checkpoints"

    def pid_file(self, attempt: int) -> Path:
        """Claimed by the launcher before it starts the attempt (``{"pid": N, "start_ticks": N}``), or by
        a control plane that gave the attempt up first: see ``identity.py``."""
        return self.folder / f"attempt-{attempt}.pid.json"

    def exit_file(self, attempt: int) -> Path:
        """Written by the launcher when the attempt's process ends: ``{"code": N, "detail": ...,
        "launch_failed": bool}`` (without ``launch_failed`` from launchers older than the flag: see
        ``executor.read_exit_file``)."""
        return self.folder / f"attempt-{attempt}.exit.json"

    @property
    def run_file(self) -> Path:
        """The id of the job's tracking run, reserved before the run is created (``{"run_id": ...}``), so
        that a start that dies after creating the run and before recording it leaves the same run to the
        next start: see ``runs.py``."""
        return self.folder / "run.json"

    @property
    def token(self) -> Path:
        """The job's own token (``AETHER_TOKEN_FILE``, see ``control_plane.api.job_tokens``), 0600."""
        return self.folder / "token"

    def write_token(self, token: str) -> Path:
        """Writes the job's token into :attr:`token` (created 0600) and returns its path."""
        descriptor = open_private(self.token, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(token)
        return self.token

    def make_private(self) -> bool:
        """Takes group and other permissions off the folder, spec and log of a job submitted before they
        were created private (``clients.files.make_private``); whether anything changed. Aether made them,
        so their mode is not a choice of the user's."""
        changed = [make_private(path) for path in (self.folder, self.spec, self.log, self.token)]
        return any(changed)

    def write_spec(self, spec_json: str) -> None:
        """Replaces ``spec.json`` whole (temporary file, fsync, rename): a reader finds the previous file or
        the new one, never a part. An ``OSError`` saying which file could not be written."""
        try:
            with replace_when_done(self.spec) as file:
                file.write(spec_json.encode("utf-8"))
        except OSError as exc:
            raise OSError(f"cannot write the job's spec file {self.spec}: {exc.strerror or exc}") from exc

    def open_log(self) -> BinaryIO:
        """The log, opened to append, created 0600 when missing: it holds whatever the job printed."""
        return os.fdopen(open_private(self.log), "ab")

    def append_log(self, line: str) -> None:
        with self.open_log() as log:
            log.write(f"[aether] {line}\n".encode())
