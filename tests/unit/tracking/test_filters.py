"""The filter language: parsing, positions in errors, and render/parse round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.tracking.filters import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    RUN_STATUSES,
    And,
    Compare,
    Field,
    Not,
    Or,
    SortKey,
    parse_filter,
    parse_sort_key,
    render,
)


def test_precedence_not_binds_tighter_than_and_than_or() -> None:
    parsed = parse_filter("not metrics.a > 1 and params.b = 'x' or tags.c != \"y\"")
    assert parsed == Or(
        (
            And((Not(Compare(Field("metric", "a"), ">", 1.0)), Compare(Field("param", "b"), "=", "x"))),
            Compare(Field("tag", "c"), "!=", "y"),
        )
    )


def test_keys_with_punctuation_backticks_aggregates_and_keywords_in_any_case() -> None:
    parsed = parse_filter(
        "MIN(metrics.val/loss-2.x) <= -1.5e-3 AND metrics.`my key` == 2 Or params.lr <> 'a\\'b'"
    )
    assert parsed == Or(
        (
            And(
                (
                    Compare(Field("metric", "val/loss-2.x", "min"), "<=", -1.5e-3),
                    Compare(Field("metric", "my key"), "=", 2.0),
                )
            ),
            Compare(Field("param", "lr"), "!=", "a'b"),
        )
    )
    assert parse_filter("   ") is None


def test_sort_keys() -> None:
    assert parse_sort_key("metrics.loss") == SortKey(Field("metric", "loss"), False)
    assert parse_sort_key("max(metrics.acc) DESC") == SortKey(Field("metric", "acc", "max"), True)
    assert parse_sort_key("attributes.start_time asc") == SortKey(Field("attribute", "start_time"), False)


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("metrics.loss <", 14, "expected a number or a quoted string"),
        ("metrics.loss < 0.5 and", 22, "expected a field"),
        ('params.lr = "0.1', 12, "unterminated string"),
        ("metrics.loss < 'x'", 15, "numeric: compare it with a number"),
        ("params.lr = 0.1", 12, "text: compare it with a quoted string"),
        ("(metrics.loss < 1", 17, "expected ')'"),
        ("metrics.loss ~ 1", 13, "unexpected character '~'"),
        ("attributes.colour = 'red'", 0, "unknown attribute 'colour'"),
        ("min(params.lr) < 1", 4, "applies to metrics only"),
        ("metrics.loss < 1 metrics.acc > 2", 17, "unexpected 'metrics.acc'"),
        ("metrics.`` = 1", 0, "empty key"),
        ("metrics.loss < 1e999", 15, "out of range"),
        ("loss < 1", 0, "expected a field"),
        (
            "attributes.status = 'DONE'",
            20,
            "attributes.status is RUNNING, FINISHED, FAILED or KILLED, not 'DONE'",
        ),
        ("attributes.status != ''", 21, "attributes.status is RUNNING, FINISHED, FAILED or KILLED, not ''"),
    ],
)
def test_errors_name_the_position(text: str, position: int, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_filter(text)
    assert f"bad filter at position {position}: " in raised.value.message
    assert message in raised.value.message


keys = st.one_of(
    st.from_regex(r"[A-Za-z0-9_./-]{1,8}", fullmatch=True),
    st.text(st.characters(blacklist_characters="`", blacklist_categories=["Cs"]), min_size=1, max_size=8),
)
numeric_fields = st.one_of(
    st.builds(Field, st.just("metric"), keys, st.sampled_from(("latest", "min", "max"))),
    st.builds(Field, st.just("attribute"), st.sampled_from(("start_time", "end_time"))),
)
text_fields = st.one_of(
    st.builds(Field, st.sampled_from(("param", "tag")), keys),
    st.builds(Field, st.just("attribute"), st.just("name")),
)
operators = st.sampled_from(("=", "!=", "<", "<=", ">", ">="))
statuses = st.sampled_from(("RUNNING", "FINISHED", "FAILED", "KILLED"))
comparisons = st.one_of(
    st.builds(Compare, numeric_fields, operators, st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(Compare, text_fields, operators, st.text(max_size=6)),
    st.builds(Compare, st.just(Field("attribute", "status")), operators, statuses),
)
expressions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=6,
)


def _normalized(expression: object) -> object:
    """Flattens nested And/Or of the same kind: ``(a and b) and c`` parses as one three-way And."""
    if isinstance(expression, (And, Or)):
        items: list[object] = []
        for item in expression.items:
            inner = _normalized(item)
            items.extend(
                inner.items if isinstance(inner, (And, Or)) and type(inner) is type(expression) else (inner,)
            )
        return type(expression)(tuple(items))  # type: ignore[arg-type]
    if isinstance(expression, Not):
        return Not(_normalized(expression.item))  # type: ignore[arg-type]
    return expression


def test_a_status_is_named_in_any_case_and_an_unknown_one_is_refused() -> None:
    """`attributes.status = 'finished'` matched no run, silently (statuses are stored in capitals), as did
    any name that is not a status: a typo read as "no run matches". A status is now named in any case,
    as the SDK takes it, and anything else is INVALID_ARGUMENT naming the statuses."""
    named = [pb.RunStatus.Name(value).removeprefix("RUN_STATUS_") for value in pb.RunStatus.values()]
    assert list(RUN_STATUSES) == [name for name in named if name != "UNSPECIFIED"]
    status = Field("attribute", "status")
    assert parse_filter("attributes.status = 'finished'") == Compare(status, "=", "FINISHED")
    assert parse_filter("attributes.status > 'running'") == Compare(status, ">", "RUNNING")
    assert parse_filter('attributes.status != "Killed"') == Compare(status, "!=", "KILLED")


@given(expressions)
def test_render_then_parse_is_the_identity(expression: And | Or | Not | Compare) -> None:
    assert _normalized(parse_filter(render(expression))) == _normalized(expression)


def test_nesting_is_refused_past_the_depth_limit_instead_of_overflowing_the_stack() -> None:
    comparison = "metrics.a > 1"
    deepest = parse_filter("not " * MAX_DEPTH + comparison)
    for _ in range(MAX_DEPTH):
        assert isinstance(deepest, Not)
        deepest = deepest.item
    assert parse_filter("(" * MAX_DEPTH + comparison + ")" * MAX_DEPTH) == parse_filter(comparison)
    mixed = "(not " * (MAX_DEPTH // 2) + comparison + ")" * (MAX_DEPTH // 2)
    assert parse_filter(mixed) is not None
    for text in (
        "not " * (MAX_DEPTH + 1) + comparison,
        "not " * 1000 + comparison,
        "(" * (MAX_DEPTH + 1) + comparison + ")" * (MAX_DEPTH + 1),
        "(" * 600 + comparison + ")" * 600,
        "(not " * (MAX_DEPTH // 2 + 1) + comparison + ")" * (MAX_DEPTH // 2 + 1),
    ):
        with pytest.raises(InvalidArgument, match=f"nest more than {MAX_DEPTH} deep"):
            parse_filter(text)


def test_filters_and_sort_keys_longer_than_the_limit_are_refused() -> None:
    long = "metrics.a > 1 or " * (MAX_FILTER_LENGTH // 17 - 1) + "metrics.a > 1"
    assert len(long) <= MAX_FILTER_LENGTH and parse_filter(long) is not None
    with pytest.raises(InvalidArgument, match=f"bad filter: {MAX_FILTER_LENGTH + 1} characters, at most"):
        parse_filter(" " * (MAX_FILTER_LENGTH + 1 - len("metrics.a > 1")) + "metrics.a > 1")
    with pytest.raises(InvalidArgument, match=f"bad sort key: {MAX_FILTER_LENGTH + 9} characters, at most"):
        parse_sort_key("metrics." + "k" * (MAX_FILTER_LENGTH + 1))
