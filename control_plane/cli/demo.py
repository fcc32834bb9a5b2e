"""``aetherctl demo``: the end-to-end scenario on embedded defaults (see control_plane/demo/scenario.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from control_plane.cli import output
from control_plane.demo.scenario import SIZES, report_rows, run_demo


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="run the end-to-end scenario on a local stack it starts and stops itself"
    )
    demo.add_argument("--size", choices=sorted(SIZES), default="small", help="scenario size (default: small)")
    demo.add_argument(
        "--home",
        type=Path,
        default=None,
        help="state folder to keep for inspection (default: a scratch folder)",
    )
    demo.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = run_demo(args.size, args.home, lambda line: print(line, flush=True))
    print()
    print(output.table(("RESULT", "VALUE"), report_rows(report)))
    return 0 if report.mismatches == 0 else 1
