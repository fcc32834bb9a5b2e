"""What the data plane needs to serve one model version: a plain, frozen description built either from a
static model config (``--model-config``) or from a deployment plan streamed by the control plane.

The spec carries everything (artifact checksum and location, signature, feature refs, batching knobs), so
the data plane never looks anything up in SQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clients.env_values import ConfigurationError
from clients.errors import InvalidArgument
from clients.serving_rules import MAX_WARMUP_REQUESTS, default_problem
from data_plane.refs import REQUEST_PREFIX, parse_ref

DYNAMIC = -1


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name: "float32", "int64", ...
    shape: tuple[int, ...]  # -1 = dynamic (the first dimension is the batch)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype)

    def describe(self) -> str:
        dims = ", ".join("-1" if d == DYNAMIC else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(name=str(data["name"]), dtype=str(np.dtype(data["dtype"])), shape=tuple(data["shape"]))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    version: int
    artifact_sha256: str
    # Where the data plane fetches the artifact: a local path or a pyarrow.fs URI of the artifact store.
    artifact_uri: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Online features fetched for Predict, in model-input order (they fill the first input's columns).
    feature_refs: tuple[str, ...] = ()
    warmup_requests: int = 10
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    # True: the model takes non-finite values (NaN, ±inf) and handles them itself, typically because it
    # imputes missing values itself (a registered version whose signature says ``imputes_missing``, as the
    # built-in trainer's do, gets it whatever its deployment says). Then ModelInfer lets NaN through and
    # Predict feeds a missing stored feature of a float input as NaN. False: non-finite input values are
    # answered with INVALID_ARGUMENT instead of reaching the model, and a missing feature is fed as 0.
    allow_non_finite: bool = False
    # Predict for an entity with no stored features at all: "error" (NOT_FOUND for that row) or "defaults"
    # (served, each of its features filled as any missing value is).
    missing_entity_policy: str = "error"
    # One per model input column: what a missing stored feature (no key, or a null) becomes, for every
    # entity and whatever the policy; it takes precedence over NaN and 0. Empty: NaN or 0, as above.
    feature_defaults: tuple[float, ...] = field(default=())
    # Recorded warm-up requests (an .npz with one array per input, no object arrays), at a path or any URI
    # the artifact may have (read the same way); empty = synthetic from the signature.
    warmup_samples_uri: str = ""

    def __post_init__(self) -> None:
        # A hex digest in either case names one artifact: normalised here, once, so that every comparison
        # agrees with fetch_verified (which lowercased): the same hash in capitals was refused by a loaded
        # version as "a version's artifact cannot change".
        object.__setattr__(self, "artifact_sha256", self.artifact_sha256.lower())

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    def signature(self) -> str:
        return "inputs (" + "; ".join(t.describe() for t in self.inputs) + ")"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "artifact_sha256": self.artifact_sha256,
            "artifact_uri": self.artifact_uri,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "feature_refs": list(self.feature_refs),
            "warmup_requests": self.warmup_requests,
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_us": self.max_queue_delay_us,
            "allow_non_finite": self.allow_non_finite,
            "missing_entity_policy": self.missing_entity_policy,
            "feature_defaults": list(self.feature_defaults),
            "warmup_samples_uri": self.warmup_samples_uri,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> ModelSpec:
        uri = _resolve(str(data["artifact_uri"]), base_dir)
        version = _whole(data, "version")
        policy = str(data.get("missing_entity_policy", "error"))
        if policy not in ("error", "defaults"):
            raise InvalidArgument(f"missing_entity_policy must be 'error' or 'defaults', not {policy!r}")
        return cls(
            name=str(data["name"]),
            version=version,
            artifact_sha256=str(data["artifact_sha256"]),
            artifact_uri=uri,
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
            feature_refs=_feature_refs(data.get("feature_refs", ()), version),
            warmup_requests=_whole(data, "warmup_requests", 10, minimum=0, maximum=MAX_WARMUP_REQUESTS),
            max_batch_size=_whole(data, "max_batch_size", 32, minimum=1),
            max_queue_delay_us=_whole(data, "max_queue_delay_us", 2000, minimum=0),
            allow_non_finite=bool(data.get("allow_non_finite", False)),
            missing_entity_policy=policy,
            feature_defaults=tuple(float(v) for v in data.get("feature_defaults", ())),
            warmup_samples_uri=_resolve(str(data.get("warmup_samples_uri", "")), base_dir),
        )


def _feature_refs(refs: Any, version: int) -> tuple[str, ...]:
    """The feature references of a static config's model ``version``, each one that parses (the grammar of
    ``clients.feature_refs``; ``request:NAME`` with a name). A malformed one was accepted, and every Predict
    of the model answered INVALID_ARGUMENT, blaming the caller for the operator's config; a string was read
    as a list of one-character references, and a number as its text."""
    if not isinstance(refs, list | tuple):
        raise InvalidArgument(
            f"version {version}: feature_refs must be a list of feature references, got {type(refs).__name__}"
        )
    for index, ref in enumerate(refs):
        where = f"version {version}: feature_refs[{index}]"
        if not isinstance(ref, str):
            raise InvalidArgument(
                f"{where} must be a feature reference (text), got {type(ref).__name__} {ref!r}"
            )
        if ref.startswith(REQUEST_PREFIX):
            if ref == REQUEST_PREFIX:
                raise InvalidArgument(f"{where}: {ref!r} names no request-time feature ('request:NAME')")
            continue
        try:
            parse_ref(ref)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}: {exc.message}") from None
    return tuple(refs)


def _whole(
    data: Mapping[str, Any],
    field: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """The whole number ``data[field]`` (``default`` when absent), within ``minimum`` and ``maximum`` when
    given: ``1.7`` was cut to 1, ``1e999`` (read as infinity) raised OverflowError past every check, and
    ``true`` was 1; a max_batch_size of 0 or a negative queue delay started the server, and the version
    then failed its load with a Python ValueError's repr instead of the config's one-line error at start."""
    value = data[field] if default is None else data.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"{field} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{field} must be at most {maximum}, got {value}")
    return value


def _resolve(uri: str, base_dir: Path | None) -> str:
    """Paths in a config file are relative to the file; URIs and absolute paths are kept."""
    if not uri or base_dir is None or "://" in uri or Path(uri).is_absolute():
        return uri
    return str((base_dir / uri).resolve())


def load_model_config(path: Path) -> tuple[ModelSpec, ...]:
    """The static model config: ``{"models": [ModelSpec as JSON, ...]}`` with artifact paths relative to
    the file. Used until (and besides) deployment plans from the control plane. A file that cannot be read
    or used is a ConfigurationError naming the file, the model entry and what is wrong (the data plane
    prints it as one line and exits 2; it was a traceback)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"model config {path}: cannot be read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigurationError(f"model config {path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError(f"model config {path}: not valid JSON: nested too deeply") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ConfigurationError(f'model config {path}: expected {{"models": [model, ...]}}')
    return tuple(_config_entry(path, index, entry) for index, entry in enumerate(models))


def _config_entry(path: Path, index: int, entry: Any) -> ModelSpec:
    where = f"model config {path}: models[{index}]"
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: expected an object, got {type(entry).__name__}")
    if "name" in entry:
        where += f" ({entry['name']!r})"
    try:
        return ModelSpec.from_json(entry, path.parent)
    except KeyError as exc:
        raise ConfigurationError(f"{where}: missing field {exc.args[0]!r}") from None
    except InvalidArgument as exc:
        raise ConfigurationError(f"{where}: {exc.message}") from None
    except (TypeError, ValueError, OverflowError) as exc:  # np.dtype("float33"), a shape that is a number
        raise ConfigurationError(f"{where}: {exc}") from None


def dump_model_config(specs: Sequence[ModelSpec], path: Path) -> None:
    path.write_text(json.dumps({"models": [s.to_json() for s in specs]}, indent=2) + "\n")


def warmup_problem(spec: ModelSpec) -> str | None:
    """Why ``spec``'s warm-up cannot run, or None. A static config is checked when it is read; a plan is
    not refused whole for it (that would hold up every other deployment's plans), so a plan from a control
    plane that predates the bound fails only the version's load, by this check."""
    if not 0 <= spec.warmup_requests <= MAX_WARMUP_REQUESTS:
        return f"warmup_requests must be from 0 to {MAX_WARMUP_REQUESTS}, got {spec.warmup_requests}"
    return None


def defaults_problem(spec: ModelSpec) -> str | None:
    """Why ``feature_defaults`` cannot fill the model's Predict input, or None. Checked when a version is
    loaded or its spec changed, so that a wrong length fails the version (logged) instead of each request
    for an unknown entity, blamed on its caller. The width is known when the input is [batch, N]."""
    defaults = spec.feature_defaults
    if not defaults:
        return None
    bad = next((v for v in defaults if not math.isfinite(v)), None)
    if bad is not None:
        return f"feature_defaults must be finite numbers, not {bad!r}"
    if len(spec.inputs) == 1 and len(spec.inputs[0].shape) == 2 and spec.inputs[0].shape[1] > 0:
        width = spec.inputs[0].shape[1]
        if len(defaults) != width:
            return (
                f"{len(defaults)} feature_defaults for the {width} features of input {spec.inputs[0].name!r}"
            )
    if len(spec.inputs) == 1:  # the input Predict builds; a default is cast to its dtype
        tensor = spec.inputs[0]
        for index, value in enumerate(defaults):
            if holds := default_problem(value, tensor.dtype):
                return (
                    f"feature_defaults[{index}] is {value!r}; input {tensor.name!r} is {tensor.dtype}: "
                    f"{holds}"
                )
    return None
