"""Spec validation and its JSON file, the device pool from configuration, the launch-environment
contract, and the job command (torchrun for several GPUs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from clients.aether.v1 import jobs_pb2 as pb
from clients.env_values import ConfigurationError
from clients.errors import InvalidArgument
from control_plane.jobs.executor import job_argv
from control_plane.jobs.launch_env import LaunchEnv, inherited
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.spec import (
    BUILT_IN_TRAINER,
    MAX_CPUS,
    MAX_GPUS,
    MAX_MEMORY_MB,
    MAX_TIMEOUT_S,
    entrypoint_problem,
    spec_from_mapping,
    spec_to_json,
    validate,
)
from control_plane.training.spec import Hyperparameters, TrainingSpec
from control_plane.training.trainer.config import TrainerConfig

REPO_ROOT = Path(__file__).resolve().parents[3]


def spec(**fields: object) -> pb.JobSpec:
    return spec_from_mapping({"name": "train", "entrypoint": {"module": "json.tool"}, **fields})


#: A dataset the built-in trainer can be given (by hash: validate looks at the spec alone).
SOME_DATASET = {"dataset_hash": "ab" * 32}


def test_validate_fills_the_experiment_and_refuses_bad_specs() -> None:
    assert validate(spec()).experiment == "train"
    assert validate(spec(experiment="e")).experiment == "e"
    for bad, message in [
        (spec(name="UPPER"), "job name"),
        (spec_from_mapping({"name": "x"}), "exactly one"),
        (spec(entrypoint={"module": "not a module"}), "dotted Python module"),
        (pb.JobSpec(name="x", entrypoint=pb.Entrypoint(module="m"), timeout_s=float("inf")), "timeout_s"),
        (spec(env={"1BAD": "x"}), "environment variable"),
        (spec(max_retries=1001), "max_retries 1001 exceeds 1000"),
        (spec(dataset={"dataset_hash": "xyz"}), "64 lowercase hex"),
        (spec(dataset={"point_in_time": {"features": ["v"]}}), "entity_rows_path"),
        (spec(hyperparameters={"lr": 0.1, "optim": {"lr": 0.1}}), "hyperparameter 'optim': .* got an object"),
        (spec(hyperparameters={"momentum": None}), "hyperparameter 'momentum': .* got null"),
        (spec(hyperparameters={"layers": [64, {"units": 3}]}), "hyperparameter 'layers': .* got an object"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            validate(bad)
    with pytest.raises(InvalidArgument, match="malformed job spec"):
        spec_from_mapping({"name": "x", "gpus": "many"})
    assert validate(spec(max_retries=1000)).max_retries == 1000
    fine = {"lr": 0.1, "name": "mlp", "shuffle": True, "layers": [64, 32], "epochs": 20}
    assert validate(spec(hyperparameters=fine)).hyperparameters == spec(hyperparameters=fine).hyperparameters


def test_timeout_cpus_and_memory_past_their_bounds_are_refused_naming_field_and_bound() -> None:
    # A finite timeout of 1e303 s was accepted; the supervisor's microseconds overflowed on it, on every
    # tick, and no job was scheduled again. The bounds are accepted; one past them is refused.
    assert MAX_TIMEOUT_S == 365 * 24 * 3600
    year = r"timeout_s must be a number of seconds from 0 \(no timeout\) to 31536000 \(one year\)"
    for bad, message in [
        (spec(timeout_s=1e303), rf"{year}, got 1e\+303"),
        (spec(timeout_s=MAX_TIMEOUT_S + 1), rf"{year}, got 31536001.0"),
        (spec(timeout_s=-1), rf"{year}, got -1.0"),
        (spec(cpus=1e300), rf"cpus must be a number from 0 to {MAX_CPUS}, got 1e\+300"),
        (spec(memory_mb=2**64 - 1), rf"memory_mb {2**64 - 1} exceeds {MAX_MEMORY_MB}"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            validate(bad)
    fine = validate(spec(timeout_s=MAX_TIMEOUT_S, cpus=MAX_CPUS, memory_mb=MAX_MEMORY_MB))
    assert (fine.timeout_s, fine.cpus, fine.memory_mb) == (MAX_TIMEOUT_S, MAX_CPUS, MAX_MEMORY_MB)
    assert MAX_MEMORY_MB * 2**20 <= 2**63 - 1  # its size in bytes fits a signed 64-bit integer


def test_nul_bytes_and_non_finite_hyperparameters_are_refused_at_submission() -> None:
    """A NUL in an env value or argument passed validation, then every attempt failed to start (ValueError
    from exec) and the job ended "lost"; a NaN hyperparameter failed the submission as INTERNAL."""

    def with_hyperparameter(value: object) -> pb.JobSpec:
        job = spec()
        job.hyperparameters.update({"lr": value})
        return job

    for bad, message in [
        (spec(env={"FOO": "a\x00b"}), r"env\['FOO'\] contains a NUL byte"),
        (spec(entrypoint={"module": "json.tool", "args": ["--x", "a\x00"]}), r"args\[1\] contains a NUL"),
        (spec(entrypoint={"command": ["python\x00"]}), r"command\[0\] contains a NUL"),
        (with_hyperparameter(float("nan")), "hyperparameter 'lr' is nan: give a finite number"),
        (with_hyperparameter([1.0, float("-inf")]), "hyperparameter 'lr' is -inf"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            validate(bad)


def test_the_built_in_trainer_s_settings_are_checked_at_submission() -> None:
    """A negative seed (or epochs 0, a label missing) passed Submit and failed every attempt."""

    def trainer(**hyperparameters: object) -> pb.JobSpec:
        return spec(
            entrypoint={"module": "control_plane.training.trainer"},
            hyperparameters=hyperparameters,
            dataset=SOME_DATASET,
        )

    for bad, message in [
        (trainer(label="y", seed=-1), "hyperparameter 'seed' must be >= 0"),
        (trainer(label="y", weight_decay=-0.1), "hyperparameter 'weight_decay' must be >= 0"),
        (trainer(label="y", epochs=0), "hyperparameter 'epochs' must be >= 1"),
        (trainer(epochs=3), "hyperparameter 'label'"),
        (trainer(label="y", keep_last_checkpoints="few"), "hyperparameter 'keep_last_checkpoints'"),
        (trainer(label="y", log_every_batch="maybe"), "hyperparameter 'log_every_batch'"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            validate(bad)
    assert validate(trainer(label="y", seed=3, hidden=[8, 4])).hyperparameters["seed"] == 3
    # Another entrypoint's hyperparameters mean what that job makes of them.
    validate(spec(hyperparameters={"seed": -1}))


@pytest.mark.parametrize(
    "dataset",
    [None, {}, {"point_in_time": None}],
    ids=["no-dataset", "empty-dataset", "empty-query"],
)
def test_the_built_in_trainer_without_a_dataset_is_refused_at_submission(dataset: object) -> None:
    """Accepted, every attempt failed the same way (``load_training_data``: "the dataset needs a
    point-in-time query ... or a hash"), spending its GPUs and retries on a spec that can never train."""
    fields: dict[str, object] = {
        "entrypoint": {"module": BUILT_IN_TRAINER},
        "hyperparameters": {"label": "y"},
    }
    if dataset is not None:
        fields["dataset"] = dataset
    with pytest.raises(InvalidArgument, match=r"the built-in trainer .* needs a dataset: set dataset\."):
        validate(spec(**fields, max_retries=3))
    # Either source will do; another entrypoint may get its data however it likes.
    pit = {"point_in_time": {"entity_rows_path": "rows.parquet", "features": ["v@1:f"]}}
    for source in (SOME_DATASET, pit):
        assert validate(spec(**{**fields, "dataset": source})).dataset.WhichOneof("source")
    validate(spec(hyperparameters={"label": "y"}))


@pytest.mark.parametrize("value", [0, -2, "0"])
def test_keep_last_checkpoints_below_one_is_refused_at_submission_for_every_job(value: object) -> None:
    """0 and -2 passed Submit (only the parse was checked) and the job silently kept 1 checkpoint."""
    trainer = spec(
        entrypoint={"module": "control_plane.training.trainer"},
        hyperparameters={"label": "y"},
        dataset=SOME_DATASET,
    )
    for job in (trainer, spec()):  # the training SDK of any job reads it
        job.hyperparameters.update({"keep_last_checkpoints": value})
        with pytest.raises(InvalidArgument, match="hyperparameter 'keep_last_checkpoints' must be >= 1"):
            validate(job)
        with pytest.raises(InvalidArgument, match="'keep_last_checkpoints' must be >= 1"):
            TrainingSpec.from_json(spec_to_json(job))
    trainer.hyperparameters.update({"keep_last_checkpoints": 1})
    assert TrainingSpec.from_json(spec_to_json(validate(trainer))).keep_last == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"entrypoint": "control_plane.training.trainer"},
            "entrypoint must be a mapping of aether.v1.Entrypoint",
        ),
        (
            {"dataset": {"point_in_time": "rows.parquet"}},
            "dataset.point_in_time must be a mapping of aether.v1.PointInTimeQuery fields",
        ),
    ],
)
def test_a_message_field_given_as_a_string_says_it_must_be_a_mapping(
    fields: dict[str, object], message: str
) -> None:
    # protobuf's parser read the string as field names: "Entrypoint has no field named 'c'".
    with pytest.raises(InvalidArgument, match=f"malformed job spec: {message}"):
        spec_from_mapping({"name": "train", **fields})
    # A key left empty in YAML (null) stays what the parser makes of it: unset.
    assert not spec_from_mapping({"name": "train", "dataset": None}).HasField("dataset")


