"""``aetherctl`` given bad input: one clear line on stderr and exit status 2 (usage) or 1, never a
traceback, and no work thrown away. The commands run in-process through ``main``, as a user's shell would
run them; those refused before any call point at an address where nothing listens, so a command that
called a server would fail with UNAVAILABLE instead of the expected message."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.sdk.ingestion import IngestionClient
from tests.integration.cli.in_process import Capture, aetherctl
from tests.support.ports import refused_address

REPO = Path(__file__).resolve().parents[3]


def assert_refused(result: tuple[int, str, str], code: int, message: str) -> None:
    status, _, err = result
    assert (status, "Traceback" in err) == (code, False), err
    assert err.count("\n") == 1 and message in err, err


@pytest.fixture
def nowhere() -> str:
    """An address where nothing listens."""
    return refused_address()


DEFINITIONS = """
entities:
  - name: driver
    join_keys: [{name: driver_id, type: int64}]
feature_views:
  - name: stats
    entity: driver
    ttl: 1d
    source: {kind: batch, uri: file:///nowhere.parquet}
    features:
      - {name: trips, dtype: int64}
"""
WINDOW = ["--start", "2024-01-01", "--end", "2024-01-02"]


@pytest.fixture
def stats(control_plane: str, tmp_path: Path, capsys: Capture) -> str:
    """A control plane with the feature view ``stats`` (trips per driver) applied through the CLI."""
    definitions = tmp_path / "features.yaml"
    definitions.write_text(DEFINITIONS)
    code, _, err = aetherctl(capsys, control_plane, "features", "apply", str(definitions))
    assert (code, err) == (0, "")
    return control_plane


def stats_rows(path: Path, drivers: int = 2, row_group_size: int | None = None) -> Path:
    rows = pa.table(
        {
            "driver_id": pa.array(range(1, drivers + 1), pa.int64()),
            "event_ts": pa.array([datetime(2024, 1, 1, 12, tzinfo=UTC)] * drivers),
            "trips": pa.array(range(drivers), pa.int64()),
        }
    )
    pq.write_table(rows, path, row_group_size=row_group_size, compression="none")
    return path


def ingestion_runs(address: str) -> int:
    with IngestionClient(address) as client:
        return len(client.list_runs("stats"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retrain", "configure", "churn", "--cooldown", "1w"], "--cooldown: invalid duration '1w'"),
        (["retrain", "configure", "churn", "--shadow", "soon"], "--shadow: invalid duration 'soon'"),
        (["retrain", "configure", "churn", "--cooldown", "1.5.h"], "--cooldown: invalid duration '1.5.h'"),
        (["retrain", "configure", "churn", "--cooldown", "99999999999999d"], "--cooldown: duration"),
        (["drift", "report", "churn", "--since", "99999999999d"], "--since: '99999999999d' lies before 1970"),
        (["performance", "churn", "--since", "99999999999d"], "--since: '99999999999d' lies before 1970"),
        (["performance", "churn", "--since", "tuesday"], "--since: invalid time 'tuesday'"),
        # materialize's window was parsed apart: INVALID_ARGUMENT (exit 1) naming neither flag.
        (["materialize", "stats", "--start", "yesterday", "--end", "2024-01-02"], "--start: invalid time"),
        (["materialize", "stats", "--start", "2024-01-01", "--end", "2024-13-01"], "--end: invalid time"),
        (
            ["materialize", "stats", "--start", "1969-12-31", "--end", "2024-01-02"],
            "--start: '1969-12-31' lies",
        ),
        (
            ["materialize", "stats", "--start", "2024-01-02", "--end", "2024-01-01T12:00:00"],
            "--end 2024-01-01T12:00:00 is not after --start 2024-01-02",
        ),
        (
            ["materialize", "stats", "--start", "2024-01-02T00:00:00+01:00", "--end", "2024-01-01T23:00:00Z"],
            "--end 2024-01-01T23:00:00Z is not after --start 2024-01-02T00:00:00+01:00",
        ),
        (["audit", "list", "--since", "99999999999999d"], "--since: '99999999999999d' lies before 1970"),
        (["audit", "list", "--until", "9" * 23 + "d"], f"--until: '{'9' * 23}d' lies before 1970"),
    ],
)
def test_malformed_durations_times_and_numbers_name_their_flag(
    capsys: Capture, nowhere: str, args: list[str], message: str
) -> None:
    """Every duration flag goes through one parser (control_plane/cli/durations.py): `1w` used to end in
    a ValueError traceback, `1.5.h` in a message about --since, a huge --since in protobuf's "Value out
    of range" traceback. (deploy --steps 5,a said only "could not convert string to float: 'a'".)"""
    assert_refused(aetherctl(capsys, nowhere, *args), 2, f"aetherctl: error: {message}")


UINT32 = "expected a whole number from 0 to 4294967295"
UINT64 = "expected a whole number from 0 to 9223372036854775807"
LIMIT = "expected a whole number from 1 to 2147483647"
VERSION = "expected a whole number from 1 to 9223372036854775807"
VIEW_VERSION = "expected a whole number from 1 to 4294967295"
SECONDS = "expected a number of seconds above 0 and at most 31536000 (one year)"
INT32 = "expected a whole number from 0 to 2147483647"
DEPLOY = ["deploy", "create", "d", "--model", "m", "--version", "1"]
BAKE = "expected a whole number from 0 to 315360000"
WARMUP = "expected a whole number from 0 to 10000"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retrain", "history", "churn", "--limit", "-1"], f"argument --limit: {LIMIT}, got '-1'"),
        (["retrain", "configure", "churn", "--new-labels", "-5"], f"argument --new-labels: {UINT64}"),
        (["monitor", "configure", "churn", "--window-rows", "-1"], f"argument --window-rows: {UINT64}"),
        (
            ["monitor", "configure", "churn", "--min-samples", "5000000000"],
            f"argument --min-samples: {UINT32}",
        ),
        (["monitor", "configure", "churn", "--min-labels", "-1"], f"argument --min-labels: {UINT32}"),
        (["quarantine", "list", "--limit", "-1"], f"argument --limit: {LIMIT}"),
        (["quarantine", "show", "-1"], f"argument id: {UINT64}, got '-1'"),
        (["quarantine", "discard", "--", "3", "-1"], f"argument ID: {UINT64}, got '-1'"),
        (["quarantine", "replay", "--", "3", "-1"], f"argument ID: {UINT64}, got '-1'"),
        (
            ["materialize", "stats", *["--start", "2024-01-01", "--end", "2024-01-02"], "--version", "-1"],
            UINT32,
        ),
        (["features", "get", "stats", "--version", "-1"], f"argument --version: {UINT32}, got '-1'"),
        (["features", "deprecate", "stats", "5000000000"], f"argument version: {VIEW_VERSION}"),
        (["features", "retire", "stats", "0"], f"argument version: {VIEW_VERSION}, got '0'"),
        (["models", "get", "churn", "9" * 20], f"argument version: {VERSION}"),
        # Versions start at 1: an explicit 0 was read as "not given" (get showed the latest version).
        (["models", "get", "churn", "0"], f"argument version: {VERSION}, got '0'"),
        (["models", "approve", "churn", "-1"], f"argument version: {VERSION}"),
        (["models", "alias", "churn", "prod", "9" * 20], f"argument version: {VERSION}"),
        (["models", "delete", "churn", "0", "--yes"], f"argument version: {VERSION}"),
        (["lineage", "churn", "9" * 20], f"argument VERSION: {VERSION}"),
        # A time limit of 0 or less failed every call with DEADLINE_EXCEEDED, naming neither flag nor mistake.
        (["--timeout", "-1", "features", "list"], f"argument --timeout: {SECONDS}, got '-1'"),
        (["features", "list", "--timeout", "0"], f"argument --timeout: {SECONDS}, got '0'"),
        (["models", "list", "--timeout", "nan"], f"argument --timeout: {SECONDS}"),
        # dev up --wait nan waited without bound for another dev up's lock (no deadline ever passed).
        (["dev", "up", "--wait", "nan"], f"argument --wait: {SECONDS}, got 'nan'"),
        (["dev", "up", "--wait", "-1"], f"argument --wait: {SECONDS}, got '-1'"),
        (["dev", "down", "--grace", "-1"], "argument --grace: expected a number of seconds, 0 or more"),
        (
            ["historical", "--entities", "e.parquet", "--features", "stats", "--deadline", "-5"],
            f"argument --deadline: {SECONDS}",
        ),
        # A listing of at most 0 (or -1) rows printed an empty table, as if there were nothing to list.
        (["runs", "list", "stats", "--limit", "0"], f"argument --limit: {LIMIT}, got '0'"),
        (["runs", "compare", "stats", "--limit", "-1"], f"argument --limit: {LIMIT}"),
        (["audit", "list", "--limit", "0"], f"argument --limit: {LIMIT}"),
        (["drift", "report", "churn", "--limit", "5000000000"], f"argument --limit: {LIMIT}"),
        # These two took 0 as "the default" (20 of each; 100 records) where every other listing refuses it.
        (["retrain", "history", "churn", "--limit", "0"], f"argument --limit: {LIMIT}, got '0'"),
        (["quarantine", "list", "--limit", "0"], f"argument --limit: {LIMIT}, got '0'"),
        # deploy's whole numbers were bare ints: "Value out of range" tracebacks, or INTERNAL from the server.
        ([*DEPLOY, "--bake-seconds", "9" * 20], f"argument --bake-seconds: {BAKE}"),
        ([*DEPLOY, "--bake-seconds", "-1"], f"argument --bake-seconds: {BAKE}, got '-1'"),
        # The server's bound (ten years): refused INVALID_ARGUMENT (exit 1) after the call.
        ([*DEPLOY, "--bake-seconds", "315360001"], f"argument --bake-seconds: {BAKE}, got '315360001'"),
        ([*DEPLOY, "--min-requests", "-5"], f"argument --min-requests: {UINT64}"),
        ([*DEPLOY, "--max-batch-size", "5000000000"], f"argument --max-batch-size: {INT32}"),
        ([*DEPLOY, "--max-queue-delay-us", "-1"], f"argument --max-queue-delay-us: {INT32}"),
        ([*DEPLOY, "--warmup-requests", "2147483648"], f"argument --warmup-requests: {WARMUP}"),
        # The server's bound (MAX_WARMUP_REQUESTS): refused INVALID_ARGUMENT (exit 1) after the call.
        ([*DEPLOY, "--warmup-requests", "10001"], f"argument --warmup-requests: {WARMUP}, got '10001'"),
        (["deploy", "create", "d", "--model", "m", "--version", "0"], f"argument --version: {VERSION}"),
        (
            ["deploy", "canary", "start", "d", "--model", "m", "--version", "9" * 20],
            f"argument --version: {VERSION}",
        ),
    ],
)
def test_whole_numbers_out_of_their_proto_range_are_usage_errors(
    capsys: Capture, nowhere: str, args: list[str], message: str
) -> None:
    """A negative number in an unsigned proto field used to end in protobuf's "Value out of range"
    traceback (quarantine show -1 before any call; monitor configure --window-rows -1 once the config was
    read). argparse refuses it now, with its usage lines before the error."""
    code, _, err = aetherctl(capsys, nowhere, *args)
    assert (code, "Traceback" in err) == (2, False), err
    assert message in err.splitlines()[-1] and "UNAVAILABLE" not in err, err


