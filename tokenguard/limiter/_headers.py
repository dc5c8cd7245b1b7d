"""Groq's rate-limit headers, read into one value.

``x-ratelimit-*-tokens`` describe the TPM bucket, ``x-ratelimit-*-requests`` the
RPD bucket (Groq sends nothing for RPM or TPD); resets are Go durations;
``retry-after`` (seconds) comes with a 429. A header that cannot be read is
ignored (with a debug event), never fatal: the limiter keeps its own bookkeeping.
A limit is evidence the limiter adopts both ways, so it is believed only when it is a
plain whole decimal number from 1 to :data:`MAX_LIMIT`; a remaining count above the same
response's limit contradicts it and is not believed either.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._durations import parse_go_duration
from ..events import LimiterBadHeader, emit

__all__ = ["MAX_LIMIT", "ServerView", "parse_headers"]

#: The largest ``x-ratelimit-limit-*`` believed: a billion tokens per minute (or requests
#: per day) is over a thousand times Groq's largest published limits (300,000 TPM,
#: 500,000 RPD), so no real account is refused, while a garbled or hostile header
#: cannot lift the limiter beyond any real server's bucket.
MAX_LIMIT = 10**9


class ServerView(NamedTuple):
    """What one response said about the server's buckets (``None``: not said).

    A named tuple rather than a frozen dataclass: one is read from every instrumented
    response, and a frozen dataclass pays a ``setattr`` call per field to build.

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
        """Whether the headers said nothing at all."""
        return self.count(None) == _FIELDS


_FIELDS = len(ServerView._fields)
_EMPTY = ServerView()
#: Builds a view from its seven values at once, without the keyword-taking ``__new__``.
_new_view = tuple.__new__


