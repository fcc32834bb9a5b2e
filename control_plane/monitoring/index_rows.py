"""A logged prediction as the monitor reads it: the output its deployment's monitor config names, and the
entry's rows for the prediction index (:mod:`.feedback`), which every served entry is indexed with
whatever the config says, so that its labels can join.

An entry whose answer lacks the output the config names (the deployment serves another model since) is
indexed all the same, without a value: left out, its labels read as orphaned ("prediction not logged"),
which was false, and nothing said why; indexed, the labels join and the quality windows count them
invalid (:func:`.performance.derive`), while the monitor counts and logs the rows
(:class:`.model_outputs.UnscoredPredictions`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.entries import LoggedPrediction
from control_plane.monitoring.feedback import IndexedPrediction
from control_plane.monitoring.outputs import prediction_output


def logged_output(
    config: pb.MonitorConfig, logged: LoggedPrediction
) -> tuple[str, npt.NDArray[np.float64] | None]:
    """The name of the output ``config`` reads as the prediction, and its values in ``logged`` (None when
    the entry's answer lacks it)."""
    output_name = prediction_output(config, logged.outputs)
    return output_name, logged.outputs.get(output_name)


def index_rows(
    config: pb.MonitorConfig, logged: LoggedPrediction
) -> tuple[list[IndexedPrediction], str | None]:
    """The entry's rows for the prediction index, and the output ``config`` names when the entry's answer
    lacks it (None when it has it): those rows are indexed without a value (see the module doc)."""
    output_name, output = logged_output(config, logged)
    missing = None
    if output is None:
        missing = output_name
        any_output = next(iter(logged.outputs.values()), logged.features)
        rows = 0 if any_output is None else any_output.shape[0]
        values: list[list[float]] = [[] for _ in range(rows)]
    else:
        values = [[float(v) for v in output[row]] for row in range(output.shape[0])]
    is_label = output_name in logged.integer_outputs
    return [
        IndexedPrediction(
            logged.request_id,
            row,
            logged.deployment,
            logged.model,
            logged.version,
            logged.variant,
            logged.ts_us,
            value,
            is_label,
        )
        for row, value in enumerate(values)
    ], missing