STATUSES = "'quarantined', 'replaying', 'online_pending', 'replayed', 'discarded', 'superseded', 'all'"
PERCENT = "expected a percentage from 0 to 100"
STEPS = "expected percentages separated by commas, ascending strictly within (0, 100] and ending at 100"
EXAMPLE = "(e.g. 5,25,100)"
FRACTION = "expected a fraction from 0 to 1"
NON_NEGATIVE = "expected a finite number, 0 or more"
FINITE = "expected finite numbers separated by commas"
TOO_SMALL = "is below the minimum of 0.01% (one of the router's 10,000 buckets)"
CANARY = ["deploy", "canary", "start", "d", "--model", "m", "--version", "2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quarantine", "list", "--status", "bogus"], f"invalid choice: 'bogus' (choose from {STATUSES})"),
        (["quarantine", "list", "--status", "Replayed"], "argument --status: invalid choice: 'Replayed'"),
        (["deploy", "traffic", "d", "v", "nan"], f"argument PERCENT: {PERCENT}, got 'nan'"),
        (["deploy", "traffic", "d", "v", "inf"], f"argument PERCENT: {PERCENT}, got 'inf'"),
        (["deploy", "traffic", "d", "v", "--", "-5"], f"argument PERCENT: {PERCENT}, got '-5'"),
        (["deploy", "traffic", "d", "v", "100.5"], f"argument PERCENT: {PERCENT}, got '100.5'"),
        (["deploy", "traffic", "d", "v", "0.001"], f"argument PERCENT: 0.001% {TOO_SMALL}"),
        ([*DEPLOY, "--shadow", "m:2:nan"], "--shadow m:2:nan: PERCENT must lie in [0, 100]"),
        ([*DEPLOY, "--shadow", "m:2:-5"], "--shadow m:2:-5: PERCENT must lie in [0, 100]"),
        ([*DEPLOY, "--shadow", "m:2:150"], "--shadow m:2:150: PERCENT must lie in [0, 100]"),
        ([*DEPLOY, "--ab", "m:2:nan"], "--ab m:2:nan: PERCENT must lie in [0, 100]"),
        ([*DEPLOY, "--steps", "5,a"], f"argument --steps: {STEPS} {EXAMPLE}, got '5,a'"),
        ([*DEPLOY, "--steps", "5,nan,100"], f"argument --steps: {STEPS} {EXAMPLE}, got '5,nan,100'"),
        ([*DEPLOY, "--steps", "50,25,100"], f"argument --steps: {STEPS} {EXAMPLE}, got '50,25,100'"),
        ([*DEPLOY, "--steps", "5,25"], f"argument --steps: {STEPS} {EXAMPLE}, got '5,25'"),
        ([*DEPLOY, "--steps", "0,100"], f"argument --steps: {STEPS} {EXAMPLE}, got '0,100'"),
        ([*DEPLOY, "--steps", "5,200"], f"argument --steps: {STEPS} {EXAMPLE}, got '5,200'"),
        ([*DEPLOY, "--steps", "0.001,100"], f"argument --steps: step 0.001% {TOO_SMALL}"),
        # canary start read the deployment before it looked at --steps: the flag was judged after a call.
        ([*CANARY, "--steps", "5,inf"], f"argument --steps: {STEPS} {EXAMPLE}, got '5,inf'"),
        ([*DEPLOY, "--max-error-rate", "nan"], f"argument --max-error-rate: {FRACTION}, got 'nan'"),
        ([*CANARY, "--max-error-rate", "1.5"], f"argument --max-error-rate: {FRACTION}"),
        ([*DEPLOY, "--max-p99-ms", "nan"], f"argument --max-p99-ms: {NON_NEGATIVE}, got 'nan'"),
        ([*CANARY, "--max-p99-ms", "-1"], f"argument --max-p99-ms: {NON_NEGATIVE}"),
        ([*DEPLOY, "--max-p99-ratio", "inf"], f"argument --max-p99-ratio: {NON_NEGATIVE}"),
        ([*DEPLOY, "--feature-defaults", "1,nan"], f"argument --feature-defaults: {FINITE}, got '1,nan'"),
        ([*DEPLOY, "--feature-defaults", "1,x"], f"argument --feature-defaults: {FINITE}"),
    ],
)  # fmt: skip
def test_bad_statuses_shares_and_canary_policies_are_usage_errors_before_any_call(
    capsys: Capture, nowhere: str, args: list[str], message: str
) -> None:
    """Each was sent as it was and refused by the control plane (exit 1, INVALID_ARGUMENT naming a proto
    field rather than the flag; here, with nothing listening, UNAVAILABLE): a usage error now, naming the
    flag and what it takes."""
    code, _, err = aetherctl(capsys, nowhere, *args)
    assert (code, "Traceback" in err) == (2, False), err
    assert message in err.splitlines()[-1] and "UNAVAILABLE" not in err, err


