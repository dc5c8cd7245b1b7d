"""One model's four buckets (RPM, RPD, TPM, TPD): admission, charging and the headers.

Pure like the buckets: every method takes ``now``; the server holds the lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._durations import format_go_duration
from ._bucket import TokenBucket
from ._models import ModelSpec

__all__ = ["DAY_WINDOWS", "Denial", "LimitKind", "ModelLimits", "format_wait"]

# A "day" is 1440 windows, so a shortened window shortens the day with it.
DAY_WINDOWS = 1440


@dataclass(frozen=True)
class LimitKind:
    name: str  # "TPM"
    label: str  # "tokens per minute (TPM)"
    type: str  # "tokens" | "requests"
    per_day: bool


RPM = LimitKind("RPM", "requests per minute (RPM)", "requests", False)
RPD = LimitKind("RPD", "requests per day (RPD)", "requests", True)
TPM = LimitKind("TPM", "tokens per minute (TPM)", "tokens", False)
TPD = LimitKind("TPD", "tokens per day (TPD)", "tokens", True)
KINDS = (RPM, RPD, TPM, TPD)


@dataclass(frozen=True)
class Denial:
    """Why a request cannot be admitted now: the bucket needing the longest wait."""

    kind: LimitKind
    limit: int
    used: int
    requested: int
    wait: float


def format_wait(seconds: float) -> str:
    """A wait as a Go duration, rounded up to the millisecond so waiting it always suffices."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    return format_go_duration(max(0, ms) / 1000)


class ModelLimits:
    """The enforced limits of one model; a limit of ``None``/``0`` has no bucket."""

    def __init__(self, spec: ModelSpec, window: float, now: float) -> None:
        self.spec = spec
        self.window = window
        self.buckets: dict[str, TokenBucket] = {}
        self.limits: dict[str, int] = {}
        for kind in KINDS:
            limit = getattr(spec, kind.name.lower())
            if limit:
                period = window * DAY_WINDOWS if kind.per_day else window
                self.buckets[kind.name] = TokenBucket(limit, period, now)
                self.limits[kind.name] = int(limit)

    def too_large(self, tokens: int) -> tuple[LimitKind, int] | None:
        """The token limit (TPM first) that ``tokens`` exceeds by itself, if any (-> 413)."""
        for kind in (TPM, TPD):
            limit = self.limits.get(kind.name)
            if limit is not None and tokens > limit:
                return kind, limit
        return None

    def check(self, tokens: int, now: float) -> Denial | None:
        """``None`` when one request of ``tokens`` fits every bucket, else the longest wait."""
        worst: Denial | None = None
        for kind in KINDS:
            bucket = self.buckets.get(kind.name)
            if bucket is None:
                continue
            amount = 1 if kind.type == "requests" else tokens
            if bucket.has_room(amount, now):
                continue
            wait = bucket.wait_for(amount, now)
            if worst is None or wait > worst.wait:
                used = math.ceil(bucket.used(now) - 1e-6)
                worst = Denial(kind, self.limits[kind.name], used, amount, wait)
        return worst

    def charge(self, tokens: int, now: float) -> None:
        """Take one request and ``tokens`` from the buckets (after ``check`` said yes)."""
        for kind in KINDS:
            bucket = self.buckets.get(kind.name)
            if bucket is not None:
                bucket.take(1 if kind.type == "requests" else tokens, now)

    def refund(self, tokens: int, now: float) -> None:
        """Give ``tokens`` back to the token buckets (``refund_unused``)."""
        if tokens <= 0:
            return
        for name in ("TPM", "TPD"):
            bucket = self.buckets.get(name)
            if bucket is not None:
                bucket.give(tokens, now)

    def refill(self, now: float) -> None:
        for bucket in self.buckets.values():
            bucket.refill(now)

    def headers(self, now: float) -> dict[str, str]:
        """``x-ratelimit-*`` headers: ``requests`` is RPD, ``tokens`` is TPM (as Groq sends)."""
        out: dict[str, str] = {}
        for suffix, name in (("requests", "RPD"), ("tokens", "TPM")):
            bucket = self.buckets.get(name)
            if bucket is None:
                continue
            out[f"x-ratelimit-limit-{suffix}"] = str(self.limits[name])
            out[f"x-ratelimit-remaining-{suffix}"] = str(
                max(0, math.floor(bucket.available(now) + 1e-6))
            )
            out[f"x-ratelimit-reset-{suffix}"] = format_wait(bucket.time_to_full(now))
        return out