def test_the_example_spec_in_the_readme_is_a_valid_job_spec_for_the_built_in_trainer() -> None:
    data = yaml.safe_load((REPO_ROOT / "examples" / "train.yaml").read_text(encoding="utf-8"))
    example = validate(spec_from_mapping(data))
    assert entrypoint_problem(example) is None
    assert example.dataset.point_in_time.entity_rows_path and list(example.dataset.point_in_time.features)
    # As the job reads it (AETHER_JOB_SPEC): the built-in trainer's required hyperparameters are there.
    training = TrainingSpec.from_json(spec_to_json(example))
    config = TrainerConfig.from_hyperparameters(
        Hyperparameters(training.hyperparameters), job_name=training.name
    )
    assert config.label == "demand"


def test_the_spec_file_has_every_field_with_plain_json_hyperparameters() -> None:
    data = json.loads(spec_to_json(validate(spec(hyperparameters={"lr": 0.5, "tags": ["a"]}, gpus=2))))
    assert data["hyperparameters"] == {"lr": 0.5, "tags": ["a"]}
    assert data["gpus"] == 2 and data["max_retries"] == 0 and data["checkpoint_every_epochs"] == 0
    assert data["entrypoint"] == {"module": "json.tool", "command": [], "args": []}


def test_entrypoint_problem_looks_on_the_jobs_paths(tmp_path: Path) -> None:
    assert entrypoint_problem(spec()) is None
    assert "not found" in (entrypoint_problem(spec(entrypoint={"module": "zz_nope_pkg.x"})) or "")
    (tmp_path / "zz_local_pkg.py").write_text("")
    assert (
        entrypoint_problem(spec(entrypoint={"module": "zz_local_pkg"}, env={"PYTHONPATH": str(tmp_path)}))
        is None
    )
    assert entrypoint_problem(spec(entrypoint={"command": [sys.executable]})) is None
    assert "not found on PATH" in (entrypoint_problem(spec(entrypoint={"command": ["zz-no-such-cmd"]})) or "")
    assert "not executable" in (
        entrypoint_problem(spec(entrypoint={"command": ["./missing.sh"]}), tmp_path) or ""
    )


