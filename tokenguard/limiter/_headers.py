"""Groq's rate-limit headers, read into one value.

``x-ratelimit-*-tokens`` describe the TPM bucket, ``x-ratelimit-*-requests`` the
RPD bucket (Groq sends nothing for RPM or TPD); resets are Go durations;
``retry-after`` (seconds) comes with a 429. A header that cannot be read is
ignored (with a debug event), never fatal: the limiter keeps its own bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._durations import parse_go_duration
from ..events import LimiterBadHeader, emit

__all__ = ["ServerView", "parse_headers"]


@dataclass(frozen=True)
class ServerView:
    """What one response said about the server's buckets (``None``: not said).

    Example::

        parse_headers({"x-ratelimit-remaining-tokens": "5400", "x-ratelimit-reset-tokens": "6s"})
        # ServerView(remaining_tokens=5400, reset_tokens=6.0, ...)
    """

    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_requests: int | None = None
    retry_after: float | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in vars(self).values())


def _count(name: str, text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        _bad(name)
        return None
    return math.floor(value)


def _duration(name: str, text: str) -> float | None:
    try:
        return parse_go_duration(text)
    except ValueError:
        _bad(name)
        return None


def _bad(name: str) -> None:
    emit(LimiterBadHeader(header=name))


def _items(headers: Mapping[str, Any] | Any) -> Iterable[tuple[str, Any]]:
    items = getattr(headers, "items", None)
    if items is None:
        return ()
    return items()  # type: ignore[no-any-return]


def parse_headers(headers: Mapping[str, Any] | Any) -> ServerView:
    """Read the rate-limit headers from any mapping (``dict``, ``httpx.Headers``), any case."""
    found: dict[str, str] = {}
    for key, value in _items(headers):
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(key, str) and isinstance(value, str):
            found[key.lower()] = value.strip()
    fields: dict[str, Any] = {}
    for suffix in ("tokens", "requests"):
        if (v := found.get(f"x-ratelimit-remaining-{suffix}")) is not None:
            fields[f"remaining_{suffix}"] = _count(f"x-ratelimit-remaining-{suffix}", v)
        if (v := found.get(f"x-ratelimit-limit-{suffix}")) is not None:
            fields[f"limit_{suffix}"] = _count(f"x-ratelimit-limit-{suffix}", v)
        if (v := found.get(f"x-ratelimit-reset-{suffix}")) is not None:
            fields[f"reset_{suffix}"] = _duration(f"x-ratelimit-reset-{suffix}", v)
    if (v := found.get("retry-after-ms")) is not None:
        ms = _count("retry-after-ms", v)
        fields["retry_after"] = ms / 1000 if ms is not None else None
    elif (v := found.get("retry-after")) is not None:
        # An HTTP-date is legal here too; Groq sends seconds, so a date is ignored.
        fields["retry_after"] = _duration("retry-after", v)
    return ServerView(**fields)
