"""``aetherctl models alias`` against a real control plane: ``--delete`` asks before it removes an alias,
as every other destructive command does (it removed it at once, where ``models delete`` asked), and the
command line's own mistakes are usage errors (exit 2) before any call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.sdk.models import ModelRegistryClient
from control_plane.cli.main import main
from tests.integration.model_registry.conftest import Plane
from tests.support.terminal import aetherctl_at_a_terminal, aetherctl_interrupted_at_its_question

Capture = pytest.CaptureFixture[str]


def aetherctl(capsys: Capture, plane: Plane, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--control-plane", plane.address, "--timeout", "20", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def champion(models: ModelRegistryClient, tmp_path: Path) -> str:
    """Model ``eta`` with versions 1 and 2, alias ``champion`` on version 2."""
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    models.register_version("eta", artifact)
    models.register_version("eta", artifact)
    models.set_alias("eta", "champion", 2)
    return "champion"


def aliases(models: ModelRegistryClient) -> dict[str, int]:
    [model] = [model for model in models.list_models() if model.name == "eta"]
    return dict(model.aliases)


def test_alias_delete_without_yes_and_no_terminal_is_refused_and_deletes_nothing(
    plane: Plane, models: ModelRegistryClient, champion: str, capsys: Capture
) -> None:
    for extra in ([], ["--json"]):
        code, out, err = aetherctl(capsys, plane, "models", "alias", "eta", champion, "--delete", *extra)
        assert (code, out) == (2, "")
        refused = "aetherctl: error: refusing to delete alias 'champion' of model 'eta' without --yes"
        assert err.startswith(refused), err
        assert "pass --yes" in err
    assert aliases(models) == {"champion": 2}

    code, out, err = aetherctl(capsys, plane, "models", "alias", "eta", champion, "--delete", "--yes")
    assert (code, out, err) == (0, "alias champion of model eta deleted\n", "")
    assert aliases(models) == {}


def test_alias_delete_asks_at_a_terminal(
    plane: Plane, models: ModelRegistryClient, champion: str, tmp_path: Path
) -> None:
    argv = ("models", "alias", "eta", champion, "--delete", "--json")
    declined = aetherctl_at_a_terminal(plane.address, *argv, typed="n\n", home=tmp_path)
    assert (declined.code, declined.out) == (1, "")
    assert declined.err.startswith("Delete alias 'champion' of model 'eta'? [y/N] ")
    assert "nothing was changed" in declined.err
    assert aliases(models) == {"champion": 2}

    accepted = aetherctl_at_a_terminal(plane.address, *argv, typed="y\n", home=tmp_path)
    assert accepted.code == 0, accepted.err
    assert json.loads(accepted.out) == {"deleted": {"model": "eta", "alias": "champion"}}
    assert accepted.err == "Delete alias 'champion' of model 'eta'? [y/N] "
    assert aliases(models) == {}


def test_ctrl_c_at_the_question_ends_its_line_and_changes_nothing(
    plane: Plane, models: ModelRegistryClient, champion: str, tmp_path: Path
) -> None:
    # "interrupted" was printed after the question, on its line ("...? [y/N] interrupted"), and did not
    # say whether anything had been deleted.
    argv = ("models", "alias", "eta", champion, "--delete", "--json")
    interrupted = aetherctl_interrupted_at_its_question(plane.address, *argv, home=tmp_path)
    assert (interrupted.code, interrupted.out) == (130, "")
    assert interrupted.err == (
        "Delete alias 'champion' of model 'eta'? [y/N] \n"
        "not confirmed: did not delete alias 'champion' of model 'eta'; nothing was changed\n"
        "interrupted\n"
    )
    assert aliases(models) == {"champion": 2}


def test_alias_with_both_a_version_and_delete_is_a_usage_error(
    plane: Plane, models: ModelRegistryClient, champion: str, capsys: Capture
) -> None:
    # The VERSION was ignored: `models alias eta champion 1 --delete` deleted the alias, where the user
    # may well have meant to move it.
    code, out, err = aetherctl(capsys, plane, "models", "alias", "eta", champion, "1", "--delete", "--yes")
    assert (code, out) == (2, "")
    assert err == "aetherctl: error: give either VERSION (to point the alias at it) or --delete, not both\n"
    assert aliases(models) == {"champion": 2}


def test_alias_usage_errors_exit_2_with_the_shared_message(
    plane: Plane, models: ModelRegistryClient, champion: str, capsys: Capture
) -> None:
    code, out, err = aetherctl(capsys, plane, "models", "alias", "eta", champion)
    assert (code, out) == (2, "")
    assert err == "aetherctl: error: give the VERSION the alias points at, or --delete\n"
    code, out, err = aetherctl(capsys, plane, "lineage", "eta", "1", "--feature-view", "rider_stats")
    assert (code, out) == (2, "")
    assert err == "aetherctl: error: give either MODEL VERSION or --feature-view, not both\n"
    assert aliases(models) == {"champion": 2}
