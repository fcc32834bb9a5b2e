"""A Redis client that stops in the middle of a write, so that tests can put a second writer at an exact
point between another one's steps (concurrent online writes, concurrent quarantine replays)."""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.client import Pipeline


class PausingRedis(redis.Redis):
    """A FAKE slow writer: after its first round trip to Redis, whatever that is, it waits until
    ``resume`` is set, as a process descheduled in the middle of a write would. Two writers cannot be
    interleaved at an exact point otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paused, self.resume = threading.Event(), threading.Event()

    def pause_once(self) -> None:
        if not self.paused.is_set():
            self.paused.set()
            self.resume.wait(10)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().execute_command(*args, **options)
        self.pause_once()
        return result

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        owner = self

        class PausingPipeline(Pipeline):
            def execute(self, raise_on_error: bool = True) -> list[Any]:
                result = super().execute(raise_on_error)
                owner.pause_once()
                return result

        return PausingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
