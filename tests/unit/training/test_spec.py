"""The job spec as the job reads it: from the JSON the executor writes for an ``aether.v1.JobSpec``."""

from __future__ import annotations

import pytest

from clients.errors import InvalidArgument
from control_plane.jobs.spec import spec_from_mapping, spec_to_json
from control_plane.training.spec import DEFAULT_KEEP_LAST, Hyperparameters, TrainingSpec


def from_job_spec(data: dict[str, object]) -> TrainingSpec:
    return TrainingSpec.from_json(spec_to_json(spec_from_mapping(data)))


def test_reads_the_executor_spec_file() -> None:
    spec = from_job_spec(
        {
            "name": "churn",
            "entrypoint": {"module": "control_plane.training.trainer"},
            "dataset": {
                "point_in_time": {"entity_rows_path": "/data/rows.parquet", "timestamp_column": "ts"}
            },
            "features": ["stats@2:x", "stats@2:y"],
            "hyperparameters": {
                "epochs": 20,
                "lr": 0.5,
                "hidden": [64, 32],
                "task": "regression",
                "shuffle": True,
            },
            "checkpoint_every_epochs": 5,
            "experiment": "churn-exp",
            "gpus": 1,
        }
    )
    assert spec.name == "churn" and spec.experiment == "churn-exp"
    # Struct numbers are doubles on the wire: integral ones come back without a fraction.
    assert spec.hyperparameters == {
        "epochs": "20",
        "lr": "0.5",
        "hidden": "64,32",
        "task": "regression",
        "shuffle": "true",
    }
    assert spec.dataset.entity_rows_path == "/data/rows.parquet" and spec.dataset.timestamp_column == "ts"
    assert spec.dataset.features == ("stats@2:x", "stats@2:y")  # the query defaults to the spec's features
    assert spec.feature_refs == ("stats@2:x", "stats@2:y")
    assert (spec.checkpoint_interval, spec.keep_last) == (5, DEFAULT_KEEP_LAST)


def test_hash_only_dataset_and_defaults() -> None:
    spec = from_job_spec(
        {
            "name": "j",
            "entrypoint": {"command": ["train.sh"]},
            "dataset": {"dataset_hash": "ab" * 32},
            "hyperparameters": {"keep_last_checkpoints": 5},
        }
    )
    assert spec.dataset.dataset_hash == "ab" * 32 and not spec.dataset.has_query
    assert (spec.checkpoint_interval, spec.keep_last) == (1, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [("[]", "JSON object"), ("{", "not valid JSON"), ('{"hyperparameters": {"a": {"b": 1}}}', "'a'")],
)
def test_malformed_specs_are_invalid_argument(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        TrainingSpec.from_json(text)


def test_typed_hyperparameters() -> None:
    hp = Hyperparameters({"n": "3", "x": "0.25", "on": "Yes", "off": "0", "sizes": "8, 4", "bad": "x"})
    assert (hp.integer("n", 0), hp.number("x", 0.0), hp.flag("on", False), hp.flag("off", True)) == (
        3,
        0.25,
        True,
        False,
    )
    assert (
        hp.integers("sizes", ()) == (8, 4)
        and hp.integer("missing", 7) == 7
        and hp.text("missing", "d") == "d"
    )
    for read in (hp.integer, hp.number):
        with pytest.raises(InvalidArgument, match="'bad'"):
            read("bad", 0)
    with pytest.raises(InvalidArgument, match="boolean"):
        hp.flag("bad", False)
    with pytest.raises(InvalidArgument, match="list of integers"):
        hp.integers("bad", ())
