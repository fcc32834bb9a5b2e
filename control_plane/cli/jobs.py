"""``aetherctl jobs submit|list|get|logs|cancel``: training jobs from the command line, through the SDK.

``submit`` reads a spec file in YAML or JSON (field names as in ``aether.v1.JobSpec``)::

    name: churn-mlp
    entrypoint: {module: my_project.train, args: ["--epochs", "10"]}
    gpus: 1
    max_retries: 2
    timeout_s: 3600
    hyperparameters: {lr: 0.01, hidden: [64, 32]}
    features: ["customers@2:tenure", "customers@2:plan"]
    dataset: {dataset_hash: 3f2a...}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from clients.aether.v1 import jobs_pb2 as pb
from control_plane.cli import numbers, output, paging
from control_plane.cli.paths import read_text_input
from control_plane.cli.settings import actor

# Imported when a command runs, not to build the parser: the SDK and its errors import grpc.
if TYPE_CHECKING:
    import yaml

    from clients.sdk.jobs import JobsClient

_STATE_VALUES: dict[str, pb.JobState] = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "retrying": pb.JOB_STATE_RETRYING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    address = argparse.ArgumentParser(add_help=False)
    address.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    address.add_argument(
        "--timeout", type=numbers.positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common = argparse.ArgumentParser(add_help=False, parents=[address])
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    jobs = subparsers.add_parser("jobs", help="training jobs: submit, list, inspect, follow logs, cancel")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = actions.add_parser("submit", parents=[common], help="submit a job spec (YAML or JSON file)")
    submit.add_argument(
        "spec",
        metavar="SPEC",
        help="path to the spec (aether.v1.JobSpec fields; see examples/train.yaml), or - for standard input",
    )
    submit.set_defaults(handler=_handler(_submit))
    listing = actions.add_parser("list", parents=[common], help="jobs, newest first")
    listing.add_argument(
        "--state", action="append", choices=tuple(_STATE_VALUES), default=[], help="only jobs in this state"
    )
    listing.add_argument(
        "--limit", type=numbers.limit, default=50, help="at most this many jobs (default %(default)s)"
    )
    listing.set_defaults(handler=_handler(_list))
    get = actions.add_parser("get", parents=[common], help="one job with its state history")
    get.add_argument("job_id", metavar="JOB")
    get.set_defaults(handler=_handler(_get))
    # The log is the job's own bytes, printed as they come: no --json (it was accepted and ignored).
    logs = actions.add_parser(
        "logs", parents=[address], help="the job's log (stdout and stderr of every attempt)"
    )
    logs.add_argument("job_id", metavar="JOB")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing until the job ends; exit 1 when it ends FAILED or CANCELLED",
    )
    logs.add_argument(
        "--reconnect-for",
        type=numbers.positive_seconds,
        default=None,
        metavar="SECONDS",
        help="with -f, how long to keep reconnecting while the control plane cannot be reached (a restart)"
        " before giving up with UNAVAILABLE (default: 60)",
    )
    logs.set_defaults(handler=_handler(_logs))
    cancel = actions.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    cancel.add_argument("job_id", metavar="JOB")
    cancel.add_argument("--reason", default="", help="recorded with the cancellation")
    cancel.set_defaults(handler=_handler(_cancel))


def _handler(action: Callable[[JobsClient, argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        from clients.sdk.jobs import JobsClient

        with JobsClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
            return action(client, args, sys.stdout)

    return handle


def read_spec(source: str) -> dict[str, Any]:
    """The spec mapping from a YAML or JSON file (JSON is YAML), or from standard input for ``-``."""
    import yaml

    from clients.errors import InvalidArgument

    text = read_text_input(source, "spec")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument(_yaml_problem("<stdin>" if source == "-" else source, exc)) from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"spec {source!r} must be a mapping of JobSpec fields")
    return data


def _yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    """FILE:LINE:COLUMN: problem, on one line (as ``features apply`` reports YAML errors): PyYAML's own
    message spans several lines with an excerpt of the file."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = exc.problem or exc.context or "syntax error"
    else:
        where, problem = source, str(exc)
    return f"{where}: invalid YAML or JSON: {' '.join(problem.split())}"


def _submit(client: JobsClient, args: argparse.Namespace, out: TextIO) -> int:
    from clients.sdk.jobs import state_name

    job = client.submit(read_spec(args.spec))
    if args.json:
        output.print_json(_jsonable(job), out)
    else:
        print(f"submitted job {job.job_id} ({job.spec.name}): {state_name(job.state)}", file=out)
        if job.state == pb.JOB_STATE_FAILED:
            print(f"  reason: {job.reason}", file=out)
    return 0