def test_pool_from_configuration() -> None:
    assert DevicePool.from_config("3").devices == ("0", "1", "2")
    assert DevicePool.from_config("gpu0, gpu1").devices == ("gpu0", "gpu1")
    assert DevicePool.detect({"AETHER_GPUS": "2"}) == DevicePool(("0", "1"), "config")
    assert DevicePool.from_config("0").size == 0
    with pytest.raises(ConfigurationError):
        DevicePool.from_config("a,a")


def test_pool_without_configuration_or_nvml_is_empty() -> None:
    # nvidia-ml-py is not installed in the test environment (it is the `gpu` extra), so NVML finds nothing.
    assert DevicePool.detect({}) == DevicePool((), "none")


def test_launch_env_round_trips_through_the_environment(tmp_path: Path) -> None:
    env = LaunchEnv(
        "j1", 2, tmp_path / "spec.json", tmp_path / "ckpt", "127.0.0.1:1", "exp", "run1", ("0", "3")
    )
    variables = env.to_env()
    assert variables["CUDA_VISIBLE_DEVICES"] == "0,3" and variables["AETHER_JOB_ATTEMPT"] == "2"
    assert LaunchEnv.from_env(variables) == env
    assert env.outputs_path == tmp_path / "outputs.json"
    cpu = LaunchEnv.from_env({**variables, "CUDA_VISIBLE_DEVICES": ""})
    assert cpu.devices == ()
    with pytest.raises(KeyError, match="AETHER_JOB_ID"):
        LaunchEnv.from_env({})
    assert LaunchEnv.from_env({**variables, "RANK": "1"}).rank == 1
    for name, value in (("RANK", "one"), ("RANK", "-1"), ("AETHER_JOB_ATTEMPT", "²")):
        with pytest.raises(ValueError, match=f"{name}={value!r}: expected a whole number"):
            LaunchEnv.from_env({**variables, name: value})


