"""``aetherctl``'s listings read up to ``--limit`` items page by page: the first ``limit`` items, whether
more exist, and never a page past the limit (the server reads one beyond a page, so the last page's token
tells). Checked against a listing held in a list, paged as the servers page."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from control_plane.cli.paging import MAX_PAGE, up_to


@given(st.integers(0, 3000), st.integers(1, 2500), st.integers(1, 1500))
def test_up_to_reads_the_first_limit_items_and_says_whether_more_exist(
    total: int, limit: int, server_page: int
) -> None:
    listing = list(range(total))
    calls: list[tuple[int, str]] = []

    def fetch(size: int, token: str) -> tuple[list[int], str]:
        calls.append((size, token))
        start = int(token or 0)
        size = min(size, server_page)  # a server may answer fewer than asked (its own page bound)
        end = start + size
        return listing[start:end], str(end) if end < total else ""

    items, more = up_to(limit, fetch)
    assert items == listing[:limit]
    assert more == (total > limit)
    assert all(1 <= size <= MAX_PAGE for size, _ in calls)
    # No page is fetched once the limit is reached.
    assert sum(min(size, server_page) for size, _ in calls[:-1]) < limit