def _count_text(name: str, text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        _bad(name)
        return None
    return math.floor(value)


def _duration_text(name: str, text: str) -> float | None:
    if _PLAIN_SECONDS(text) is not None:
        return float(text[:-1])  # Groq's usual "6s" / "1.2s", without the general parser
    if _PLAIN_MILLISECONDS(text) is not None:
        return float(text[:-2]) * 1e-3  # "520ms", as the general parser computes it
    try:
        return parse_go_duration(text)
    except ValueError:
        _bad(name)
        return None


_PLAIN_SECONDS = re.compile(r"\d{1,9}(?:\.\d{1,12})?s").fullmatch
_PLAIN_MILLISECONDS = re.compile(r"\d{1,9}(?:\.\d{1,12})?ms").fullmatch


def _bad(name: str) -> None:
    emit(LimiterBadHeader(header=name))


def _text(value: Any) -> str:
    """A header value as the general readers take it: decoded, stripped."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip()


#: Integers below this are exact as floats: ``int(text)`` is then what ``_count_text`` reads.
_EXACT = 2**53


def _count(name: str, value: Any) -> int | None:
    """A count header's value (``None``: not sent, or unreadable): a plain non-negative
    integer (what Groq sends) read by ``int`` straight from the bytes, anything else by
    :func:`_count_text`."""
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1  # not a plain integer: the general reader decides
    return n if 0 <= n < _EXACT else _count_text(name, _text(value))


def _limit(name: str, value: Any) -> int | None:
    """A limit header's value: plain decimal digits (what Groq sends; ``6000.5`` or
    ``6e3`` is no limit) believed only in ``1..MAX_LIMIT`` (a limit of 0 would stall
    every request; see :data:`MAX_LIMIT`)."""
    if value is None:
        return None
    if type(value) is not bytes or not value.isdigit():  # bytes: ASCII digits only
        value = _text(value)
        if not (value.isascii() and value.isdigit()):
            _bad(name)
            return None
    # Longer than any believable limit: not read (``int`` refuses 4,300 digits and more).
    n = int(value) if len(value) < 20 else 0
    if not 0 < n <= MAX_LIMIT:
        _bad(name)
        return None
    return n


def _within(name: str, remaining: int | None, limit: int | None) -> int | None:
    """``remaining``, unless the same response's ``limit`` says it cannot be (more room
    than the bucket holds): then reported under ``name`` and not believed."""
    if remaining is not None and limit is not None and remaining > limit:
        _bad(name)
        return None
    return remaining


#: Durations read before (values repeat: "6s", "2m59.56s", ...), by their raw value.
_DURATIONS: dict[Any, float] = {}


def _duration(name: str, value: Any) -> float | None:
    """A duration header's value in seconds, remembered by its raw value (a bad value is
    not remembered, so each one is reported)."""
    if value is None:
        return None
    seconds = _DURATIONS.get(value)
    if seconds is None:
        seconds = _duration_text(name, _text(value))
        if seconds is not None:
            if len(_DURATIONS) >= 512:  # bounded: resets take many values over a day
                _DURATIONS.clear()
            _DURATIONS[value] = seconds
    return seconds


#: The headers a view is read from, in the view's field order; then ``retry-after-ms``,
#: which wins over ``retry-after`` when both are sent.
_NAMES = (
    _REMAINING_TOKENS := "x-ratelimit-remaining-tokens",
    _RESET_TOKENS := "x-ratelimit-reset-tokens",
    _LIMIT_TOKENS := "x-ratelimit-limit-tokens",
    _REMAINING_REQUESTS := "x-ratelimit-remaining-requests",
    _RESET_REQUESTS := "x-ratelimit-reset-requests",
    _LIMIT_REQUESTS := "x-ratelimit-limit-requests",
    _RETRY_AFTER := "retry-after",
    _RETRY_AFTER_MS := "retry-after-ms",
)
#: Lower-cased name (str and bytes) -> its place in ``_NAMES``.
_AT: dict[Any, int] = {n: i for i, n in enumerate(_NAMES)}
_AT.update({n.encode("latin-1"): i for i, n in enumerate(_NAMES)})
#: The first bytes a wanted name can have, in any case.
_FIRST = frozenset(b"xXrR")


def _raw_values(raw: list[Any]) -> list[Any] | None:
    """The wanted values of httpx's raw ``(name, value)`` byte pairs, by place in
    ``_NAMES`` (the last of repeated names wins); ``None`` when ``raw`` is not of that
    shape. A response carries a dozen other headers: each is ruled out by one lookup
    of its name as sent (or by its first byte), with nothing decoded or copied."""
    values: list[Any] = [None] * len(_NAMES)
    at_name = _AT.get
    try:
        for k, v in raw:
            at = at_name(k)
            if at is None and (k[0] not in _FIRST or (at := at_name(k.lower())) is None):
                continue
            if type(v) is not bytes:
                return None
            values[at] = v
    except (TypeError, ValueError, AttributeError, IndexError, KeyError):
        return None  # not httpx's shape after all: read it as a mapping
    return values


def _mapping_values(headers: Any) -> list[Any]:
    """The wanted values of any mapping (``dict``, ``httpx.Headers``), any case."""
    values: list[Any] = [None] * len(_NAMES)
    items = getattr(headers, "items", None)
    if items is None:
        return values
    for key, value in items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(key, str) and isinstance(value, str):
            at = _AT.get(key.lower())
            if at is not None:
                values[at] = value
    return values


def parse_headers(headers: Mapping[str, Any] | Any) -> ServerView:
    """Read the rate-limit headers from any mapping (``dict``, ``httpx.Headers``), any case."""
    raw = None if type(headers) is dict else getattr(headers, "raw", None)
    values = _raw_values(raw) if type(raw) is list else None
    if values is None:
        values = _mapping_values(headers)
    rt, xt, lt, rr, xr, lr, ra, ms = values
    if ms is not None:  # milliseconds win: retry-after is not even read
        n = _count(_RETRY_AFTER_MS, ms)
        retry = None if n is None else n / 1000
    elif ra is not None:
        retry = _duration(_RETRY_AFTER, ra)
    elif rt is xt is lt is rr is xr is lr is None:
        return _EMPTY
    else:
        retry = None
    # Each field by its own reader, in the view's order (that of ``_NAMES``); a remaining
    # count is then checked against the limit beside it.
    limit_tokens, limit_requests = _limit(_LIMIT_TOKENS, lt), _limit(_LIMIT_REQUESTS, lr)
    return _new_view(
        ServerView,
        (
            _within(_REMAINING_TOKENS, _count(_REMAINING_TOKENS, rt), limit_tokens),
            _duration(_RESET_TOKENS, xt),
            limit_tokens,
            _within(_REMAINING_REQUESTS, _count(_REMAINING_REQUESTS, rr), limit_requests),
            _duration(_RESET_REQUESTS, xr),
            limit_requests,
            retry,
        ),
    )
