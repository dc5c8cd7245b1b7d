"""Helpers for tests that run against the Groq emulator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it (no real waiting)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


HELLO = [{"role": "user", "content": "Hello"}]
