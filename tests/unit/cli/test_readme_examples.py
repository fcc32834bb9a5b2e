"""The README's "Using it" commands agree with the example files they act on."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from control_plane.jobs.spec import spec_from_mapping, validate

REPO_ROOT = Path(__file__).resolve().parents[3]


def readme_argument(command: str) -> str:
    """The first argument after ``aetherctl COMMAND`` in the README's first such line."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"^aetherctl {command} (\S+)", readme, flags=re.MULTILINE)
    assert found, f"README has no `aetherctl {command}` line"
    return found.group(1)


def test_runs_compare_in_the_readme_names_the_experiment_of_the_example_training_job() -> None:
    # The runs of `jobs submit examples/train.yaml` land in the spec's experiment (default: the job
    # name), so the README's `runs compare EXPERIMENT` right after it must name that one.
    data = yaml.safe_load((REPO_ROOT / "examples" / "train.yaml").read_text(encoding="utf-8"))
    example = validate(spec_from_mapping(data))
    assert readme_argument("runs compare") == example.experiment
    assert readme_argument("models versions") == example.hyperparameters["model_name"]
