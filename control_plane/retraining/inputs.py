"""Which logged columns a model's inputs are: paired by feature ref name.

A prediction-log entry's features carry no names: they are the logging version's ``feature_refs``
(``view@2:feature``), in that order (the data plane assembles a model's input in its refs' order and
logs it as it is). A model evaluated on logged rows gets, for each of its own refs, the logged column of
that name (:func:`control_plane.monitoring.columns.pair_columns`, as the drift monitor pairs a profile's
features with the logged columns). Run on them by position, a challenger listing the same refs in another
order, or other refs, was evaluated on other features' values, and the gates judged garbage.

Only where there are no names to go by are columns taken by position: a model that lists no refs (its
input has no names) gets the logged columns as they are, and rows logged by a version that lists none go
by position to a model with as many refs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from clients.errors import FailedPrecondition
from control_plane.monitoring.columns import pair_columns

FloatMatrix = npt.NDArray[np.float64]


def logged_columns(wanted: Sequence[str], logged: Sequence[str], width: int) -> tuple[int, ...] | None:
    """For each of ``wanted`` (a model's refs) in order, the index of the logged column (of ``width``,
    named ``logged``) holding it; None when some is not logged (or, without names, the widths differ).
    ``wanted`` empty: every column as it is."""
    if not wanted:
        return tuple(range(width))
    pairing = pair_columns(wanted, logged, width)
    if pairing is None or pairing.unpaired_features:
        return None
    return tuple(column for column in pairing.columns if column is not None)


def model_inputs(
    features: FloatMatrix, logged: Sequence[str], wanted: Sequence[str], which: str
) -> FloatMatrix:
    """``features`` (rows logged with the columns ``logged``) as the input of the model listing the refs
    ``wanted``; ``FailedPrecondition`` naming what is missing when the rows do not carry its inputs (it
    cannot be evaluated on them)."""
    if features.shape[0] == 0:
        return np.zeros((0, len(wanted) or (features.shape[1] if features.ndim == 2 else 0)))
    width = features.shape[1]
    columns = logged_columns(wanted, logged, width)
    if columns is not None:
        return features[:, list(columns)]
    if not logged:
        raise FailedPrecondition(
            f"the {which} lists {len(wanted)} feature_refs, and the holdout's {width} logged columns have "
            "no names (their version lists no feature_refs): it cannot be evaluated on them"
        )
    missing = [ref for ref in wanted if ref not in logged]
    raise FailedPrecondition(
        f"the {which} needs {', '.join(missing)}, which the holdout's logged rows do not carry (their "
        f"columns: {', '.join(logged)}): it cannot be evaluated on them"
    )
