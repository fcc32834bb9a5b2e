"""The feature-assembly and online-features benchmarks warm up on other inputs than the ones they time."""

from __future__ import annotations

import asyncio

from benchmarks.feature_assembly import entity_rows
from benchmarks.online_features import _time_calls, _time_sync


def entities(rows: list[list[dict[str, str]]]) -> set[str]:
    return {row[0]["driver_id"] for row in rows}


def test_warm_up_entities_are_not_timed() -> None:
    timed, warm = entity_rows(5_000, 500)
    assert len(timed) == 5_000 and len(warm) == 500
    assert entities(timed).isdisjoint(entities(warm))


def test_the_warm_up_calls_its_own_inputs() -> None:
    called: list[int] = []

    async def call(i: int) -> None:
        called.append(i)

    asyncio.run(_time_calls(call, 4, 2))
    assert called == [4, 5, 0, 1, 2, 3]
    called.clear()
    _time_sync(called.append, 4, 2)  # the in-process and raw-GET rows timed the warm-up's requests again
    assert called == [4, 5, 0, 1, 2, 3]
