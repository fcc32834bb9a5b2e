"""The import rules of docs/architecture.md, checked over every module's source: ``kernels`` imports
nothing of ours; ``data_plane`` and ``control_plane`` import ``kernels`` and ``clients`` and never each
other; ``clients`` imports nothing of ours but itself, and of third parties only what the rules name (some
only in the modules they name). Nothing else checks them, and one import across the line (a helper
reused from the other plane) makes a plane deploy with the other's dependencies."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("kernels", "data_plane", "control_plane", "clients")
MAY_IMPORT = {
    "kernels": set(),
    "data_plane": {"kernels", "clients"},
    "control_plane": {"kernels", "clients"},
    "clients": set(),
}
# Third parties ``clients`` may import, and where (None: in any module).
CLIENTS_THIRD_PARTY: dict[str, tuple[str, ...] | None] = {
    "google": None,  # protobuf
    "grpc": None,
    "grpc_health": None,
    "grpc_reflection": None,
    "numpy": None,
    "pyarrow": ("clients/sdk/offline.py", "clients/sdk/ingestion.py", "clients/ipc_budget.py"),
    "pynvml": ("clients/sdk/system_metrics.py",),
}


def _imports(path: Path) -> list[str]:
    """Top-level package of every absolute import in the module, at any depth (in functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", OURS)
def test_a_package_imports_only_the_packages_of_ours_its_rule_allows(package: str) -> None:
    crossing = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in _imports(path)
        if name in OURS and name != package and name not in MAY_IMPORT[package]
    ]
    assert not crossing, crossing


def test_clients_imports_only_the_third_parties_its_rule_names() -> None:
    stdlib = sys.stdlib_module_names | {"__future__"}
    outside = []
    for path in _modules("clients"):
        where = str(path.relative_to(ROOT))
        for name in _imports(path):
            if name in stdlib or name == "clients":
                continue
            allowed = CLIENTS_THIRD_PARTY.get(name, ())
            if allowed is not None and where not in allowed:
                outside.append(f"{where} imports {name}")
    assert not outside, outside


def test_the_rules_see_a_crossing_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    source = "def f():\n    from data_plane.x import y\n    import control_plane.z\n"
    module.write_text(source, encoding="utf-8")
    assert _imports(module) == ["data_plane", "control_plane"]
