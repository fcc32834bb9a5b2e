"""BackgroundLoop: stop() ends a loop even when its body lost the cancellation, and a pause ends as
soon as stop() is called."""

from __future__ import annotations

import asyncio
import time

from control_plane.background import BackgroundLoop


async def test_stop_ends_a_loop_whose_body_swallowed_the_cancellation() -> None:
    background = BackgroundLoop("test-loop")
    passes = 0
    in_command = asyncio.Event()

    async def body() -> None:
        nonlocal passes
        while background.running:
            passes += 1
            try:
                in_command.set()
                await asyncio.sleep(0.2)  # stands in for a Redis command
            except asyncio.CancelledError:
                pass  # a named fake of the fault: redis-py 8.0-8.2 loses a cancellation now and then
            await background.pause(3600.0)

    background.start(body())
    await in_command.wait()
    start = time.monotonic()
    await asyncio.wait_for(background.stop(), timeout=5.0)
    assert time.monotonic() - start < 2.0
    assert passes == 1  # the pass in progress ended, no new one began


async def test_a_pause_ends_when_the_loop_is_stopped() -> None:
    background = BackgroundLoop("test-loop")
    paused = asyncio.Event()
    ended_after: list[float] = []

    async def body() -> None:
        start = time.monotonic()
        paused.set()
        try:
            await background.pause(3600.0)
        finally:
            ended_after.append(time.monotonic() - start)

    background.start(body())
    await paused.wait()
    await asyncio.wait_for(background.stop(), timeout=5.0)
    assert len(ended_after) == 1 and ended_after[0] < 2.0


async def test_a_pause_lasts_its_time_while_running() -> None:
    background = BackgroundLoop("test-loop")
    start = time.monotonic()
    await background.pause(0.05)
    assert time.monotonic() - start >= 0.05
    assert background.running


async def test_stop_without_start_and_twice_is_harmless_and_a_stopped_loop_can_start_again() -> None:
    background = BackgroundLoop("test-loop")
    await background.stop()
    await background.stop()
    assert not background.running
    ran = asyncio.Event()

    async def body() -> None:
        ran.set()
        while background.running:
            await background.pause(3600.0)

    background.start(body())
    assert background.running
    await asyncio.wait_for(ran.wait(), timeout=5.0)
    await asyncio.wait_for(background.stop(), timeout=5.0)
    assert not background.running


async def test_cancelling_stop_itself_is_not_swallowed() -> None:
    background = BackgroundLoop("test-loop")

    async def body() -> None:
        try:
            await asyncio.sleep(3600.0)
        finally:
            await asyncio.sleep(0.5)  # slow cleanup, so stop() is still waiting when it is cancelled

    background.start(body())
    await asyncio.sleep(0)
    stopping = asyncio.get_running_loop().create_task(background.stop())
    await asyncio.sleep(0.05)
    stopping.cancel()
    done, _ = await asyncio.wait({stopping}, timeout=5.0)
    assert done and stopping.cancelled()
