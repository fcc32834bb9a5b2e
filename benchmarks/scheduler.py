"""Scheduling decisions per second of the pure GPU scheduler (``control_plane.jobs.scheduler``) with
10,000 queued jobs over 64 logical GPUs.

One command: ``python -m benchmarks.scheduler`` (writes ``benchmarks/results/scheduler.json``).

Steady state: the pool starts full and 10,000 jobs wait (1-8 GPUs each, seeded). Each step the running
job that ends first finishes (simulated time jumps to its end), one new job is submitted to the tail so
that the queue stays at 10,000, and :func:`schedule` is called on the whole queue. A decision is one job
started (or rejected). Timed: the ``schedule`` calls alone (the headline), and the whole loop with the
simulation's bookkeeping. Both policies: strict FIFO, and backfill (which also examines up to 64 jobs
behind a blocked head, so its steps cost more).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from benchmarks._common import environment, percentiles_ms, write_results
from control_plane.jobs.scheduler import Policy, QueuedJob, RunningJob, Start, schedule

GPU_CHOICES = (1, 1, 1, 1, 2, 2, 4, 8)
TARGET_DECISIONS_PER_S = 10_000


def _new_job(index: int, rng: random.Random) -> QueuedJob:
    return QueuedJob(f"job-{index}", rng.choice(GPU_CHOICES), rng.randint(60, 3600) * 1_000_000)


def run(policy: Policy, queued: int, gpus: int, steps: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    pool = tuple(f"gpu{i}" for i in range(gpus))
    free = list(pool)
    # OrderedDict: O(1) removal anywhere, and iteration from the head never walks over removed entries.
    queue: OrderedDict[str, QueuedJob] = OrderedDict()
    submitted = 0
    for _ in range(queued):
        job = _new_job(submitted, rng)
        queue[job.job_id] = job
        submitted += 1
    running: dict[str, RunningJob] = {}
    ends: list[tuple[int, str]] = []  # (actual end, job id): a heap
    now = 0
    decisions_made = 0
    schedule_s = 0.0
    step_s: list[float] = []
    loop_start = time.perf_counter()
    for step in range(steps + 1):
        if step:  # the earliest-ending job finishes; one new job joins the tail
            now, job_id = heapq.heappop(ends)
            free.extend(running.pop(job_id).devices)
            job = _new_job(submitted, rng)
            queue[job.job_id] = job
            submitted += 1
        begin = time.perf_counter()
        decisions = schedule(
            iter(queue.values()), free, gpus, policy=policy, running=list(running.values()), now_us=now
        )
        elapsed = time.perf_counter() - begin
        schedule_s += elapsed
        step_s.append(elapsed)
        decisions_made += len(decisions)
        for decision in decisions:
            job = queue.pop(decision.job_id)
            if isinstance(decision, Start):
                held = set(decision.devices)
                free = [device for device in free if device not in held]
                max_runtime = job.max_runtime_us or 0
                running[job.job_id] = RunningJob(job.job_id, decision.devices, now + max_runtime)
                heapq.heappush(ends, (now + rng.randint(1, max_runtime), job.job_id))
        assert len(queue) >= queued - gpus, "the queue must stay (about) full"
    loop_s = time.perf_counter() - loop_start
    return {
        "policy": policy.value,
        "steps": steps + 1,
        "decisions": decisions_made,
        "schedule_seconds": schedule_s,
        "decisions_per_s": decisions_made / schedule_s,
        "steps_per_s": (steps + 1) / schedule_s,
        "step_latency": percentiles_ms(step_s),
        "end_to_end_decisions_per_s": decisions_made / loop_s,
        "queue_length_at_end": len(queue),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50_000, help="finish events (each followed by a step)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results)")
    args = parser.parse_args(argv)
    results = [run(policy, args.queued, args.gpus, args.steps, args.seed) for policy in Policy]
    header = (
        f"{'policy':<9} {'decisions/s':>12} {'steps/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'e2e dec/s':>10}"
    )
    print(f"{args.queued} queued jobs, {args.gpus} logical GPUs, {args.steps} finish events")
    print(header)
    for r in results:
        lat = r["step_latency"]
        print(
            f"{r['policy']:<9} {r['decisions_per_s']:>12,.0f} {r['steps_per_s']:>10,.0f} "
            f"{lat['p50_ms']:>8.4f} {lat['p99_ms']:>8.4f} {r['end_to_end_decisions_per_s']:>10,.0f}"
        )
    payload = {
        "parameters": {"queued": args.queued, "gpus": args.gpus, "steps": args.steps, "seed": args.seed},
        "target_decisions_per_s": TARGET_DECISIONS_PER_S,
        "results": results,
        "meets_target": all(r["decisions_per_s"] >= TARGET_DECISIONS_PER_S for r in results),
        **environment([]),
    }
    if args.out is not None:
        args.out.write_text(json.dumps({"benchmark": "scheduler", **payload}, indent=2) + "\n")
        print(f"wrote {args.out}")
    else:
        print(f"wrote {write_results('scheduler', payload)}")
    return 0 if payload["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