def test_good_shares_and_policies_still_reach_the_control_plane(capsys: Capture, nowhere: str) -> None:
    """The checks refuse only what the server would: these go out (and find nothing listening)."""
    for args in (
        ["deploy", "traffic", "d", "v", "0"],
        ["deploy", "traffic", "d", "v", "100"],
        ["deploy", "traffic", "d", "v", "0.01"],
        [*DEPLOY, "--shadow", "m:2:0", "--ab", "n:3:0.01", "--steps", "0.01,50,100", "--max-error-rate", "1"],
        [*DEPLOY, "--steps", "", "--max-p99-ms", "0", "--max-p99-ratio", "0", "--feature-defaults", "1,-2.5"],
        ["quarantine", "list", "--status", "online_pending"],
        ["quarantine", "list", "--status", "all"],
    ):
        code, _, err = aetherctl(capsys, nowhere, *args)
        assert code == 1 and err.startswith("error: UNAVAILABLE: "), (args, err)


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (["--timeout", "1e10", "features", "list"], "--timeout", "1e10"),
        (["features", "list", "--timeout", "9e9"], "--timeout", "9e9"),
        (["jobs", "list", "--timeout", "31536001"], "--timeout", "31536001"),
        (
            ["historical", "--entities", "e.parquet", "--features", "s", "--deadline", "1e300"],
            "--deadline",
            "1e300",
        ),
    ],
    ids=["global", "features", "jobs", "historical"],
)
def test_a_time_limit_past_a_year_is_a_usage_error_naming_the_flag_and_the_range(
    capsys: Capture, nowhere: str, args: list[str], flag: str, value: str
) -> None:
    """gRPC keeps a deadline in signed 64-bit nanoseconds: --timeout or --deadline past about 9.2e9 s
    (even 9e9) was accepted and every call failed at once with DEADLINE_EXCEEDED. (The fleet's
    --interval-s, parsed alike, is in tests/integration/deployments/test_fleet.py.)"""
    code, _, err = aetherctl(capsys, nowhere, *args)
    assert (code, "Traceback" in err) == (2, False), err
    assert err.splitlines()[-1].endswith(f": error: argument {flag}: {SECONDS}, got {value!r}"), err


