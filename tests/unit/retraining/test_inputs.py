"""Which logged columns a model's inputs are: by feature ref name, by position only without names."""

from __future__ import annotations

import numpy as np
import pytest

from clients.errors import FailedPrecondition
from control_plane.retraining.inputs import model_inputs

LOGGED = ("v@1:a", "v@1:b", "v@1:c")
ROWS = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


def test_columns_go_by_name_and_a_subset_takes_only_its_own() -> None:
    assert model_inputs(ROWS, LOGGED, ("v@1:c", "v@1:a"), "challenger").tolist() == [[3.0, 1.0], [6.0, 4.0]]


def test_a_feature_the_rows_lack_is_refused_by_name() -> None:
    with pytest.raises(FailedPrecondition, match=r"the challenger needs v@2:a, which .* v@1:a, v@1:b, v@1:c"):
        model_inputs(ROWS, LOGGED, ("v@2:a", "v@1:b", "v@1:c"), "challenger")


def test_without_names_columns_go_by_position_when_the_widths_agree() -> None:
    assert model_inputs(ROWS, LOGGED, (), "champion").tolist() == ROWS.tolist()
    assert model_inputs(ROWS, (), ("x@1:p", "x@1:q", "x@1:r"), "champion").tolist() == ROWS.tolist()
    with pytest.raises(FailedPrecondition, match="3 logged columns have no names"):
        model_inputs(ROWS, (), ("x@1:p", "x@1:q"), "challenger")


def test_an_empty_holdout_gives_an_empty_input_of_the_models_width() -> None:
    assert model_inputs(np.zeros((0, 0)), (), ("v@1:a", "v@1:b"), "challenger").shape == (0, 2)
