"""``every_page`` follows a listing's tokens to its end, passing each page's token on, and keeps the
items in order, none twice, against a brute-force listing cut into random pages."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from clients.sdk.pages import every_page, first_items


@given(st.lists(st.integers(), max_size=60), st.lists(st.integers(1, 7), min_size=1, max_size=60))
def test_every_item_once_in_order_across_pages(items: list[int], sizes: list[int]) -> None:
    asked: list[str] = []

    def fetch(token: str) -> tuple[Sequence[int], str]:
        asked.append(token)
        start = int(token or 0)
        end = min(len(items), start + sizes[len(asked) % len(sizes)])
        return items[start:end], (str(end) if end < len(items) else "")

    assert every_page(fetch) == items
    assert asked[0] == "" and all(asked[1:])  # the first page without a token, then each one given back


@given(
    st.lists(st.integers(), max_size=300),
    st.lists(st.integers(1, 7), min_size=1, max_size=60),
    st.integers(0, 200),
    st.integers(1, 250),
)
def test_first_items_takes_the_first_wanted_asking_only_for_what_is_left(
    items: list[int], sizes: list[int], wanted: int, page_max: int
) -> None:
    """``first_items`` follows pages cut short by size (``sizes``) until it holds ``wanted`` items (0: 100),
    asking each page for no more than are still wanted nor than the server allows a page (``page_max``);
    the first call passes ``wanted`` as given when the server allows it."""
    limits: list[int] = []

    def fetch(limit: int, token: str) -> tuple[Sequence[int], str]:
        limits.append(limit)
        start = int(token or 0)
        end = min(len(items), start + min(limit or 100, sizes[len(limits) % len(sizes)]))
        return items[start:end], (str(end) if end < len(items) else "")

    assert first_items(wanted, fetch, page_max=page_max) == items[: wanted or 100]
    assert limits[0] == min(wanted, page_max)
    assert all(0 < limit <= min(wanted or 100, page_max) for limit in limits[1:])
