"""``aetherctl demo``: the end-to-end scenario on embedded defaults (see control_plane/demo/scenario.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from control_plane.cli import output
from control_plane.cli.errors import UsageError
from control_plane.demo.sizes import SIZES


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="run the end-to-end scenario on a local stack it starts and stops itself"
    )
    demo.add_argument("--size", choices=sorted(SIZES), default="small", help="scenario size (default: small)")
    demo.add_argument(
        "--home",
        type=Path,
        default=None,
        help="a new or empty folder to keep the state in for inspection with aetherctl (default: a scratch"
        " folder)",
    )
    demo.add_argument(
        "--fail-gates",
        action="store_true",
        help="give the retrained challenger an impossible latency budget: it must be rejected",
    )
    demo.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported for this command only: the scenario pulls in monitoring, retraining and training (scipy
    # and more), and imported at the top it made every aetherctl command start about a second slower.
    from control_plane.demo.scenario import DemoOptions, run_demo
    from control_plane.demo.train import JOB

    if args.home is not None:
        refuse_used_home(args.home)
    options = DemoOptions(size=args.size, home=args.home, fail_gates=args.fail_gates)
    report = run_demo(options, lambda line: print(line, flush=True))
    print()
    print(output.table(("RESULT", "VALUE"), report.rows))
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"problem: {problem}")
    if args.home is not None:
        # Everything the demo made is in the home's SQLite file and folders (Redis's data included): a
        # stack started on that home serves it again.
        home = report.settings.home
        print(f"\ninspect it: export AETHER_HOME={home}; aetherctl dev up; aetherctl models list")
        print(
            f"  then: aetherctl runs compare {JOB} --metrics test_rmse | lineage zone-demand 2 | audit list"
            " | drift report zone-demand"
        )
    return 1 if report.problems else 0


def refuse_used_home(home: Path) -> None:
    """A ``--home`` that holds anything is refused before anything starts. A folder a demo ran in before
    mixed two runs: the stream counts summed both, the champion alias moved, then the deployment failed
    with ALREADY_EXISTS, leaving the alias on a version that was not serving."""
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise UsageError(
            f"--home {home}: not an empty folder (a demo ran there before?); give an empty or new one"
        )
