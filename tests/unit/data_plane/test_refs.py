"""Feature-reference grammar: ``view``, ``view@N``, ``view:feature``, ``view@N:feature``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from data_plane.refs import FeatureRef, parse_ref

_NAME_CHARS = st.characters(blacklist_characters=":@", blacklist_categories=("Zs", "Cc", "Zl", "Zp"))
names = st.text(_NAME_CHARS, min_size=1, max_size=12).filter(lambda s: not any(c.isspace() for c in s))


def reference_parse(text: str) -> FeatureRef | None:
    """Brute-force reading of the grammar with str.split; None where the text is malformed."""
    if not text or any(c.isspace() for c in text):
        return None
    head, *rest = text.split(":")
    if len(rest) > 1 or (rest and not rest[0]):
        return None
    feature = rest[0] if rest else None
    if feature is not None and "@" in feature:
        return None
    view, *at = head.split("@")
    if not view or len(at) > 1:
        return None
    version = None
    if at:
        digits = at[0]
        if not digits or not all(c in "0123456789" for c in digits) or not 1 <= int(digits) <= 2**32 - 1:
            return None
        version = int(digits)
    return FeatureRef(view, version, feature)


@given(names, st.one_of(st.none(), st.integers(1, 2**32 - 1)), st.one_of(st.none(), names))
def test_well_formed_references_round_trip(view: str, version: int | None, feature: str | None) -> None:
    ref = FeatureRef(view, version, feature)
    assert parse_ref(str(ref)) == ref


@given(st.text(st.sampled_from("ab1@:0 \t-_9é"), max_size=10))
def test_parser_agrees_with_a_brute_force_reading(text: str) -> None:
    expected = reference_parse(text)
    if expected is None:
        with pytest.raises(InvalidArgument, match="malformed feature reference"):
            parse_ref(text)
    else:
        assert parse_ref(text) == expected


@pytest.mark.parametrize(
    "text", ["", "v:", ":f", "v@", "v@x", "v@0", "v@1@2", "v:f:g", "v :f", "v@-1:f", "v@٣"]
)
def test_malformed_references_are_invalid_arguments(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_ref(text)
    assert repr(text) in info.value.message


@pytest.mark.parametrize("text", ["v@0:f", "v@000", "v@" + "0" * 5000 + ":f"])
def test_version_zero_is_refused_as_before_the_first(text: str) -> None:
    with pytest.raises(InvalidArgument, match="versions start at 1"):
        parse_ref(text)


@pytest.mark.parametrize(
    "text", ["v@4294967296:f", "v@99999999999", "v@" + "1" * 5000 + ":f", "v@" + "9" * 4301, "v@0" + "9" * 10]
)
def test_a_version_past_uint32_is_refused_as_too_large(text: str) -> None:
    # 5,000 digits made int() raise ValueError (INTERNAL); 4294967296 was told "versions start at 1".
    with pytest.raises(InvalidArgument, match="the version must be between 1 and 4294967295") as info:
        parse_ref(text)
    assert repr(text) in info.value.message


@pytest.mark.parametrize(("text", "version"), [("v@4294967295", 2**32 - 1), ("v@" + "0" * 5000 + "7:f", 7)])
def test_a_version_in_range_is_read_whatever_its_leading_zeros(text: str, version: int) -> None:
    assert parse_ref(text).version == version
