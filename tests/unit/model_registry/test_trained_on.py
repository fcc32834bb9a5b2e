"""``check_trained_on``: a version's feature references against its training set's record."""

from __future__ import annotations

from typing import Any

import pytest

from clients.errors import FailedPrecondition
from control_plane.model_registry.references import check_trained_on
from control_plane.model_registry.validation import FeatureRef

HASH = "ab" * 32


def _record(*views: dict[str, Any]) -> dict[str, Any]:
    return {"views": list(views)}


def test_references_the_set_read_pass_whatever_the_set_named_them() -> None:
    record = _record(
        {"view": "stats", "version": 2, "columns": ["stats:a", "stats@2:b"]},  # as the set's query wrote them
        {"view": "other", "version": 1, "columns": ["other@1:x"]},
    )
    check_trained_on([FeatureRef("stats", 2, "b"), FeatureRef("stats", 2, "a")], record, HASH)


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        (FeatureRef("stats", 3, "a"), "'stats@3:a' names feature view 'stats' version 3 and feature 'a'"),
        (FeatureRef("stats", 2, "c"), "'stats@2:c'"),
        (FeatureRef("nope", 1, "a"), "'nope@1:a'"),
    ],
)
def test_a_view_version_or_feature_the_set_did_not_read_is_refused_naming_what_it_read(
    ref: FeatureRef, says: str
) -> None:
    record = _record({"view": "stats", "version": 2, "columns": ["stats@2:a", "stats@2:b"]})
    with pytest.raises(FailedPrecondition, match=says) as refused:
        check_trained_on([FeatureRef("stats", 2, "a"), ref], record, HASH)
    assert str(refused.value).startswith("feature_refs[1]: ")
    assert f"training set {HASH} was not read from (it read stats@2 (a, b))" in str(refused.value)


@pytest.mark.parametrize(
    "record",
    [
        {},  # a record that does not say what it read
        {"views": []},
        _record({"view": "stats", "version": 2}),  # no columns: only the version is checked
        _record({"view": "stats", "version": 2, "columns": ["not a reference"]}),
    ],
)
def test_what_a_record_does_not_say_is_not_checked(record: dict[str, Any]) -> None:
    check_trained_on([FeatureRef("stats", 2, "z")], record, HASH)


def test_without_columns_the_version_is_still_checked() -> None:
    with pytest.raises(FailedPrecondition, match="it read stats@2\\)"):
        check_trained_on([FeatureRef("stats", 1, "a")], _record({"view": "stats", "version": 2}), HASH)
