"""The part of a job spec that the code inside the job reads: name, hyperparameters, dataset reference,
feature refs, checkpoint settings.

The executor writes the full spec as JSON (``AETHER_JOB_SPEC``); this reader takes only what training
needs and ignores the rest (GPUs, priority, timeout belong to the scheduler), so the two sides can grow
independently. Hyperparameters arrive as strings or JSON scalars and are kept as strings, like the
model registry and tracking store them; the typed getters parse them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.errors import InvalidArgument

DEFAULT_KEEP_LAST = 3
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class DatasetRef:
    """A point-in-time query (entity rows Parquet path + feature refs) and/or the expected dataset hash.

    With a query, the training set is built by the offline store; a hash given as well must match what
    the query returns (the job fails loudly otherwise: the data under the spec changed)."""

    entity_rows_path: str = ""
    features: tuple[str, ...] = ()
    timestamp_column: str = ""
    dataset_hash: str = ""

    @property
    def has_query(self) -> bool:
        return bool(self.entity_rows_path)


@dataclass(frozen=True)
class TrainingSpec:
    name: str
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    dataset: DatasetRef = field(default_factory=DatasetRef)
    feature_refs: tuple[str, ...] = ()
    #: Take a checkpoint every this many epochs (the built-in trainer's unit).
    checkpoint_interval: int = 1
    #: Checkpoints kept (hyperparameter ``keep_last_checkpoints``).
    keep_last: int = DEFAULT_KEEP_LAST
    experiment: str = ""

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"job spec is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidArgument("job spec must be a JSON object")
        return cls.from_mapping(raw)

    @classmethod
    def from_file(cls, path: Path) -> TrainingSpec:
        return cls.from_json(Path(path).read_text())

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> TrainingSpec:
        """From the JSON form of ``aether.v1.JobSpec`` (field names as in the .proto)."""
        dataset_raw = _object(raw.get("dataset"), "dataset")
        query = _object(dataset_raw.get("point_in_time"), "dataset.point_in_time")
        feature_refs = _strings(raw.get("features") or (), "features")
        hyperparameters = {
            str(k): hyperparameter_text(k, v)
            for k, v in _object(raw.get("hyperparameters"), "hyperparameters").items()
        }
        return cls(
            name=str(raw.get("name") or ""),
            hyperparameters=hyperparameters,
            dataset=DatasetRef(
                entity_rows_path=str(query.get("entity_rows_path") or ""),
                # The query's features default to the spec's feature refs: most specs name them once.
                features=_strings(query.get("features") or feature_refs, "dataset.point_in_time.features"),
                timestamp_column=str(query.get("timestamp_column") or ""),
                dataset_hash=str(dataset_raw.get("dataset_hash") or ""),
            ),
            feature_refs=feature_refs,
            checkpoint_interval=max(1, int(raw.get("checkpoint_every_epochs") or 1)),
            keep_last=keep_last_checkpoints(Hyperparameters(hyperparameters)),
            experiment=str(raw.get("experiment") or ""),
        )


def keep_last_checkpoints(hyperparameters: Hyperparameters) -> int:
    """The checkpoints a job keeps (hyperparameter ``keep_last_checkpoints``); INVALID_ARGUMENT naming it
    when it is not an integer of at least 1. A smaller value was turned into 1 without a word: a job
    cannot resume without the newest checkpoint, and asking to keep none is not something to guess at."""
    keep_last = hyperparameters.integer("keep_last_checkpoints", DEFAULT_KEEP_LAST)
    if keep_last < 1:
        raise InvalidArgument(f"hyperparameter 'keep_last_checkpoints' must be >= 1, got {keep_last}")
    return keep_last


class Hyperparameters:
    """Typed reads of string hyperparameters; a value that does not parse is INVALID_ARGUMENT naming it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def text(self, key: str, default: str) -> str:
        return self.values.get(key, default)

    def integer(self, key: str, default: int) -> int:
        return int(self._parse(key, default, int))

    def number(self, key: str, default: float) -> float:
        return float(self._parse(key, default, float))

    def flag(self, key: str, default: bool) -> bool:
        if key not in self.values:
            return default
        text = self.values[key].strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidArgument(f"hyperparameter {key!r}: {self.values[key]!r} is not a boolean")

    def integers(self, key: str, default: Sequence[int]) -> tuple[int, ...]:
        """A comma-separated list of integers, e.g. ``hidden=64,32``."""
        if key not in self.values:
            return tuple(default)
        text = self.values[key].strip()
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise InvalidArgument(f"hyperparameter {key!r}: {text!r} is not a list of integers") from None

    def _parse(self, key: str, default: Any, kind: type[Any]) -> Any:
        if key not in self.values:
            return default
        try:
            return kind(self.values[key])
        except ValueError:
            raise InvalidArgument(
                f"hyperparameter {key!r}: {self.values[key]!r} is not a valid {kind.__name__}"
            ) from None


def _strings(values: Any, field_name: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidArgument(f"job spec: {field_name!r} must be a list of strings")
    return tuple(str(value) for value in values)


def _object(value: Any, field_name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"job spec: {field_name!r} must be an object")
    return value


def hyperparameter_text(key: Any, value: Any) -> str:
    """A hyperparameter as text, the one spelling tracking params and model versions should share. JSON
    numbers from a protobuf Struct are doubles, so ``20`` arrives as ``20.0``: integral numbers are
    written without the fraction. A list becomes comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list):
        return ",".join(hyperparameter_text(key, item) for item in value)
    got = {dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    raise InvalidArgument(
        f"hyperparameter {key!r}: expected a string, a number, a boolean or a list, got {got}"
    )