def test_a_time_limit_of_a_year_is_a_working_deadline(capsys: Capture, nowhere: str) -> None:
    # The call goes out and finds nothing listening, rather than having expired before it started.
    code, _, err = aetherctl(capsys, nowhere, "--timeout", "31536000", "features", "list")
    assert code == 1 and "UNAVAILABLE" in err and "DEADLINE_EXCEEDED" not in err, err


MATERIALIZER = ["materializer", "run", "--view", "clicks"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*MATERIALIZER, "--count", "0"], f"argument --count: {LIMIT}, got '0'"),
        ([*MATERIALIZER, "--block-ms", "-1"], f"argument --block-ms: {LIMIT}, got '-1'"),
        ([*MATERIALIZER, "--block-ms", "0"], f"argument --block-ms: {LIMIT}, got '0'"),
        ([*MATERIALIZER, "--redis-url", "foo://x"], "argument --redis-url: expected a redis://, rediss://"),
        ([*MATERIALIZER, "--max-future-s", "99999999999999"], "argument --max-future-s: expected a whole"),
        ([*MATERIALIZER, "--lateness-s", "-1"], "argument --lateness-s: expected a whole number from 0"),
        ([*MATERIALIZER, "--max-future-skew-s", "-1"], "argument --max-future-skew-s: expected a whole"),
        ([*MATERIALIZER, "--reclaim-idle-ms", "-1"], "argument --reclaim-idle-ms: expected a whole number"),
        ([*MATERIALIZER, "--lag-alert-s", "nan"], "argument --lag-alert-s: expected a finite number"),
        ([*MATERIALIZER, "--metrics-port", "70000"], "argument --metrics-port: expected a whole number"),
        ([*MATERIALIZER, "--version", "-1"], "argument --version: expected a whole number from 0"),
    ],
)
def test_materializer_flags_out_of_range_are_usage_errors(
    capsys: Capture, nowhere: str, args: list[str], message: str
) -> None:
    """``materializer run`` took bare ints: --count 0 and --block-ms -1 failed in Redis, --redis-url foo://x
    in redis-py, --max-future-s 99999999999999 in timedelta, each as a traceback after the database was
    opened. (--block-ms 0 would block each read forever: SIGTERM went unseen while the stream was idle.)"""
    code, _, err = aetherctl(capsys, nowhere, *args)
    assert (code, "Traceback" in err) == (2, False), err
    assert message in err.splitlines()[-1], err


