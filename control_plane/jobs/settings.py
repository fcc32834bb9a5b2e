"""Settings of the jobs service and its supervisor, read once from ``AETHER_*`` variables.

* ``AETHER_JOBS_DIR``: where each job's folder (spec, log, checkpoints, exit records) lives; default
  ``$AETHER_HOME/jobs``.
* ``AETHER_JOBS_POLICY``: ``strict`` (default) or ``backfill`` (see ``scheduler.py`` for the trade-off).
* ``AETHER_JOBS_TICK_S``: how often the supervisor looks at its jobs when nothing wakes it (default 0.5).
* ``AETHER_JOBS_KILL_GRACE_S``: seconds between SIGTERM and SIGKILL on cancel or timeout (default 10).
* ``AETHER_GPUS``: the device pool (see ``pool.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clients.env_values import env_float
from clients.errors import InvalidArgument
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.scheduler import Policy


@dataclass(frozen=True)
class JobsSettings:
    folder: Path
    pool: DevicePool = field(default_factory=lambda: DevicePool((), "none"))
    policy: Policy = Policy.STRICT
    tick_s: float = 0.5
    kill_grace_s: float = 10.0
    #: How often the supervisor looks for runs of ended jobs left RUNNING (besides at start and after a
    #: failure of its own): another process's end of a job (a cancel through the API, another control
    #: plane) may have failed to end the job's run.
    run_sweep_s: float = 30.0
    #: Jobs behind a blocked head examined per step in backfill mode.
    backfill_depth: int = 64
    #: The address jobs get as AETHER_CONTROL_PLANE_ADDR; None = the control plane's own.
    control_plane_addr: str | None = None
    #: The working folder of job processes; None = the control plane's.
    job_cwd: Path | None = None

    @classmethod
    def from_env(cls, home: Path, environ: Mapping[str, str] | None = None) -> JobsSettings:
        env = os.environ if environ is None else environ
        policy_text = env.get("AETHER_JOBS_POLICY") or Policy.STRICT.value
        try:
            policy = Policy(policy_text)
        except ValueError:
            raise InvalidArgument(
                f"AETHER_JOBS_POLICY={policy_text!r}: expected strict or backfill"
            ) from None
        return cls(
            folder=Path(env.get("AETHER_JOBS_DIR") or home / "jobs").expanduser(),
            pool=DevicePool.detect(env),
            policy=policy,
            tick_s=env_float(env, "AETHER_JOBS_TICK_S", 0.5, above=0.0),
            kill_grace_s=env_float(env, "AETHER_JOBS_KILL_GRACE_S", 10.0, minimum=0.0),
            run_sweep_s=env_float(env, "AETHER_JOBS_RUN_SWEEP_S", 30.0, above=0.0),
        )
