"""Continuously refilling token bucket: the arithmetic Groq's 429s reveal.

Capacity = limit, refill = limit / period. A request of ``n`` is admitted when the bucket
holds at least ``n``; otherwise the wait is ``(n - available) / rate``, i.e.
``(used + requested - limit) * period / limit`` as in every published 429
("Limit 6000, Used 5034, Requested 1443 ... try again in 4.77s").

Pure arithmetic: the caller passes ``now`` (any monotonic clock, in seconds); nothing here
reads a clock or sleeps.

Example::

    b = TokenBucket(capacity=6000, period=60.0, now=0.0)
    b.take(5034, now=0.0)
    b.wait_for(1443, now=0.0)   # -> 4.77
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]

# Tolerance for float noise when comparing a request with what the bucket holds.
_EPS = 1e-9


class TokenBucket:
    """A bucket of ``capacity`` that refills at ``capacity / period`` per second."""

    __slots__ = ("_level", "_updated", "capacity", "period")

    def __init__(self, capacity: float, period: float, now: float) -> None:
        if capacity <= 0 or not math.isfinite(capacity):
            raise ValueError(f"bucket capacity must be finite and > 0, got {capacity!r}")
        if period <= 0 or not math.isfinite(period):
            raise ValueError(f"bucket period must be finite and > 0 seconds, got {period!r}")
        self.capacity = float(capacity)
        self.period = float(period)
        self._level = self.capacity
        self._updated = now

    @property
    def rate(self) -> float:
        """Refill per second."""
        return self.capacity / self.period

    def available(self, now: float) -> float:
        """What the bucket holds at ``now`` (a clock going backwards refills nothing)."""
        elapsed = max(0.0, now - self._updated)
        return min(self.capacity, self._level + elapsed * self.rate)

    def used(self, now: float) -> float:
        """How much of the limit is taken at ``now`` (``capacity - available``)."""
        return self.capacity - self.available(now)

    def has_room(self, amount: float, now: float) -> bool:
        """True when ``amount`` fits now."""
        return amount <= self.available(now) + _EPS

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits: 0 when it fits now, ``inf`` when it never can."""
        if amount > self.capacity + _EPS:
            return math.inf
        missing = amount - self.available(now)
        if missing <= _EPS:
            return 0.0
        return missing / self.rate

    def time_to_full(self, now: float) -> float:
        """Seconds until the bucket is full again (what ``x-ratelimit-reset-*`` reports)."""
        missing = self.capacity - self.available(now)
        return max(0.0, missing / self.rate)

    def take(self, amount: float, now: float) -> None:
        """Remove ``amount`` (the caller checked ``has_room``; the level may dip by float noise)."""
        self._level = self.available(now) - amount
        self._updated = max(now, self._updated)

    def give(self, amount: float, now: float) -> None:
        """Put ``amount`` back (a refund), never above capacity."""
        self._level = min(self.capacity, self.available(now) + amount)
        self._updated = max(now, self._updated)

    def refill(self, now: float) -> None:
        """Make the bucket full."""
        self._level = self.capacity
        self._updated = now