def test_a_materializer_given_a_redis_url_it_cannot_use_says_so_in_one_line(tmp_path: Path) -> None:
    """AETHER_REDIS_URL=foo://x ended ``python -m control_plane.ingestion.streaming`` in a ValueError
    traceback from redis-py."""
    env = {**os.environ, "AETHER_HOME": str(tmp_path), "AETHER_REDIS_URL": "foo://x"}
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.ingestion.streaming", "--view", "clicks"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        2,
        "error: AETHER_REDIS_URL: expected a redis://, rediss:// or unix:// URL, got 'foo://x'\n",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["models", "list", "--tag", "team"],
        ["models", "list", "--tag", "team=risk", "--tag", "=risk"],
        ["features", "list", "--tag", "team"],
    ],
)
def test_a_tag_filter_without_key_and_equals_is_a_usage_error(
    capsys: Capture, nowhere: str, args: list[str]
) -> None:
    """`models list --tag team` skipped the tag and listed every model, as if unfiltered."""
    code, _, err = aetherctl(capsys, nowhere, *args)
    assert (code, "Traceback" in err) == (2, False), err
    assert f"argument --tag: expected KEY=VALUE, got {args[-1]!r}" in err.splitlines()[-1], err
    assert "UNAVAILABLE" not in err


def test_an_unforeseen_bad_path_is_one_line_naming_the_command_and_the_path(
    capsys: Capture, nowhere: str, tmp_path: Path
) -> None:
    """main's safety net for OSError: `fleet status --endpoints FOLDER` used to end in IsADirectoryError."""
    result = aetherctl(capsys, nowhere, "fleet", "status", "--endpoints", str(tmp_path))
    assert_refused(result, 1, f"error: fleet status: {tmp_path}: Is a directory")


