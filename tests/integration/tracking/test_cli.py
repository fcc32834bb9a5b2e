"""``aetherctl experiments`` and ``aetherctl runs`` against a real control plane, through a parser built
here the way ``aetherctl`` builds its own (the module's ``register``)."""

from __future__ import annotations

import argparse
import json

import pytest
from sqlalchemy import text

from clients.sdk.tracking import TrackingClient
from control_plane.cli import runs as runs_cli
from control_plane.cli.main import main
from control_plane.db import create_db_engine
from tests.integration.tracking.conftest import ThreadedControlPlane


def _aetherctl(address: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.add_argument("--control-plane", default=address)
    parser.add_argument("--timeout", type=float, default=10.0)
    runs_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.handler(args)
    return code


def test_experiments_and_runs_commands(
    control_plane: ThreadedControlPlane, client: TrackingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    address = control_plane.address
    assert _aetherctl(address, "experiments", "create", "churn", "--description", "weekly churn") == 0
    assert "created experiment churn" in capsys.readouterr().out
    for index, (lr, loss) in enumerate([("0.1", 0.9), ("0.01", 0.3), ("0.001", 0.45), ("0.01", 0.2)]):
        with client.start_run("churn", f"run-{index}", params={"lr": lr, "depth": index}) as run:
            run.log_metrics({"loss": loss + 1.0}, step=0)
            run.log_metrics({"loss": loss, "acc": 1 - loss}, step=1)

    assert _aetherctl(address, "experiments", "list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["NAME", "ID", "CREATED", "DESCRIPTION"]
    assert "weekly churn" in out

    assert _aetherctl(address, "runs", "list", "churn", "--limit", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RUN", "NAME", "STATUS", "STARTED", "DURATION"] and len(lines) == 4
    assert all("FINISHED" in line for line in lines[1:])

    argv = ["runs", "compare", "churn", "--metrics", "loss,loss:max,acc", "--params", "lr,depth"]
    assert _aetherctl(address, *argv, "--filter", "metrics.loss < 0.5", "--sort", "metrics.loss") == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["RUN", "NAME", "STATUS", "loss", "max(loss)", "acc", "lr", "depth"]
    assert [line.split()[1] for line in lines[1:-1]] == ["run-3", "run-1", "run-2"]
    # Columns are aligned: every cell of a column starts where its header starts.
    start = lines[0].index("max(loss)")
    assert [line[start:].split()[0] for line in lines[1:-1]] == ["1.2", "1.3", "1.45"]
    assert lines[-1] == "3 of 3 matching run(s)"

    assert (
        _aetherctl(address, *argv, "--filter", 'params.lr = "0.01"', "--sort", "metrics.acc desc", "--json")
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["total_count"] == 2
    assert [row["name"] for row in data["rows"]] == ["run-3", "run-1"]
    assert data["rows"][0]["metrics"] == {"loss": 0.2, "max(loss)": 1.2, "acc": 0.8}
    assert data["rows"][0]["params"] == {"lr": "0.01", "depth": "3"}

    run_id = data["rows"][0]["run_id"]
    assert _aetherctl(address, "runs", "get", run_id) == 0
    out = capsys.readouterr().out
    assert f"run {run_id} (run-3) FINISHED" in out and "depth=3,lr=0.01" in out
    assert _aetherctl(address, "runs", "compare", "churn", "--limit", "2", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 2


def test_a_metric_key_with_a_colon_is_a_column_of_its_own(
    control_plane: ThreadedControlPlane, client: TrackingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--metrics eval:loss_min` was read as metric `eval` with aggregate `loss_min`: only a last part that
    is latest, min or max is an aggregate."""
    with client.start_run("colons", "r") as run:
        run.log_metrics({"eval:loss_min": 0.25}, step=0)
        run.log_metrics({"eval:loss_min": 0.5}, step=1)
    argv = ["runs", "compare", "colons", "--metrics", "eval:loss_min,eval:loss_min:min", "--json"]
    assert _aetherctl(control_plane.address, *argv) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["metrics"] == {"eval:loss_min": 0.5, "min(eval:loss_min)": 0.25}


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["--metrics", "loss,loss"], "--metrics: 'loss' is given twice"),
        (["--metrics", "loss,loss:latest"], "--metrics: 'loss' and 'loss:latest' both name the column loss"),
        (["--metrics", "loss:max,max(loss)"], "--metrics: 'loss:max' and 'max(loss)' both name the column"),
        (["--params", "lr,depth,lr"], "--params: 'lr' is given twice"),
        (["--params", "x, x"], "--params: 'x' is given twice"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_compare_refuses_a_column_asked_for_twice_in_the_table_and_in_json(
    control_plane: ThreadedControlPlane,
    client: TrackingClient,
    capsys: pytest.CaptureFixture[str],
    columns: list[str],
    message: str,
    as_json: bool,
) -> None:
    """``--metrics loss,loss`` printed two loss columns in the table and one in the JSON (its cells are
    keyed by column name, so the second overwrote the first): the two outputs disagreed on what was
    asked. A column named twice is now a usage error, whichever the output."""
    with client.start_run("twice", "r", params={"lr": "0.1", "depth": "3"}) as run:
        run.log_metrics({"loss": 0.5, "max(loss)": 0.7}, step=0)
    argv = ["--control-plane", control_plane.address, "runs", "compare", "twice", *columns]
    code = main([*argv, *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith(f"aetherctl: error: {message}") and "name each column once" in err, err


def test_runs_list_and_get_print_a_start_no_date_holds(
    control_plane: ThreadedControlPlane,
    client: TrackingClient,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An older server stored a start of 2**63 - 1 (year 294247), and `runs list` of its experiment and
    `runs get` of the run died with a Python traceback (datetime.fromtimestamp): the number is printed."""
    with client.start_run("far", "future") as run:
        pass
    engine = create_db_engine(db_url)  # as a run created before start times were bounded was stored
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE tracking_runs SET start_time_us = :start WHERE run_id = :run_id"),
                {"start": 2**63 - 1, "run_id": run.run_id},
            )
    finally:
        engine.dispose()
    address = control_plane.address
    for argv in (("runs", "list", "far"), ("runs", "get", run.run_id)):
        assert _aetherctl(address, *argv) == 0
        assert f"{2**63 - 1} (microseconds since 1970: after year 9999)" in capsys.readouterr().out


def test_runs_list_says_on_stderr_when_the_limit_left_older_runs_out(
    control_plane: ThreadedControlPlane, client: TrackingClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """runs list printed the newest --limit runs (50 by default) and nothing else: an experiment with more
    looked as if it had only those."""
    for index in range(4):
        with client.start_run("churn", f"run-{index}"):
            pass
    capsys.readouterr()
    assert _aetherctl(control_plane.address, "runs", "list", "churn", "--limit", "3", "--json") == 0
    out, err = capsys.readouterr()
    assert [run["name"] for run in json.loads(out)] == ["run-3", "run-2", "run-1"]
    assert (
        err == "aetherctl: more runs exist: these are the newest 3 (--limit); raise --limit for older ones\n"
    )

    assert _aetherctl(control_plane.address, "runs", "list", "churn", "--limit", "4") == 0
    out, err = capsys.readouterr()
    assert (len(out.splitlines()), err) == (5, "")  # the header and all four
