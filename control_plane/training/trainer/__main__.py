"""``python -m control_plane.training.trainer``: run the built-in trainer as the current job.

Exit code 0 when the model was trained (and registered); any error exits non-zero with its traceback in
the job's log, and the executor restarts the job from its last checkpoint while retries remain.
"""

from __future__ import annotations

import sys

from control_plane.training.context import TrainingContext
from control_plane.training.trainer.job import run_job


def main() -> int:
    with TrainingContext.from_env() as ctx:
        run_job(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