def _list(client: JobsClient, args: argparse.Namespace, out: TextIO) -> int:
    states = [_STATE_VALUES[state] for state in args.state]
    jobs, more = paging.up_to(args.limit, lambda size, token: client.list_page(states, size, token))
    _print_jobs(jobs, args.json, out)
    if more:
        paging.say_more(
            f"more jobs exist: these are the newest {len(jobs)} (--limit); raise --limit for older ones, or"
            " choose with --state"
        )
    return 0


def _print_jobs(jobs: list[pb.Job], as_json: bool, out: TextIO) -> None:
    from clients.sdk.jobs import state_name

    if as_json:
        output.print_json([_jsonable(job) for job in jobs], out)
        return
    rows = [
        (
            job.job_id,
            job.spec.name,
            state_name(job.state),
            job.attempt,
            job.spec.gpus,
            ",".join(job.devices) or "-",
            output.timestamp(job.submitted_at_us),
            job.reason,
        )
        for job in jobs
    ]
    print(
        output.table(("JOB", "NAME", "STATE", "ATTEMPT", "GPUS", "DEVICES", "SUBMITTED", "REASON"), rows),
        file=out,
    )


def _get(client: JobsClient, args: argparse.Namespace, out: TextIO) -> int:
    from clients.sdk.jobs import exit_code_text, state_name

    job = client.get(args.job_id)
    if args.json:
        output.print_json(_jsonable(job), out)
        return 0
    entry = job.spec.entrypoint
    target = f"-m {entry.module}" if entry.module else " ".join(entry.command)
    print(f"job {job.job_id} ({job.spec.name}) {state_name(job.state)}: {job.reason}", file=out)
    print(f"  entrypoint: {' '.join([target, *entry.args])}", file=out)
    print(
        f"  gpus: {job.spec.gpus}  devices: {','.join(job.devices) or '-'}  attempt: {job.attempt}", file=out
    )
    print(f"  submitted {output.timestamp(job.submitted_at_us)} by {job.submitted_by}", file=out)
    print(f"  run: {job.run_id or '-'}  log: {job.log_path}  exit code: {exit_code_text(job)}", file=out)
    if job.outputs.fields:
        outputs = json.dumps(output.to_jsonable(job)["outputs"], sort_keys=True)
        print(f"  outputs: {outputs}", file=out)
    rows = [(output.timestamp(t.at_us), state_name(t.state), t.attempt, t.reason) for t in job.history]
    print(output.table(("AT", "STATE", "ATTEMPT", "REASON"), rows), file=out)
    return 0


def _jsonable(job: pb.Job) -> dict[str, Any]:
    """The job as JSON with every field present: ``exit_code`` is null when it is unknown (no attempt
    finished, or the last ended without a status), as the JSON mapping leaves an unset field out."""
    from clients.sdk.jobs import exit_code

    return {**output.to_jsonable(job), "exit_code": exit_code(job)}


#: States a followed job may end in that make ``jobs logs -f`` exit 1.
_UNSUCCESSFUL = (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def _logs(client: JobsClient, args: argparse.Namespace, out: TextIO) -> int:
    from clients.sdk.jobs import RECONNECT_FOR_S

    stream = out.buffer if hasattr(out, "buffer") else None
    reconnect_for = RECONNECT_FOR_S if args.reconnect_for is None else args.reconnect_for
    # Following survives a restart of the control plane (the SDK reconnects from the byte it had reached):
    # it exited 1 at the first UNAVAILABLE, for a job the next control plane re-adopted and saw succeed.
    for chunk in client.logs(args.job_id, follow=args.follow, reconnect_for=reconnect_for):
        if stream is not None:
            stream.write(chunk)
            stream.flush()
        else:
            out.write(chunk.decode("utf-8", errors="replace"))
    return _followed_job_status(client, args, reconnect_for) if args.follow else 0


def _followed_job_status(client: JobsClient, args: argparse.Namespace, reconnect_for: float) -> int:
    """1 when the followed job ended FAILED or CANCELLED, else 0: ``jobs submit ... && jobs logs -f``
    (as the README chains them) went on as if a failed job had succeeded. Read through ``wait``, which
    reconnects as the log's follow does (the job has ended: it returns at once)."""
    from clients.sdk.jobs import state_name

    job = client.wait(args.job_id, reconnect_for=reconnect_for)
    if job.state not in _UNSUCCESSFUL:
        return 0
    print(f"error: job {job.job_id} {state_name(job.state)}: {job.reason}", file=sys.stderr)
    return 1


def _cancel(client: JobsClient, args: argparse.Namespace, out: TextIO) -> int:
    from clients.sdk.jobs import state_name

    job = client.cancel(args.job_id, args.reason)
    if args.json:
        output.print_json(_jsonable(job), out)
    elif job.state == pb.JOB_STATE_CANCELLED:
        print(f"cancelled job {job.job_id}", file=out)
    else:
        print(
            f"stopping job {job.job_id} ({state_name(job.state)}); it is CANCELLED once it has stopped",
            file=out,
        )
    return 0