def test_materialize_names_a_missing_source_before_it_streams(
    stats: str, tmp_path: Path, capsys: Capture
) -> None:
    """The "cannot read" message used to be raised inside the request stream, so the user saw only gRPC's
    "UNKNOWN: Exception iterating requests!"."""
    missing = tmp_path / "missing.parquet"
    result = aetherctl(capsys, stats, "materialize", "stats", *WINDOW, "--source", str(missing))
    assert_refused(result, 1, f"error: INVALID_ARGUMENT: cannot read '{missing}': ")
    assert "No such file or directory" in result[2] and ingestion_runs(stats) == 0


def test_an_error_while_streaming_the_source_is_reported_as_itself(
    stats: str, tmp_path: Path, capsys: Capture
) -> None:
    """A file whose footer reads but whose second row group is corrupt fails only once streaming began;
    the reason reaches the user instead of gRPC's "Exception iterating requests!", and no run is
    recorded."""
    source = stats_rows(tmp_path / "corrupt.parquet", drivers=2, row_group_size=1)
    column = pq.ParquetFile(source).metadata.row_group(1).column(0)
    data = bytearray(source.read_bytes())
    start = column.data_page_offset
    data[start : start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    source.write_bytes(bytes(data))

    result = aetherctl(capsys, stats, "materialize", "stats", *WINDOW, "--source", str(source))
    assert_refused(result, 1, f"error: INVALID_ARGUMENT: cannot read '{source}': ")
    assert "Exception iterating requests" not in result[2] and ingestion_runs(stats) == 0

    # The same command with a sound file goes through: the refusal was about the file alone.
    sound = stats_rows(tmp_path / "sound.parquet")
    code, _, err = aetherctl(capsys, stats, "materialize", "stats", *WINDOW, "--source", str(sound))
    assert (code, err) == (0, "") and ingestion_runs(stats) == 1


def entity_rows(path: Path, drivers: int = 50) -> Path:
    labels = datetime(2024, 1, 2, tzinfo=UTC)
    rows = pa.table(
        {"driver_id": pa.array(range(drivers), pa.int64()), "event_ts": pa.array([labels] * drivers)}
    )
    pq.write_table(rows, path)
    return path


def recorded_datasets(tmp_path: Path) -> list[str]:
    """Hashes of the training sets the control plane recorded (its offline root is in its home)."""
    return sorted(path.stem for path in (tmp_path / "home" / "offline" / "_datasets").glob("*.json"))


def test_historical_names_a_missing_entities_file_as_missing(
    capsys: Capture, nowhere: str, tmp_path: Path
) -> None:
    """pyarrow's FileNotFoundError holds only the path: the message was "INVALID_ARGUMENT: cannot read
    entity rows from 'x.parquet': x.parquet"."""
    missing = tmp_path / "lables.parquet"
    args = ["historical", "--entities", str(missing), "--features", "stats", "--out", str(tmp_path / "t")]
    result = aetherctl(capsys, nowhere, *args)
    assert_refused(result, 1, f"error: cannot read --entities: {missing}: No such file or directory\n")


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_historical_checks_out_before_the_control_plane_builds_anything(
    stats: str, tmp_path: Path, capsys: Capture, where: str
) -> None:
    """A bad --out used to surface as a FileExistsError traceback after the set was built and recorded."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out, reason = (
        (blocker / "train.parquet", f"{blocker} is not a directory")
        if where == "under_a_file"
        else (tmp_path, "is a directory")
    )
    entities = entity_rows(tmp_path / "rows.parquet")
    args = ["historical", "--entities", str(entities), "--features", "stats:trips", "--out", str(out)]
    assert_refused(aetherctl(capsys, stats, *args), 1, f"error: cannot write --out: {out}: {reason}\n")
    assert recorded_datasets(tmp_path) == []


def test_historical_reports_the_set_it_built_when_writing_it_fails_late(
    stats: str, tmp_path: Path, capsys: Capture
) -> None:
    """Writing can still fail once the set is built (here a file size limit of 1 KiB, as a full disk
    would): the summary with the dataset hash is printed, the error names --out, and nothing else was
    lost, as the same build into a sound path shows."""
    entities = entity_rows(tmp_path / "rows.parquet")
    out = tmp_path / "sets" / "train.parquet"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", AETHER_HOME=str(tmp_path / "cli-home"))
    command = [sys.executable, "-m", "control_plane.cli.main", "--control-plane", stats]
    args = ["historical", "--entities", str(entities), "--features", "stats:trips"]
    limited = subprocess.run(  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        ["bash", "-c", 'ulimit -f 1 && exec "$@"', "aetherctl", *command, *args, "--out", str(out)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (limited.returncode, "Traceback" in limited.stderr) == (1, False), limited.stderr
    [dataset] = recorded_datasets(tmp_path)
    assert limited.stderr.startswith(f"error: cannot write --out: {out}: File too large")
    assert f"recorded as dataset {dataset}" in limited.stderr and limited.stderr.count("\n") == 1
    assert "rows: 50\n" in limited.stdout and f"dataset hash: {dataset}\n" in limited.stdout
    assert not out.exists() and list(out.parent.iterdir()) == []  # no partial file left behind

    code, printed, err = aetherctl(capsys, stats, *args, "--out", str(out))
    assert (code, err) == (0, "") and f"dataset hash: {dataset}\n" in printed
    assert pq.read_table(out).num_rows == 50


def test_audit_export_checks_its_file_before_asking_for_the_log(
    stats: str, tmp_path: Path, capsys: Capture
) -> None:
    """`audit export FILE-UNDER-A-FILE` used to end in a FileExistsError traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = blocker / "audit.jsonl"
    result = aetherctl(capsys, stats, "audit", "export", str(target))
    assert_refused(result, 1, f"error: cannot write the export: {target}: {blocker} is not a directory\n")

    code, printed, err = aetherctl(capsys, stats, "audit", "export", str(tmp_path / "audit.jsonl"))
    assert (code, err) == (0, "") and printed.startswith("exported 2 entries")  # features apply: 2 writes


@pytest.mark.parametrize("bad_id", ['"twelve"', "true", "-4", "1.5", "99999999999999999999"])
def test_a_replay_file_whose_id_is_not_a_record_id_names_its_line(
    capsys: Capture, nowhere: str, tmp_path: Path, bad_id: str
) -> None:
    corrected = tmp_path / "corrected.jsonl"
    good = '{"id": 3, "payload": {"trips": 1}}'
    corrected.write_text(good + "\n" + good.replace("3", bad_id, 1) + "\n")
    result = aetherctl(capsys, nowhere, "quarantine", "replay", "3", "--file", str(corrected))
    assert_refused(result, 1, f"{corrected}:2: id ")
    assert "is not a quarantine record id" in result[2]


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["jobs", "submit"], "spec"),
        (["feedback", "record"], "feedback"),
        (["quarantine", "replay", "3", "--file"], "corrections"),
    ],
)
def test_a_file_that_is_not_utf8_is_one_line_naming_it(
    capsys: Capture, nowhere: str, tmp_path: Path, args: list[str], what: str
) -> None:
    """A Latin-1 spec, feedback or corrections file ended in a UnicodeDecodeError traceback."""
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    result = aetherctl(capsys, nowhere, *args, str(latin1))
    assert_refused(result, 1, f"cannot read {what} '{latin1}': not UTF-8 text (byte 0xe9 at offset 9)")


