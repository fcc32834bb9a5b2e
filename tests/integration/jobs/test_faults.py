"""Bad input and faults at submission: more GPUs than the pool, unknown feature versions and datasets,
entrypoints that do not exist (the job fails fast with the error in its log), malformed specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from clients.sdk.jobs import JobsClient
from control_plane.api.offline_features import datasets_root_of, offline_root
from control_plane.jobs.spec import spec_from_mapping, validate
from control_plane.offline.datasets import record_dataset
from control_plane.offline.store import OfflineStore
from tests.integration.jobs.conftest import ThreadedControlPlane, job_spec, states_of, wait_state
from tests.unit.offline.builders import create_view, ensure_entity, feature_spec


def test_more_gpus_than_the_pool_has_is_refused_at_submission(client: JobsClient) -> None:
    with pytest.raises(FailedPrecondition, match="requests 3 GPUs but the pool has 2"):
        client.submit(job_spec("greedy", gpus=3))
    assert client.list() == []  # no job was left waiting forever


def test_unknown_feature_versions_and_datasets_are_not_found(
    client: JobsClient, control_plane: ThreadedControlPlane, tmp_path: Path
) -> None:
    registry = control_plane.server.registry
    ensure_entity(registry)
    create_view(registry, feature_spec("activity"))
    known_hash = "ab" * 32
    record_dataset(OfflineStore(offline_root(control_plane.server.context)), known_hash, {"rows": 1})

    with pytest.raises(NotFound, match="activity"):
        client.submit(job_spec("f1", features=["activity@2:score"]))
    with pytest.raises(NotFound):
        client.submit(job_spec("f2", features=["activity@1:missing_feature"]))
    with pytest.raises(NotFound, match="no dataset"):
        client.submit(job_spec("d1", dataset={"dataset_hash": "cd" * 32}))
    with pytest.raises(NotFound, match=r"entity rows file 'rows\.parquet' not found"):
        client.submit(
            job_spec(
                "d2",
                dataset={"point_in_time": {"entity_rows_path": "rows.parquet", "features": ["activity"]}},
            )
        )
    accepted = client.submit(
        job_spec("ok", features=["activity@1:score", "activity"], dataset={"dataset_hash": known_hash})
    )
    assert accepted.state == pb.JOB_STATE_QUEUED and list(accepted.spec.features) == [
        "activity@1:score",
        "activity",
    ]


def test_entity_rows_are_looked_up_as_the_training_set_call_will_under_the_datasets_root(
    client: JobsClient, control_plane: ThreadedControlPlane, tmp_path: Path
) -> None:
    # The job's GetHistoricalFeatures call reads entity rows only under the datasets root, a relative
    # path taken under it: submit checks the same, so such a job is refused now, not attempts later.
    registry = control_plane.server.registry
    ensure_entity(registry)
    create_view(registry, feature_spec("activity"))
    root = datasets_root_of(control_plane.server.context)
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / "rows.parquet").write_bytes(b"")  # existence is what submit checks
    outside = tmp_path / "rows.parquet"
    outside.write_bytes(b"")

    def point_in_time(path: str) -> dict[str, Any]:
        return {"point_in_time": {"entity_rows_path": path, "features": ["activity"]}}

    with pytest.raises(PermissionDenied, match="outside the datasets root"):
        client.submit(job_spec("outside", dataset=point_in_time(str(outside))))
    with pytest.raises(PermissionDenied, match="outside the datasets root"):
        client.submit(job_spec("escape", dataset=point_in_time("../rows.parquet")))
    for path in ("rows.parquet", str(Path(root) / "rows.parquet")):
        assert client.submit(job_spec(f"inside-{len(path)}", dataset=point_in_time(path))).state == (
            pb.JOB_STATE_QUEUED
        )


def test_a_missing_entrypoint_fails_fast_with_the_error_in_its_log(client: JobsClient) -> None:
    module = client.submit(
        {"name": "no-module", "entrypoint": {"module": "no_such_package.train"}, "max_retries": 3}
    )
    assert module.state == pb.JOB_STATE_FAILED and states_of(module) == ["QUEUED", "FAILED"]
    assert (
        module.reason
        == "entrypoint module 'no_such_package.train' not found (no 'no_such_package' on the Python path)"
    )
    assert (
        "error: entrypoint module 'no_such_package.train' not found"
        in b"".join(client.logs(module.job_id)).decode()
    )

    command = client.submit({"name": "no-command", "entrypoint": {"command": ["no-such-program-xyz", "--x"]}})
    assert command.state == pb.JOB_STATE_FAILED
    assert "no-such-program-xyz" in b"".join(client.logs(command.job_id)).decode()


def test_a_module_missing_only_at_launch_fails_without_retries(client: JobsClient) -> None:
    # The package exists (the control plane finds it at submission) but the module inside does not:
    # the launcher finds out in the job's environment and the job fails at once, retries or not.
    job = client.submit(
        {"name": "late", "entrypoint": {"module": "tests.integration.jobs.programs.nope"}, "max_retries": 2}
    )
    done = wait_state(client, job.job_id, pb.JOB_STATE_FAILED, pb.JOB_STATE_SUCCEEDED)
    assert (
        done.attempt == 1
        and done.reason == "entrypoint module 'tests.integration.jobs.programs.nope' not found"
    )
    assert "[aether] error: entrypoint module" in b"".join(client.logs(job.job_id)).decode()


def test_malformed_specs_are_invalid_arguments(client: JobsClient) -> None:
    with pytest.raises(InvalidArgument, match="job name"):
        client.submit(job_spec("Bad Name"))
    with pytest.raises(InvalidArgument, match="exactly one"):
        client.submit({"name": "both", "entrypoint": {"module": "a", "command": ["b"]}})
    with pytest.raises(InvalidArgument, match="malformed job spec"):
        client.submit({"name": "typo", "entrypoint": {"module": "a"}, "gpu": 1})
    with pytest.raises(InvalidArgument, match="timeout_s"):
        client.submit(job_spec("neg", timeout_s=-1))
    # Accepted, it overflowed the supervisor's microseconds on every tick: no job was scheduled again.
    with pytest.raises(InvalidArgument, match=r"timeout_s .* to 31536000 \(one year\), got 1e\+303"):
        client.submit(job_spec("huge", timeout_s=1e303))
    # Hyperparameters without a text form would fail the job at run time, on every attempt.
    with pytest.raises(InvalidArgument, match=r"hyperparameter 'optim': .* got an object"):
        client.submit(job_spec("nested", hyperparameters={"optim": {"lr": 0.1}}, max_retries=2))
    with pytest.raises(InvalidArgument, match=r"hyperparameter 'lr': .* got null"):
        client.submit(job_spec("null", hyperparameters={"lr": None}))
    with pytest.raises(FailedPrecondition, match="already ended"):
        failed = client.submit({"name": "gone", "entrypoint": {"module": "no_such_package"}})
        client.cancel(failed.job_id)
    with pytest.raises(NotFound):
        client.get("unknown")


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        ("x" * 200, "experiment name 'x+'... is longer than 128 characters"),
        ("   ", "experiment name must not be empty"),
        ("exp\x00", "experiment name contains a NUL byte"),
    ],
    ids=["too-long", "blank", "nul"],
)
def test_an_experiment_name_tracking_refuses_is_an_invalid_argument_at_submission(
    client: JobsClient, experiment: str, message: str
) -> None:
    # It was QUEUED, then every attempt failed on creating the experiment (or starting with it in its
    # environment), each spending its devices and one of the retries on the same error.
    with pytest.raises(InvalidArgument, match=message):
        client.submit(job_spec("bad-experiment", experiment=experiment, max_retries=2))
    longest = "x" * 128
    assert validate(spec_from_mapping(job_spec("e", experiment=longest))).experiment == longest


def test_an_unset_or_unknown_state_filter_is_an_invalid_argument(client: JobsClient) -> None:
    with pytest.raises(InvalidArgument, match="JOB_STATE_UNSPECIFIED, not a job state; use JOB_STATE_QUEUED"):
        client.list_page([pb.JOB_STATE_UNSPECIFIED])
    with pytest.raises(InvalidArgument, match="unknown value 99"):  # e.g. a client with a newer proto
        client.list_page([pb.JOB_STATE_RUNNING, cast(pb.JobState, 99)])


def test_a_request_without_a_job_id_is_an_invalid_argument_not_an_unknown_job(client: JobsClient) -> None:
    """An empty job id (a script's unset variable) was NOT_FOUND "job '' not found", as if a job had been
    named and was missing; tracking refuses an empty run id the same way (INVALID_ARGUMENT)."""
    for call in (
        lambda: client.get(""),
        lambda: client.cancel(""),
        lambda: b"".join(client.logs("")),
        lambda: list(client.watch("", timeout=10)),
    ):
        with pytest.raises(InvalidArgument, match="a job_id is required"):
            call()
    with pytest.raises(NotFound, match="job 'unknown' not found"):
        client.get("unknown")


def test_a_log_offset_at_or_past_the_end_reads_nothing_for_any_uint64(client: JobsClient) -> None:
    job = wait_state(client, client.submit(job_spec("short")).job_id, pb.JOB_STATE_SUCCEEDED)
    log = b"".join(client.logs(job.job_id))
    assert log and b"".join(client.logs(job.job_id, offset=len(log) - 5)) == log[-5:]
    for offset in (len(log), 10**6, 2**63 - 1, 2**63, 2**64 - 1):  # seek() refuses 2**63 and up
        assert b"".join(client.logs(job.job_id, offset=offset)) == b"", offset


def test_entity_rows_paths_no_file_can_have_are_invalid_arguments_naming_the_field(
    client: JobsClient, control_plane: ThreadedControlPlane
) -> None:
    """A NUL byte (Path.resolve's ValueError), a name past the file system's limit (os.stat's
    ENAMETOOLONG) and a symbolic-link loop failed Submit as INTERNAL."""
    registry = control_plane.server.registry
    ensure_entity(registry)
    create_view(registry, feature_spec("activity"))
    root = Path(datasets_root_of(control_plane.server.context))
    root.mkdir(parents=True, exist_ok=True)
    (root / "loop").symlink_to(root / "loop")
    field = r"dataset\.point_in_time\.entity_rows_path"
    for path, message in [
        ("a\x00b.parquet", f"{field} contains a NUL byte"),
        ("a" * 5000 + ".parquet", f"{field} is too long for a file name"),
        ("loop/rows.parquet", f"{field} 'loop/rows.parquet' cannot be resolved"),
    ]:
        dataset = {"point_in_time": {"entity_rows_path": path, "features": ["activity"]}}
        with pytest.raises(InvalidArgument, match=message):
            client.submit(job_spec("rows", dataset=dataset))
    assert client.list() == []
