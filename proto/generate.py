"""Regenerate the Python gRPC stubs in ``clients/aether/`` and ``clients/inference/`` from ``proto/``.

One command: ``python proto/generate.py`` (``--check`` exits 1 when the checked-in stubs differ from
what ``proto/`` generates; CI and ``tests/unit/test_generated_stubs.py`` run it).

protoc emits absolute imports (``from aether.v1 import types_pb2``); the stubs live inside the
``clients`` package, so those imports are rewritten to ``from clients.aether.v1 import ...``. Each
top-level folder of ``proto/`` is one generated package: ``aether`` (our contract) and ``inference`` (the
Open Inference Protocol v2, an external contract kept as upstream defines it).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGES = ("aether", "inference")
OUT_DIRS = {package: ROOT / "clients" / package for package in PACKAGES}
_IMPORT = re.compile(r"^(from|import) (aether|inference)([. ])", re.MULTILINE)


def generate(into: Path) -> None:
    """Writes every package's stubs under ``into/<package>/``."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    staging = into / "_staging"
    staging.mkdir(parents=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={staging}",
        f"--pyi_out={staging}",
        f"--grpc_python_out={staging}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in sorted(staging.rglob("*.py*")):
        text = _IMPORT.sub(lambda m: f"{m.group(1)} clients.{m.group(2)}{m.group(3)}", path.read_text())
        target = into / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    shutil.rmtree(staging)
    for package in [p for p in into.rglob("*") if p.is_dir()]:
        (package / "__init__.py").write_text(
            '"""Generated from proto/ by proto/generate.py; do not edit."""\n'
        )


def differences(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diff = sorted(str(p) for p in files_a ^ files_b)
    diff += sorted(str(p) for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False))
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated stubs are out of date")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            stale: list[str] = []
            for package, out_dir in OUT_DIRS.items():
                if out_dir.exists():
                    stale += [f"{package}/{p}" for p in differences(fresh / package, out_dir)]
                else:
                    stale.append(f"clients/{package} missing")
            if stale:
                print("generated stubs are out of date with proto/:", *stale, sep="\n  ")
                print("run: python proto/generate.py")
                return 1
            print("generated stubs are current")
            return 0
        for package, out_dir in OUT_DIRS.items():
            if out_dir.exists():
                shutil.rmtree(out_dir)
            shutil.copytree(fresh / package, out_dir)
            print(f"wrote {out_dir.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