def test_demo_refuses_a_home_that_is_not_empty(tmp_path: Path, capsys: Capture, nowhere: str) -> None:
    """A demo run again in its old --home mixed both runs and failed at its deployment stage, leaving the
    champion alias on a version that was not serving: such a folder is refused before anything starts."""
    home = tmp_path / "used"
    home.mkdir()
    (home / "dev").write_text("")  # not a folder: without the check, the stack's start fails at once
    assert_refused(aetherctl(capsys, nowhere, "demo", "--home", str(home)), 2, "give an empty or new one")
    assert sorted(p.name for p in home.iterdir()) == ["dev"]  # nothing started, nothing written


def test_features_apply_names_a_file_it_cannot_read_in_one_line(
    capsys: Capture, nowhere: str, tmp_path: Path
) -> None:
    """A missing definitions file was two lines, as if its content were wrong: "PATH:0: cannot read file:
    [Errno 2] No such file or directory: 'PATH'", then "error: INVALID_ARGUMENT: PATH is invalid"."""
    missing = tmp_path / "missing.yaml"
    result = aetherctl(capsys, nowhere, "features", "apply", str(missing))
    assert_refused(result, 1, f"error: cannot read the definitions: {missing}: No such file or directory")
    result = aetherctl(capsys, nowhere, "features", "apply", "--dry-run", str(tmp_path))
    assert_refused(result, 1, f"error: cannot read the definitions: {tmp_path}: Is a directory")
    # A file that reads but is not UTF-8 is still a problem of its content, located in the file.
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("entities: []  # caf\xe9\n".encode("latin-1"))
    code, _, err = aetherctl(capsys, nowhere, "features", "apply", str(latin))
    assert code == 1 and f"{latin}:0: cannot read file:" in err and "UNAVAILABLE" not in err, err
