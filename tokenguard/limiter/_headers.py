"""Groq's rate-limit headers, read into one value.

``x-ratelimit-*-tokens`` describe the TPM bucket, ``x-ratelimit-*-requests`` the
RPD bucket (Groq sends nothing for RPM or TPD); resets are Go durations;
``retry-after`` (seconds) comes with a 429. A header that cannot be read is
ignored (with a debug event), never fatal: the limiter keeps its own bookkeeping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
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
    if _PLAIN_SECONDS(text) is not None:
        return float(text[:-1])  # Groq's usual "6s" / "1.2s", without the general parser
    try:
        return parse_go_duration(text)
    except ValueError:
        _bad(name)
        return None


_PLAIN_SECONDS = re.compile(r"\d{1,9}(?:\.\d{1,12})?s").fullmatch


def _bad(name: str) -> None:
    emit(LimiterBadHeader(header=name))


#: Lower-cased header names (as bytes) that can carry what :class:`ServerView` holds.
_PREFIXES = (b"x-ratelimit-", b"retry-after")
_FIRST = frozenset(b"xXrR")


def _found(headers: Mapping[str, Any] | Any) -> dict[str, str]:
    """The rate-limit headers of ``headers``, lower-cased, values stripped.

    An ``httpx.Headers`` (what the SDKs hand back) keeps its pairs as bytes in ``raw``:
    those are filtered by name before anything is decoded, since a response carries a
    dozen other headers and decoding every pair cost as much as the rest of a commit.
    """
    found: dict[str, str] = {}
    raw = None if type(headers) is dict else getattr(headers, "raw", None)
    if type(raw) is list:
        try:
            for k, v in raw:
                # Most names are ruled out by their first byte, before any copy is made.
                if k[0] in _FIRST and (name := k.lower()).startswith(_PREFIXES):
                    found[name.decode("latin-1")] = v.decode("latin-1").strip()
        except (TypeError, ValueError, AttributeError, IndexError):
            found.clear()  # not httpx's shape after all: read it as a mapping below
        else:
            return found
    items = getattr(headers, "items", None)
    if items is None:
        return found
    for key, value in items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(key, str) and isinstance(value, str):
            found[key.lower()] = value.strip()
    return found


def parse_headers(headers: Mapping[str, Any] | Any) -> ServerView:
    """Read the rate-limit headers from any mapping (``dict``, ``httpx.Headers``), any case."""
    found = _found(headers)
    if not found:
        return _EMPTY
    fields: dict[str, Any] = {}
    for header, field, read in _READERS:
        if (v := found.get(header)) is not None:
            fields[field] = read(header, v)
    if (v := found.get("retry-after-ms")) is not None:
        ms = _count("retry-after-ms", v)
        fields["retry_after"] = ms / 1000 if ms is not None else None
    elif (v := found.get("retry-after")) is not None:
        # An HTTP-date is legal here too; Groq sends seconds, so a date is ignored.
        fields["retry_after"] = _duration("retry-after", v)
    return ServerView(**fields)


_READERS: tuple[tuple[str, str, Callable[[str, str], int | float | None]], ...] = tuple(
    (f"x-ratelimit-{kind}-{suffix}", f"{kind}_{suffix}", _duration if kind == "reset" else _count)
    for suffix in ("tokens", "requests")
    for kind in ("remaining", "limit", "reset")
)
_EMPTY = ServerView()
