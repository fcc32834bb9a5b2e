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
