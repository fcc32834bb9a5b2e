"""``aetherctl features ...`` in-process against a real control plane (gRPC on loopback, SQLite file)."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from clients.sdk.audit import AuditClient
from clients.sdk.registry import FeatureRegistryClient
from control_plane.cli.main import main
from control_plane.settings import ControlPlaneSettings
from tests.integration.cli.conftest import ThreadedControlPlane
from tests.support.ports import refused_address
from tests.support.terminal import aetherctl_at_a_terminal
from tests.unit.control_plane.builders import entity, metadata, spec

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "features.yaml"

Capture = pytest.CaptureFixture[str]


def run(capsys: Capture, address: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    code = main(["--control-plane", address, *args])
    out, err = capsys.readouterr()
    return code, out, err


def plan_rows(out: str) -> list[list[str]]:
    """(KIND, NAME, ACTION, VERSION) of each step in a printed plan."""
    table, _, _summary = out.partition("\n\n")
    lines = table.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "ACTION", "VERSION", "CHANGES"]
    return [line.split()[:4] for line in lines[1:] if not line.startswith(" ")]  # indented: more changes


def copy_example(tmp_path: Path) -> Path:
    target = tmp_path / "features.yaml"
    shutil.copy(EXAMPLE, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, fragment: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


def test_apply_prints_the_plan_and_a_second_apply_changes_nothing(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    path = copy_example(tmp_path)
    code, out, err = run(capsys, control_plane, "features", "apply", str(path))
    assert (code, err) == (0, "")
    assert plan_rows(out) == [
        ["entity", "zone", "CREATE", "-"],
        ["feature_view", "zone_weather", "CREATE", "1"],
        ["feature_view", "zone_demand", "CREATE", "1"],
    ]
    assert out.rstrip().endswith("applied: 3 created")

    code, out, err = run(capsys, control_plane, "features", "apply", str(path))
    assert (code, err) == (0, "")
    assert {row[2] for row in plan_rows(out)} == {"NO_CHANGE"}
    assert out.rstrip().endswith("no changes")


def test_the_audit_log_names_who_ran_the_command(control_plane: str, tmp_path: Path, capsys: Capture) -> None:
    """Without auth the CLI names its user as the actor (it used to leave every feature, ingestion and
    job write as 'anonymous')."""
    code, _, err = run(capsys, control_plane, "features", "apply", str(copy_example(tmp_path)))
    assert (code, err) == (0, "")
    with AuditClient(control_plane) as audit:
        actors = {entry.actor for entry in audit.entries()}
    assert actors == {getpass.getuser()}


def test_a_closed_pipe_ends_the_command_quietly(control_plane: str, tmp_path: Path) -> None:
    """`aetherctl features list | head -1`: the reader leaves early; the command stops with SIGPIPE's
    status instead of a BrokenPipeError traceback."""
    assert main(["--control-plane", control_plane, "features", "apply", str(copy_example(tmp_path))]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", buffering=1) as closed_pipe, contextlib.redirect_stdout(closed_pipe):
        code = main(["--control-plane", control_plane, "features", "list"])
    assert code == 128 + signal.SIGPIPE


def test_dry_run_prints_the_plan_and_applies_nothing(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    path = copy_example(tmp_path)
    code, out, _ = run(capsys, control_plane, "features", "apply", str(path), "--dry-run")
    assert code == 0
    assert [row[2] for row in plan_rows(out)] == ["CREATE", "CREATE", "CREATE"]
    assert "dry run, nothing applied" in out
    assert run(capsys, control_plane, "features", "list")[1].strip() == "no feature views"


def test_a_changed_dtype_creates_a_new_version_beside_the_old(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    path = copy_example(tmp_path)
    assert run(capsys, control_plane, "features", "apply", str(path))[0] == 0
    edit(path, "{name: bookings_1h, dtype: int64", "{name: bookings_1h, dtype: int32")
    code, out, _ = run(capsys, control_plane, "features", "apply", str(path))
    assert code == 0
    rows = plan_rows(out)
    assert ["feature_view", "zone_demand", "NEW_VERSION", "2"] in rows
    assert ["feature_view", "zone_weather", "NO_CHANGE", "1"] in rows
    assert "bookings_1h" in out  # the reason names the feature whose type changed

    code, out, _ = run(capsys, control_plane, "features", "versions", "zone_demand")
    assert code == 0
    versions = [line.split()[:2] for line in out.splitlines()[1:]]
    assert versions == [["1", "ACTIVE"], ["2", "ACTIVE"]]
    code, out, _ = run(capsys, control_plane, "features", "get", "zone_demand", "--version", "1")
    assert code == 0
    assert "version:      1 of 2" in out
    assert any(line.split()[:2] == ["bookings_1h", "int64"] for line in out.splitlines())


def test_invalid_yaml_reports_file_line_and_field_and_applies_nothing(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    path = copy_example(tmp_path)
    assert run(capsys, control_plane, "features", "apply", str(path))[0] == 0
    # A valid edit (a new version of zone_demand) next to a typo: neither may reach the registry.
    edit(path, "{name: bookings_1h, dtype: int64", "{name: bookings_1h, dtype: int32")
    edit(path, "dtype: bool", "dtype: bol")
    code, out, err = run(capsys, control_plane, "features", "apply", str(path))
    assert code == 1
    assert out == ""
    line = line_of(path, "dtype: bol")
    assert f"{path}:{line}: feature_views[0].features[2].dtype: unknown type 'bol'" in err
    assert err.rstrip().endswith("is invalid; nothing was sent")
    _, out, _ = run(capsys, control_plane, "features", "versions", "zone_demand")
    assert len(out.strip().splitlines()) == 2  # header + version 1 only

    path.write_text("feature_views:\n  - name: broken\n    features: [\n")
    code, _, err = run(capsys, control_plane, "features", "apply", str(path))
    assert code == 1
    assert f"{path}:4: invalid YAML" in err


def test_a_server_rejection_is_mapped_to_its_yaml_line_and_nothing_is_half_applied(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    path = tmp_path / "defs.yaml"
    path.write_text(
        "entities:\n"
        "  - {name: rider, join_keys: [{name: rider_id, type: int64}]}\n"
        "feature_views:\n"
        "  - name: rider_stats\n"
        "    entity: rider\n"
        "    features: [{name: trips, dtype: int64}]\n"
        "  - name: driver_stats\n"
        "    entity: driver\n"  # no such entity, here or in the registry: only the server can tell
        "    features: [{name: trips, dtype: int64}]\n"
    )
    code, out, err = run(capsys, control_plane, "features", "apply", str(path))
    assert code == 1
    assert out == ""
    first, last = err.strip().splitlines()
    assert first.startswith(f"{path}:8: feature_views[1].entity: ")
    assert "driver" in first
    assert last == f"error: INVALID_ARGUMENT: the control plane rejected {path}; nothing was applied"
    # The valid entity and view before the rejected one were not applied either: one transaction.
    assert run(capsys, control_plane, "features", "list")[1].strip() == "no feature views"
    assert run(capsys, control_plane, "features", "entities")[1].strip() == "no entities"


def test_a_rule_only_the_server_checks_points_at_its_line(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    path = copy_example(tmp_path)
    edit(path, "validation: {allowed: [0, 1]}", "validation: {allowed: [0, 2]}")
    code, _, err = run(capsys, control_plane, "features", "apply", str(path))
    assert code == 1
    line = line_of(path, "allowed: [0, 2]")
    assert err.startswith(f"{path}:{line}: feature_views[0].features[2].validation.allowed: ")


def test_list_filters_by_owner_and_tag_and_prints_json(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    assert run(capsys, control_plane, "features", "apply", str(copy_example(tmp_path)))[0] == 0
    code, out, _ = run(capsys, control_plane, "features", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATUS", "ENTITY", "FEATURES", "TTL", "OWNER", "TAGS"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["zone_demand", "zone_weather"]
    assert lines[0].index("OWNER") == lines[1].index(lines[1].split()[6])  # columns are aligned

    _, out, _ = run(capsys, control_plane, "features", "list", "--owner", "pricing-team")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["zone_demand"]
    _, out, _ = run(capsys, control_plane, "features", "list", "--tag", "domain=weather", "--tag", "tier=1")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["zone_weather"]
    _, out, _ = run(capsys, control_plane, "features", "list", "--tag", "domain=nothing")
    assert out.strip() == "no feature views"

    code, out, _ = run(capsys, control_plane, "features", "list", "--json", "--owner", "data-team")
    assert code == 0
    views = json.loads(out)
    assert [view["spec"]["name"] for view in views] == ["zone_weather"]
    assert views[0]["status"] == "ACTIVE"
    assert [feature["value_type"] for feature in views[0]["spec"]["features"]] == [
        "FLOAT32",
        "FLOAT32",
        "BOOL",
    ]


def test_get_shows_a_view_and_unknown_names_are_not_found(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    assert run(capsys, control_plane, "features", "apply", str(copy_example(tmp_path)))[0] == 0
    code, out, _ = run(capsys, control_plane, "features", "get", "zone_weather")
    assert code == 0
    assert "entity:       zone" in out
    assert "ttl:          2h" in out
    assert "tags:         domain=weather,tier=1" in out
    temperature = next(line for line in out.splitlines() if line.startswith("temperature_c"))
    assert temperature.split()[:4] == ["temperature_c", "float32", "min=-50", "max=60"]

    code, out, _ = run(capsys, control_plane, "features", "get", "zone_demand", "--json")
    assert code == 0
    assert [agg["output"] for agg in json.loads(out)["spec"]["aggregations"]] == [
        "bookings_1h",
        "bookings_24h",
        "mean_fare_1h",
    ]

    for args in (["get", "nope"], ["get", "zone_weather", "--version", "9"], ["versions", "nope"]):
        code, out, err = run(capsys, control_plane, "features", *args)
        assert (code, out) == (1, "")
        assert err.startswith("error: NOT_FOUND: ")
        assert ("nope" if "nope" in args else "9") in err


def test_deprecate_retire_and_delete(control_plane: str, tmp_path: Path, capsys: Capture) -> None:
    path = copy_example(tmp_path)
    assert run(capsys, control_plane, "features", "apply", str(path))[0] == 0

    code, _, err = run(capsys, control_plane, "features", "retire", "zone_weather", "1")
    assert code == 1
    assert err.startswith("error: FAILED_PRECONDITION: ")  # only a deprecated version may be retired
    code, out, _ = run(capsys, control_plane, "features", "deprecate", "zone_weather", "1")
    assert (code, out.strip()) == (0, "feature view zone_weather version 1 is now DEPRECATED")
    code, out, _ = run(capsys, control_plane, "features", "retire", "zone_weather", "1")
    assert (code, out.strip()) == (0, "feature view zone_weather version 1 is now RETIRED")
    _, out, _ = run(capsys, control_plane, "features", "versions", "zone_weather")
    assert out.splitlines()[1].split()[:2] == ["1", "RETIRED"]

    # No terminal to ask and no --yes: refused as a usage error, and the view is still there.
    code, _, err = run(capsys, control_plane, "features", "delete", "zone_demand")
    assert code == 2
    assert "without --yes" in err
    assert run(capsys, control_plane, "features", "get", "zone_demand")[0] == 0

    code, out, _ = run(capsys, control_plane, "features", "delete", "zone_demand", "--yes")
    assert (code, out.strip()) == (0, "deleted feature view zone_demand")
    code, _, err = run(capsys, control_plane, "features", "get", "zone_demand")
    assert code == 1 and err.startswith("error: NOT_FOUND: ")
    code, _, err = run(capsys, control_plane, "features", "delete", "zone_demand", "--yes")
    assert code == 1 and err.startswith("error: NOT_FOUND: ")


def test_delete_asks_at_a_terminal_on_stderr_and_json_stays_on_stdout(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    """The question went to stdout (``input()``'s prompt, with stdout a pipe), so ``features delete
    --json | jq`` read ``Delete feature view ...? [y/N] {...}``: not JSON. Questions and refusals go to
    stderr; stdout holds the JSON alone, or nothing when the answer is no."""
    assert run(capsys, control_plane, "features", "apply", str(copy_example(tmp_path)))[0] == 0

    declined = aetherctl_at_a_terminal(
        control_plane, "features", "delete", "zone_demand", "--json", typed="n\n", home=tmp_path
    )
    assert (declined.code, declined.out) == (1, "")
    assert declined.err.startswith("Delete feature view 'zone_demand' and all its versions? [y/N] ")
    assert "nothing was changed" in declined.err
    assert run(capsys, control_plane, "features", "get", "zone_demand")[0] == 0  # still there

    accepted = aetherctl_at_a_terminal(
        control_plane, "features", "delete", "zone_demand", "--json", typed="y\n", home=tmp_path
    )
    assert accepted.code == 0, accepted.err
    assert json.loads(accepted.out) == {"deleted": "zone_demand"}
    assert accepted.err == "Delete feature view 'zone_demand' and all its versions? [y/N] "
    code, _, err = run(capsys, control_plane, "features", "get", "zone_demand")
    assert code == 1 and err.startswith("error: NOT_FOUND: ")


def test_usage_errors_exit_2(control_plane: str, capsys: Capture) -> None:
    assert run(capsys, control_plane, "features")[0] == 2
    assert run(capsys, control_plane, "features", "deprecate", "zone_weather", "one")[0] == 2
    code, _, err = run(capsys, control_plane, "features", "list", "--tag", "no-equals-sign")
    assert code == 2
    assert "KEY=VALUE" in err


def test_an_unreachable_control_plane_is_unavailable(capsys: Capture) -> None:
    address = refused_address()
    code, out, err = run(capsys, address, "--timeout", "2", "features", "list")
    assert (code, out) == (1, "")
    assert err.startswith("error: UNAVAILABLE: ")
    assert f"is the control plane running at {address}?" in err


def test_a_control_plane_that_answers_unavailable_is_not_said_to_be_unreachable(
    tmp_path: Path, redis_url: str, capsys: Capture
) -> None:
    # Every UNAVAILABLE got "is the control plane running at ...? `aetherctl dev up` starts one", also
    # the one a running control plane answered because its database was locked or down: mid-incident
    # that sent the operator to restart a healthy control plane.
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=f"sqlite:///{tmp_path / 'aether.db'}",
        redis_url=redis_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
        db_busy_timeout_s=0.2,
    )
    server = ThreadedControlPlane(settings)
    try:
        assert run(capsys, server.address, "features", "apply", str(copy_example(tmp_path)))[0] == 0
        holder = sqlite3.connect(tmp_path / "aether.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
        try:
            code, out, err = run(capsys, server.address, "features", "deprecate", "zone_weather", "1")
        finally:
            holder.close()
    finally:
        server.stop()
    assert (code, out) == (1, "")
    assert err.startswith("error: UNAVAILABLE: metadata database unavailable: database is locked"), err
    assert "is the control plane running" not in err and "aetherctl dev up" not in err


def test_an_apply_without_an_answer_says_its_outcome_is_unknown(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    # DEADLINE_EXCEEDED or UNAVAILABLE during the Apply call said "nothing was applied", which the CLI
    # cannot know: the server may have committed before the answer was lost.
    path = copy_example(tmp_path)
    code, out, err = run(capsys, control_plane, "--timeout", "0.000001", "features", "apply", str(path))
    assert (code, out) == (1, "") and err.startswith("error: DEADLINE_EXCEEDED: ")
    assert f"whether {path} was applied is unknown" in err and "apply is idempotent: run it again" in err
    assert "nothing was applied" not in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, refused_address(), "--timeout", "2", "features", "apply", str(path))
    assert code == 1 and err.startswith("error: UNAVAILABLE: ") and "was applied is unknown" in err
    # A dry run applies nothing whatever happened to the call.
    code, _, err = run(
        capsys, control_plane, "--timeout", "0.000001", "features", "apply", "--dry-run", str(path)
    )
    assert code == 1 and err.rstrip().endswith("nothing was applied)")
    assert run(capsys, control_plane, "features", "apply", str(path))[0] == 0  # run again: it converges


def test_the_listings_follow_their_pages(control_plane: str, capsys: Capture) -> None:
    # Five 1,000,000-character descriptions made each listing a 5 MB reply, over gRPC's 4 MiB: the SDK
    # and 'features list', 'entities' and 'versions' failed RESOURCE_EXHAUSTED for good.
    large = "d" * 1_000_000
    names = [f"e{index}" for index in range(5)]
    views = [f"v{index}" for index in range(5)]
    with FeatureRegistryClient(control_plane, timeout=30) as client:
        for name in names:
            client.create_entity(entity(name=name, description=large))
        for name in views:
            client.create_feature_view(spec(name=name, entity="e0"), metadata(description=large))
        for ttl in range(1, 5):  # versions 2 to 5 of v0: each carries the view's description
            client.create_feature_view_version(spec(name="v0", entity="e0", ttl_seconds=ttl))

        assert [found.name for found in client.list_entities()] == names
        assert [view.spec.name for view in client.list_feature_views(owner="team-a")] == views
        assert [view.version for view in client.list_feature_view_versions("v0")] == [1, 2, 3, 4, 5]

    code, out, _ = run(capsys, control_plane, "features", "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == views
    code, out, _ = run(capsys, control_plane, "features", "entities", "--json")
    assert code == 0 and [found["name"] for found in json.loads(out)] == names
    code, out, _ = run(capsys, control_plane, "features", "versions", "v0")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["1", "2", "3", "4", "5"]


def test_a_file_too_large_for_one_apply_says_so_and_how_to_apply_it(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    # Five views of 1,000,000-character descriptions: each within the registry's bound, together 5 MB,
    # one Apply request over gRPC's 4 MiB. The command printed gRPC's "Received message larger than max
    # (5000176 vs. 4194304)" as the control plane's rejection, saying neither why nor what to do.
    large = "d" * 1_000_000
    views = "".join(
        f"  - name: v{index}\n    entity: zone\n    description: {large}\n"
        "    features: [{name: f, dtype: float32}]\n"
        for index in range(5)
    )
    path = tmp_path / "large.yaml"
    path.write_text(
        "entities:\n  - {name: zone, join_keys: [{name: zone_id, type: int64}]}\nfeature_views:\n" + views
    )

    for dry_run in ((), ("--dry-run",)):
        code, out, err = run(capsys, control_plane, "features", "apply", str(path), *dry_run)
        assert code == 1 and out == ""
        assert err.startswith(f"error: RESOURCE_EXHAUSTED: {path}: its definitions take 5,000,"), err
        assert "4,194,304" in err and "largest: feature view 'v" in err and "in parts" in err, err
        assert err.rstrip().endswith("nothing was sent"), err
    assert run(capsys, control_plane, "features", "list")[1].strip() == "no feature views"
