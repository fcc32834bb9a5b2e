"""The online store's key layout: entity hash tags are injective and never close the Redis Cluster tag
early, whatever the join values hold (the escape is skipped for alphanumeric values: same result)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kernels.online_keys import entity_tag, online_key

# Values built from the characters that matter (the escaped ones) and a few that do not, plus any text.
tricky = st.text(st.sampled_from("%:|{}a7é²_ -"), max_size=6)
join_values = st.lists(st.one_of(tricky, st.text(max_size=6)), min_size=1, max_size=3)


@given(join_values, join_values)
def test_distinct_join_values_never_share_a_tag(first: list[str], second: list[str]) -> None:
    if len(first) == len(second):  # one entity has one number of join keys
        assert (entity_tag("e", first) == entity_tag("e", second)) == (first == second)


@given(join_values)
def test_the_tag_holds_no_brace_and_escapes_as_percent_encoding(values: list[str]) -> None:
    tag = entity_tag("e", values)
    assert "{" not in tag and "}" not in tag
    reference = "e:" + "|".join(
        v.replace("%", "%25").replace(":", "%3A").replace("|", "%7C").replace("{", "%7B").replace("}", "%7D")
        for v in values
    )
    assert tag == reference


def test_the_key_layout() -> None:
    assert online_key("driver", ["7"], "stats", 2) == b"ae:{driver:7}:stats:v2"
    assert online_key("pair", ["a:b", "1"], "v", 1) == b"ae:{pair:a%3Ab|1}:v:v1"
