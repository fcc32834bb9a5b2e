"""A job entrypoint for tests: ``python -m tests.integration.jobs.programs.job [options]``.

Appends ``attempt pid start_ns end_ns`` to ``--starts`` when it ends normally (so a test can tell that
attempts never overlapped), dumps the launch environment to ``--env-dump``, can sleep, ignore SIGTERM,
fail its first attempts, write outputs.json next to its checkpoint folder, and leave a child running
that ignores SIGTERM (``--leave-child PIDFILE``), or a daemon (``--daemon PIDFILE``: a double fork and
``setsid``, out of the attempt's process group and session, ignoring SIGTERM)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument(
        "--until-file", type=Path, help="after --sleep, also wait (at most 60 s) until this file exists"
    )
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--fail-attempts", type=int, default=0, help="exit 3 on attempts up to this one")
    parser.add_argument("--starts", type=Path)
    parser.add_argument("--env-dump", type=Path)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--term-exit-after", type=float, help="on SIGTERM, exit 143 after this many seconds")
    parser.add_argument("--outputs", default="")
    parser.add_argument("--leave-child", type=Path, help="start a child ignoring SIGTERM; write its pid here")
    parser.add_argument("--daemon", type=Path, help="start a daemon ignoring SIGTERM; write its pid here")
    args = parser.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
    if args.term_exit_after is not None:
        delay = args.term_exit_after

        def shut_down(*_: object) -> None:  # a graceful shutdown that takes a while
            print("shutting down after SIGTERM", flush=True)
            time.sleep(delay)
            sys.exit(143)

        signal.signal(signal.SIGTERM, shut_down)
    attempt = int(os.environ["AETHER_JOB_ATTEMPT"])
    started = time.time_ns()
    print(f"job {os.environ['AETHER_JOB_ID']} attempt {attempt} pid {os.getpid()} starting", flush=True)
    if args.env_dump:
        names = [n for n in os.environ if n.startswith("AETHER_") or n == "CUDA_VISIBLE_DEVICES"]
        path = args.env_dump.with_name(f"{args.env_dump.name}.{attempt}")
        path.write_text(json.dumps({n: os.environ[n] for n in names}))
    if args.leave_child:
        child = subprocess.Popen(["bash", "-c", 'trap "" TERM; exec sleep 60'])
        args.leave_child.write_text(str(child.pid))
    if args.daemon:
        start_daemon(args.daemon)
    deadline = time.monotonic() + args.sleep
    while time.monotonic() < deadline:
        time.sleep(0.05)
    if args.until_file:
        deadline = time.monotonic() + 60
        while not args.until_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    if args.starts:
        with open(args.starts, "a") as starts:
            starts.write(
                f"{attempt} {os.getpid()} {started} {time.time_ns()} {os.environ['AETHER_JOB_ID']}\n"
            )
    if attempt <= args.fail_attempts:
        print(f"failing attempt {attempt} on purpose", file=sys.stderr, flush=True)
        return 3
    if args.outputs:
        outputs = Path(os.environ["AETHER_CHECKPOINT_DIR"]).parent / "outputs.json"
        outputs.write_text(args.outputs)
    print("done", flush=True)
    return int(args.exit)


def start_daemon(pid_file: Path) -> None:
    """Double fork: the middle process leaves the session (``setsid``) and exits, so the daemon is no
    child of the job, nor in its process group; returns once the daemon has written its pid."""
    middle = os.fork()
    if middle == 0:  # pragma: no cover - the forked processes
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            temp = pid_file.with_name(f".{pid_file.name}.tmp")
            temp.write_text(str(os.getpid()))
            temp.rename(pid_file)
            time.sleep(60)
        os._exit(0)
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
