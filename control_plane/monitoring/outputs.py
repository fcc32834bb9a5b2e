"""Which output of a model holds its predictions, and whether it holds class codes.

One rule for every reader of predictions — the monitor (logged outputs → prediction index and
windows), the shadow agreement rate (logged outputs of the served and shadow variants) and the
evaluation gates (outputs of the champion and challenger run on the holdout) — so that they read the
same output the same way and a gate, a shadow phase and the performance trigger compare the same figure.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import monitoring_pb2 as pb


def prediction_output(config: pb.MonitorConfig, names: Iterable[str]) -> str:
    """The output predictions are read from: the one ``config.prediction_output`` names, else the first
    of ``names`` (in the model's or the entry's order); ``""`` when there is none. The name may be
    missing from ``names`` when the config names an output the model does not have."""
    return config.prediction_output or next(iter(names), "")


def holds_class_codes(dtype: npt.DTypeLike) -> bool:
    """Whether an output of ``dtype`` holds class codes (integers, booleans) rather than scores: a
    1-column code is a class as it is, never a score compared with the decision threshold."""
    return np.dtype(dtype).kind in "iub"
