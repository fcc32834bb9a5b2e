"""``aetherctl deploy ...`` against a real control plane (the subcommands parsed as aetherctl parses them)."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable

import pytest

from clients.aether.v1 import deployments_pb2 as pb
from clients.errors import InvalidArgument, NotFound
from clients.sdk.deployments import DeploymentsClient
from control_plane.cli import deploy
from control_plane.cli.main import main
from tests.integration.deployments.conftest import Models, Plane


def run(plane: Plane, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.set_defaults(control_plane=plane.address, timeout=20.0)
    deploy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code = args.handler(args)
    return code, capsys.readouterr().out


def test_deploy_a_canary_and_roll_it_back(
    plane: Plane, models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    blue, green, dark = models.register("eta"), models.register("eta"), models.register("eta")
    code, out = run(
        plane,
        capsys,
        "deploy",
        "create",
        "eta-prod",
        "--model",
        "eta",
        "--version",
        str(blue),
        "--shadow",
        f"eta:{dark}:25",
        "--steps",
        "10,50,100",
        "--bake-seconds",
        "600",
    )
    assert code == 0
    assert "eta-v1   primary  eta:1  100.00%" in out and "eta-v3   shadow   eta:3  25.00%" in out

    code, out = run(
        plane, capsys, "deploy", "canary", "start", "eta-prod", "--model", "eta", "--version", str(green)
    )
    assert code == 0 and "canary eta-v2 (eta:2): progressing at 10% (steps 10, 50, 100)" in out

    code, out = run(plane, capsys, "deploy", "list")
    assert "eta-prod    eta-v1 90%, eta-v2 10%  progressing" in out

    code, out = run(plane, capsys, "deploy", "rollback", "eta-prod", "--reason", "latency", "--json")
    shown = json.loads(out)
    assert shown["canary"]["status"] == "CANARY_STATUS_ROLLED_BACK" and shown["canary"]["reason"] == "latency"

    code, out = run(plane, capsys, "deploy", "traffic", "eta-prod", "eta-v3", "50")
    assert "eta-v3   shadow   eta:3  50.00%" in out
    code, out = run(plane, capsys, "deploy", "delete", "eta-prod", "--json", "--yes")
    assert code == 0 and json.loads(out) == {"deleted": "eta-prod"}  # printed nothing with --json


def test_delete_without_yes_and_no_terminal_is_refused_and_deletes_nothing(
    plane: Plane, models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    """delete removed a deployment (its traffic with it) at once, where ``features delete`` asks (or, with
    no terminal to ask on, wants ``--yes``)."""
    blue = str(models.register("eta"))
    assert run(plane, capsys, "deploy", "create", "eta-prod", "--model", "eta", "--version", blue)[0] == 0
    code = main(["--control-plane", plane.address, "deploy", "delete", "eta-prod", "--json"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert "refusing to delete deployment 'eta-prod' without --yes" in err and "pass --yes" in err, err
    with DeploymentsClient(plane.address) as client:
        assert client.get("eta-prod").name == "eta-prod"
        code, out = run(plane, capsys, "deploy", "delete", "eta-prod", "--yes")
        assert (code, out) == (0, "deleted deployment eta-prod\n")
        with pytest.raises(NotFound):
            client.get("eta-prod")


def test_zero_thresholds_are_kept_and_unset_ones_take_the_defaults(
    plane: Plane, models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    blue = str(models.register("eta"))
    create = ("deploy", "create", "--model", "eta", "--version", blue, "--json")
    strict = ("--max-p99-ratio", "0", "--max-error-rate", "0", "--bake-seconds", "0")
    code, out = run(plane, capsys, *create, "strict", *strict)
    policy = json.loads(out)["canary_policy"]
    assert code == 0 and (policy["max_p99_ratio"], policy["max_error_rate"]) == (0.0, 0.0)
    assert policy["bake_seconds"] == 0  # was sent as nothing and read as the 300 s default
    code, out = run(plane, capsys, *create, "plain", "--min-requests", "50")
    policy = json.loads(out)["canary_policy"]
    assert (policy["max_p99_ratio"], policy["max_error_rate"], policy["min_requests"]) == (1.5, 0.01, 50)
    assert policy["bake_seconds"] == 300
    code, out = run(plane, capsys, "deploy", "get", "strict", "--json")
    policy = json.loads(out)["canary_policy"]
    assert (policy["max_p99_ratio"], policy["bake_seconds"]) == (0.0, 0)  # as stored, not the defaults


def test_canary_start_changes_only_the_policy_flags_given(
    plane: Plane, models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    """`canary start ... --min-requests 10` sent a whole policy with every other field unset, and the
    server took that as the defaults: the steps, bake and thresholds set at create were silently reset."""
    blue, green = str(models.register("eta")), str(models.register("eta"))
    code, _ = run(
        plane, capsys, "deploy", "create", "eta-prod", "--model", "eta", "--version", blue,
        "--steps", "10,100", "--bake-seconds", "60", "--max-error-rate", "0", "--max-p99-ms", "250",
    )  # fmt: skip
    assert code == 0
    start = ("deploy", "canary", "start", "eta-prod", "--model", "eta", "--version", green, "--json")
    code, out = run(plane, capsys, *start, "--min-requests", "10", "--max-p99-ms", "0")
    policy = json.loads(out)["canary_policy"]
    assert code == 0 and policy["steps_percent"] == [10.0, 100.0] and policy["bake_seconds"] == 60
    assert (policy["max_error_rate"], policy["min_requests"], policy["max_p99_ratio"]) == (0.0, 10, 1.5)
    assert policy.get("max_p99_latency_ms", 0.0) == 0.0  # 0 given: no ceiling any more, not the 250


class ColleagueBetween(DeploymentsClient):
    """The real client, with a colleague's change run right after this command's first read of the
    deployment, i.e. between its read and its write, interleaved by hand rather than hoped for."""

    def __init__(self, address: str, colleague: Callable[[], object]) -> None:
        super().__init__(address, actor="alice", timeout=20)
        self.colleague: Callable[[], object] | None = colleague

    def get(self, name: str) -> pb.Deployment:
        deployment = super().get(name)
        if self.colleague is not None:
            colleague, self.colleague = self.colleague, None
            colleague()
        return deployment


def test_canary_start_does_not_undo_a_policy_change_made_since_it_read_the_policy(
    plane: Plane, models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    """`canary start --min-requests 10` read the policy, laid its flag over it and sent the whole policy:
    a colleague's policy change (bake 123 s) landing between that read and the start was silently undone.
    The start is now conditional on the revision read; refused (ABORTED), it reads again and retries."""
    blue, green = str(models.register("eta")), str(models.register("eta"))
    code, _ = run(plane, capsys, "deploy", "create", "eta-prod", "--model", "eta", "--version", blue)
    assert code == 0

    def colleague() -> None:
        with DeploymentsClient(plane.address, actor="bob", timeout=20) as client:
            current = client.get("eta-prod").canary_policy
            current.bake_seconds = 123
            client.update(pb.UpdateDeploymentRequest(name="eta-prod", canary_policy=current))

    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.set_defaults(control_plane=plane.address, timeout=20.0)
    deploy.register(parser.add_subparsers(dest="command", required=True))
    start = ["deploy", "canary", "start", "eta-prod", "--model", "eta", "--version", green, "--json"]
    args = parser.parse_args([*start, "--min-requests", "10"])
    out = io.StringIO()
    with ColleagueBetween(plane.address, colleague) as client:
        assert deploy._canary_start(client, args, out) == 0
    policy = json.loads(out.getvalue())["canary_policy"]
    assert (policy["bake_seconds"], policy["min_requests"]) == (123, 10)  # both changes
    # A revision below 0 comes from no read: refused as such, not ABORTED ("read again and retry").
    with (
        DeploymentsClient(plane.address, actor="bob", timeout=20) as client,
        pytest.raises(InvalidArgument, match="expected_plan_revision must be 0 or more"),
    ):
        client.start_canary("eta-prod", "eta", int(green), expected_plan_revision=-1)


def test_create_an_ab_split_with_a_fallback_for_unknown_entities(
    plane: Plane, models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = str(models.register("eta")), str(models.register("eta"))
    code, out = run(
        plane, capsys, "deploy", "create", "eta-ab", "--model", "eta", "--version", a, "--ab", f"eta:{b}:20",
        "--missing-entity-policy", "defaults", "--feature-defaults", "1.5,0,0,0", "--json",
    )  # fmt: skip
    assert code == 0
    shown = json.loads(out)
    split = {(v["name"], v["role"], v["traffic_percent"]) for v in shown["variants"]}
    assert split == {("eta-v1", "VARIANT_ROLE_PRIMARY", 80.0), ("eta-v2", "VARIANT_ROLE_CANARY", 20.0)}
    serving = shown["serving"]
    assert serving["missing_entity_policy"] == "defaults" and serving["feature_defaults"] == [1.5, 0, 0, 0]
    with pytest.raises(deploy.UsageError, match="--ab takes MODEL:VERSION:PERCENT"):
        run(plane, capsys, "deploy", "create", "bad", "--model", "eta", "--version", a, "--ab", "eta:2")
    # A bad share was blamed on the primary, with 100 minus it ("not -50.0").
    for share in ("150", "-10", "nan"):
        with pytest.raises(deploy.UsageError, match=f"--ab eta:2:{share}: PERCENT must lie in"):
            run(
                plane,
                capsys,
                "deploy",
                "create",
                "bad",
                "--model",
                "eta",
                "--version",
                a,
                "--ab",
                f"eta:2:{share}",
            )
    # A share under one of the router's 10,000 buckets got no requests (the server refuses it too).
    minimum = r"0\.005%, below the minimum of 0\.01% \(one of the router's 10,000 buckets\)"
    create = ("deploy", "create", "bad", "--model", "eta", "--version", a)
    for flag in ("--ab", "--shadow"):
        with pytest.raises(deploy.UsageError, match=f"^{flag} eta:2:0.005: PERCENT is {minimum}"):
            run(plane, capsys, *create, flag, "eta:2:0.005")
    with pytest.raises(deploy.UsageError, match="the --ab shares sum to 120%"):
        run(
            plane, capsys, "deploy", "create", "bad", "--model", "eta", "--version", a,
            "--ab", "eta:2:60", "--ab", "eta:2:60",
        )  # fmt: skip
