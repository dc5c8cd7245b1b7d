"""The tests' one fake clock: time moves only when a test (or an injected sleep) says."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock for ``clock=``: ``sleep`` (and ``asleep``, for async code) advances it, so
    waits take no real time; tests may also set ``now`` or ``advance`` it.

    Example::

        clock = FakeClock()
        lim = tg.Limiter(tpm=6000, clock=clock, sleep=clock.sleep)
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would
        self.sleep(seconds)
