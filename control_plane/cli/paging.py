"""Reading a listing up to ``--limit`` items, page by page, for the commands that list (audit, runs, jobs,
quarantine, drift reports, retraining history).

Each page asks for what is still wanted (at most :data:`MAX_PAGE`), so the last page ends at the limit and
its token alone tells whether more items match (the servers read one beyond a page): no page is fetched
past the limit to find out."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: The most items one page asks for (the servers' own bound on a page).
MAX_PAGE = 1000


def up_to(limit: int, fetch: Callable[[int, str], tuple[Sequence[T], str]]) -> tuple[list[T], bool]:
    """The first ``limit`` items that ``fetch(page_size, page_token)`` pages through (it returns a page's
    items and the next page's token, empty on the last), and whether more exist beyond them."""
    items: list[T] = []
    token = ""
    while len(items) < limit:
        page, token = fetch(min(limit - len(items), MAX_PAGE), token)
        items.extend(page[: limit - len(items)])
        if not token:
            break
    return items, bool(token)


def say_more(what: str) -> None:
    """Says on stderr that the listing was cut at ``--limit`` (``what``: which items were shown, and how to
    see others); stdout stays the listing (JSON with ``--json``)."""
    print(f"aetherctl: {what}", file=sys.stderr)