def test_a_job_inherits_only_the_allow_listed_part_of_the_control_planes_environment() -> None:
    server = {
        "PATH": "/bin", "LC_ALL": "C", "CUDA_HOME": "/cuda", "NCCL_DEBUG": "WARN", "AETHER_TOKEN": "t",
        "AETHER_ADMIN_TOKEN": "a", "AETHER_READONLY_TOKEN": "r", "AETHER_DB_URL": "postgresql://u:p@h/d",
        "AETHER_REDIS_URL": "redis://:p@h/0", "AWS_SECRET_ACCESS_KEY": "s", "AETHER_JOBS_DIR": "/j",
        "PATHX": "not PATH", "XLC_ALL": "not a locale",
    }  # fmt: skip
    assert inherited(server) == {
        "PATH": "/bin", "LC_ALL": "C", "CUDA_HOME": "/cuda", "NCCL_DEBUG": "WARN", "AETHER_TOKEN": "t",
    }  # fmt: skip
    # A spec naming its own token (either way) replaces both: the SDK reads AETHER_TOKEN before the file.
    for own in ({"AETHER_TOKEN_FILE": "/mine"}, {"AETHER_TOKEN": "mine"}):
        kept = inherited({**server, "AETHER_TOKEN_FILE": "/server"}, own)
        assert "AETHER_TOKEN" not in kept and "AETHER_TOKEN_FILE" not in kept


def test_job_argv_uses_torchrun_for_several_gpus() -> None:
    module = validate(spec(entrypoint={"module": "pkg.train", "args": ["--x"]}))
    assert job_argv(module, "py") == ["py", "-m", "pkg.train", "--x"]
    module.gpus = 4
    assert job_argv(module, "py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "pkg.train", "--x",
    ]  # fmt: skip
    command = validate(spec(entrypoint={"command": ["./run.sh", "a"], "args": ["b"]}, gpus=2))
    assert job_argv(command, "py")[-5:] == ["--nproc_per_node=2", "--no-python", "./run.sh", "a", "b"]
    command.gpus = 1
    assert job_argv(command, "py") == ["./run.sh", "a", "b"]


def test_the_built_in_trainer_takes_several_gpus_up_to_the_limit() -> None:
    # It trains data-parallel under torchrun now (tests/integration/training/test_data_parallel.py);
    # before, a job of it with gpus > 1 was refused.
    trainer = {
        "entrypoint": {"module": BUILT_IN_TRAINER},
        "hyperparameters": {"label": "y"},
        "dataset": SOME_DATASET,
    }
    assert validate(spec(**trainer, gpus=1)).gpus == 1
    assert validate(spec(**trainer, gpus=2)).gpus == 2
    assert job_argv(validate(spec(**trainer, gpus=2)), "py")[1:5] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
    ]  # fmt: skip
    with pytest.raises(InvalidArgument, match=f"gpus {MAX_GPUS + 1} exceeds {MAX_GPUS}"):
        validate(spec(**trainer, gpus=MAX_GPUS + 1))


def test_the_nvml_pool_is_the_control_plane_s_own_cuda_visible_devices() -> None:
    # Before, a control plane started with CUDA_VISIBLE_DEVICES=2,3 handed jobs GPUs 0..N-1 of the host.
    assert DevicePool.from_nvml(4, None) == DevicePool(("0", "1", "2", "3"), "nvml")
    assert DevicePool.from_nvml(4, "2,3") == DevicePool(("2", "3"), "nvml")
    assert DevicePool.from_nvml(4, " 3 , 1 ") == DevicePool(("3", "1"), "nvml")
    uuids = "GPU-8e0c1c8a-1b1f-4b4c-9e3e-000000000001,GPU-8e0c1c8a-1b1f-4b4c-9e3e-000000000002"
    assert DevicePool.from_nvml(8, uuids).devices == tuple(uuids.split(","))
    # CUDA reads up to the first entry that hides the rest: -1, an index the host lacks, or nothing.
    assert DevicePool.from_nvml(4, "1,-1,2").devices == ("1",)
    assert DevicePool.from_nvml(4, "1,7,2").devices == ("1",)
    assert DevicePool.from_nvml(4, "") == DevicePool((), "none")
    assert DevicePool.from_nvml(4, "-1") == DevicePool((), "none")
    assert DevicePool.from_nvml(0, "0,1") == DevicePool((), "none")  # no GPU seen: CPU jobs only
    # AETHER_GPUS still wins over both.
    assert DevicePool.detect({"AETHER_GPUS": "2", "CUDA_VISIBLE_DEVICES": "5"}).devices == ("0", "1")


def test_every_job_numbers_gpus_in_pci_bus_order_as_nvml_does(tmp_path: Path) -> None:
    # The pool's indices are NVML's (PCI bus order); CUDA's default order is fastest first.
    env = LaunchEnv("j1", 1, tmp_path / "spec.json", tmp_path / "ckpt", "127.0.0.1:1", "exp", "run1", ("1",))
    assert env.to_env()["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cpu = LaunchEnv("j1", 1, tmp_path / "spec.json", tmp_path / "ckpt", "127.0.0.1:1", "exp", "run1")
    assert cpu.to_env()["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
