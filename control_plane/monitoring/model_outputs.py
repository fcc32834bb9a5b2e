"""Whether the model versions a deployment serves have the output its monitor config names.

``MonitorConfig.prediction_output`` naming an output the model does not have (a typo, or a name of an
earlier model) was stored, and the monitor then indexed none of the deployment's predictions: every label
read as orphaned ("its prediction was not logged") and the quality windows stopped moving. ConfigureMonitor
refuses such a name where the registry knows the versions' outputs (their signatures list them; a
signature without outputs says nothing, and the data plane then logs every output the model has), for
the versions whose answers are served, the primary's at any share and those of the canaries holding
traffic (:func:`.served.checked_variants`): a shadow's are never returned, a canary's parked at 0 %
answer nothing. The deployment may serve another model later: the monitor counts and reports the
predictions logged without the output then (indexed by :mod:`.entry_batch`, counted by
:mod:`.monitor`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.db import read_session
from control_plane.model_registry.tables import ModelVersionRow, RegisteredModelRow
from control_plane.monitoring.entries import LoggedPrediction
from control_plane.monitoring.served import Version, checked_variants, role_name


def signature_outputs(
    sessions: sessionmaker[Session], versions: Iterable[Version]
) -> dict[Version, list[str]]:
    """The output names each of ``versions`` lists in its signature, in the signature's order; a version
    the registry does not hold is left out."""
    return {
        version: [str(t["name"]) for t in signature.get("outputs", [])]
        for version, signature in _signatures(sessions, versions).items()
    }


def signature_classes(
    sessions: sessionmaker[Session], versions: Iterable[Version]
) -> dict[Version, tuple[float, ...]]:
    """The label value of each output column, per version whose signature lists its classes
    (``ModelSignature.classes``) as numbers, which feedback labels are; a version listing none, or one
    not a number (text labels), is left out: its outputs cannot be mapped to labels."""
    found: dict[Version, tuple[float, ...]] = {}
    for version, signature in _signatures(sessions, versions).items():
        numbers = class_values(signature.get("classes", []))
        if numbers:
            found[version] = numbers
    return found


def _signatures(
    sessions: sessionmaker[Session], versions: Iterable[Version]
) -> dict[Version, dict[str, Any]]:
    """The stored signature (its JSON) of each of ``versions`` the registry holds."""
    wanted = sorted(set(versions))
    if not wanted:
        return {}
    with read_session(sessions) as session:
        rows = session.execute(
            select(RegisteredModelRow.name, ModelVersionRow.version, ModelVersionRow.signature)
            .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
            .where(tuple_(RegisteredModelRow.name, ModelVersionRow.version).in_(wanted))
        ).all()
    return {(name, int(version)): signature or {} for name, version, signature in rows}


def class_values(values: Iterable[object]) -> tuple[float, ...] | None:
    """``values`` (a model's classes, one per output column) as the label numbers feedback labels are;
    None when one is not a finite number (text labels: its outputs cannot be mapped to labels)."""
    try:
        numbers = tuple(float(str(value)) for value in values)
    except ValueError:
        return None
    return numbers if all(math.isfinite(n) for n in numbers) else None


def check_prediction_output(
    sessions: sessionmaker[Session], config: pb.MonitorConfig, deployment: dpb.Deployment
) -> None:
    """``InvalidArgument`` naming their roles and outputs when a model version ``deployment`` serves (the
    primary's, a canary's holding traffic) lacks the output ``config.prediction_output`` names (nothing
    to check without a name: the first output is read). Shadows are not checked: their answers are never
    returned and the monitor skips them, so a shadow with other output names refused the primary's own;
    nor are canaries parked at 0 %, which answer no request."""
    name = config.prediction_output
    if not name:
        return
    roles: dict[Version, list[str]] = {}
    for variant in checked_variants(deployment):
        roles.setdefault((variant.model_name, int(variant.version)), []).append(role_name(variant))
    known = signature_outputs(sessions, roles)
    lacking = [
        f"{model} v{version} ({', '.join(held)}; outputs: {', '.join(known[model, version])})"
        for (model, version), held in roles.items()
        if known.get((model, version)) and name not in known[model, version]
    ]
    if lacking:
        raise InvalidArgument(
            f"invalid monitor config: prediction_output {name!r} is not an output of the model versions "
            f"whose answers deployment {deployment.name!r} serves and the monitor reads (its primary and "
            "the canaries holding traffic; shadows and canaries at 0% are not monitored): "
            f"{'; '.join(lacking)}; name one of their "
            "outputs, or none for each model's first"
        )


class UnscoredPredictions:
    """The monitor's count of prediction rows logged without the output the config names (indexed without
    a value, so that their labels join: see :mod:`.index_rows`), said once per model version and
    output in this process in a warning: the monitor reads many entries a second."""

    def __init__(self, counter: Counter, log: logging.Logger) -> None:
        self._counter = counter
        self._log = log
        self._said: set[tuple[str, str, int, str]] = set()

    def count(self, logged: LoggedPrediction, output: str, rows: int) -> None:
        self._counter.labels(logged.deployment, logged.model, str(logged.version), output).inc(rows)
        key = (logged.deployment, logged.model, logged.version, output)
        if key in self._said:
            return
        self._said.add(key)
        self._log.warning(
            "deployment %r: the logged answers of %s v%d have no output %r, which its monitor config names"
            " as the prediction output (they have: %s); their predictions are indexed without a value, so"
            " their labels join but are not scored (counted in aether_monitor_predictions_unscored_total,"
            " listed in GetPerformance's unscored); name one of its outputs with `aetherctl monitor"
            " configure %s --prediction-output NAME`",
            logged.deployment,
            logged.model,
            logged.version,
            output,
            ", ".join(logged.outputs) or "no output",
            logged.deployment,
        )
