"""Following a paged listing to its end: the control plane cuts every page by size (2 MiB) as well as by
count, so a client that wants everything asks again with each page's ``next_page_token`` until it is empty."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def every_page(fetch: Callable[[str], tuple[Sequence[T], str]]) -> list[T]:
    """All items: ``fetch(token)`` answers one page's items and the next page's token ("" on the last)."""
    items: list[T] = []
    token = ""
    while True:
        page, token = fetch(token)
        items.extend(page)
        if not token:
            return items


def first_items(
    wanted: int,
    fetch: Callable[[int, str], tuple[Sequence[T], str]],
    default: int = 100,
    page_max: int = 1000,
) -> list[T]:
    """The first ``wanted`` items (0: ``default``) of a listing whose ``limit`` is a count per page (at most
    ``page_max``, the server's bound), over as many pages as that takes: ``fetch(limit, token)`` answers one
    page of at most ``limit`` items and the next page's token. The first call passes ``wanted`` as given
    up to ``page_max`` (so the server still checks a negative one, and a client that asked for 100 gets up
    to 100 in one answer); more than ``page_max`` are fetched ``page_max`` a page."""
    items: list[T] = []
    token = ""
    limit = min(wanted, page_max)
    while True:
        page, token = fetch(limit, token)
        items.extend(page)
        limit = min((wanted or default) - len(items), page_max)
        if not token or limit <= 0:
            return items[: wanted or default]
