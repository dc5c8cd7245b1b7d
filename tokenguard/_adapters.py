"""Reading what the openai and groq SDKs hand back: usage, headers, errors.

Both SDKs (and plain dicts, for code that posts JSON itself) are read by shape,
never by import, so neither SDK is needed to import tokenguard and a new SDK
version with the same fields keeps working. Everything here is a pure function of
the object it is given (but an HTTP-date ``retry-after`` without a ``date`` header,
which is read against this host's clock).

* :func:`usage_of` finds the usage of a completion, a raw response, a stream chunk
  (``x_groq.usage`` or ``usage``), or a dict;
* :func:`headers_of` finds the HTTP headers of a raw response or an error;
* :func:`classify` tells what an exception means for the guard (rate limited, too
  large, context exceeded, server or connection failure, ...) with the numbers the
  server gave.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._durations import parse_go_duration

__all__ = ["Failure", "FailureKind", "NamedLimit", "Usage", "classify", "headers_of", "usage_of"]


class Usage(NamedTuple):
    """Token usage as the server reported it.

    ``cached_tokens`` (prompt tokens served from Groq's cache) do not count toward
    Groq's rate limits; :attr:`limit_tokens` is what does. (A named tuple: one is built
    for every response, and a frozen dataclass pays a ``setattr`` call per field.)
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def limit_tokens(self) -> int:
        """Tokens that count toward the rate limits: the total less cached prompt tokens."""
        return max(0, self.total_tokens - self.cached_tokens)


#: Whether a type is a Mapping, per type: an ABC check of a pydantic model (what the
#: SDKs return) misses the ABC cache's fast path and cost more than the read itself.
_IS_MAPPING: dict[type, bool] = {dict: True}


def _is_mapping(obj: Any) -> bool:
    kind = type(obj)
    mapping = _IS_MAPPING.get(kind)
    if mapping is None:
        mapping = isinstance(obj, Mapping)
        if len(_IS_MAPPING) < 256:  # bounded: classes made on the fly must not pile up
            _IS_MAPPING[kind] = mapping
    return mapping


def _get(obj: Any, name: str) -> Any:
    if _is_mapping(obj):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int | None:
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _usage_from(raw: Any) -> Usage | None:
    if raw is None:
        return None
    if not _IS_MAPPING.get(type(raw), True):
        # An SDK usage model, on every call: its attributes read directly.
        try:
            prompt, completion, total = raw.prompt_tokens, raw.completion_tokens, raw.total_tokens
            plain = raw.prompt_tokens_details is None and raw.completion_tokens_details is None
        except AttributeError:
            plain = False
        if (
            plain
            and type(prompt) is int
            and type(completion) is int
            and type(total) is int
            and min(prompt, completion, total) >= 0
        ):
            return Usage(prompt, completion, total)
    prompt = _int(_get(raw, "prompt_tokens"))
    completion = _int(_get(raw, "completion_tokens"))
    if prompt is None or completion is None:
        return None
    total = _int(_get(raw, "total_tokens"))
    cached = _int(_get(_get(raw, "prompt_tokens_details"), "cached_tokens")) or 0
    reasoning = _int(_get(_get(raw, "completion_tokens_details"), "reasoning_tokens")) or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total if total is not None else prompt + completion,
        cached_tokens=min(cached, prompt),
        reasoning_tokens=reasoning,
    )


def usage_of(obj: Any) -> Usage | None:
    """The usage carried by ``obj``, or ``None`` when it carries none.

    ``obj`` may be a ``ChatCompletion``, a stream chunk (Groq puts the usage of a
    stream in the last chunk's ``x_groq.usage``; with ``stream_options.include_usage``
    a final chunk has ``usage``), an already parsed dict of either, or a raw response
    (``with_raw_response``), which is parsed (the SDK caches the parse).

    Example::

        usage_of({"usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
    """
    if obj is None:
        return None
    usage = _usage_from(obj.get("usage") if _is_mapping(obj) else getattr(obj, "usage", None))
    if usage is not None:
        return usage
    return _usage_elsewhere(obj)


def _usage_elsewhere(obj: Any) -> Usage | None:
    """:func:`usage_of` of an object without ``usage``: a stream chunk, a raw response."""
    x_groq = _get(obj, "x_groq")
    if x_groq is None:
        # pydantic models keep unknown fields in ``model_extra``.
        extra = getattr(obj, "model_extra", None)
        if isinstance(extra, Mapping):
            x_groq = extra.get("x_groq")
    usage = _usage_from(_get(x_groq, "usage"))
    if usage is not None:
        return usage
    parse = getattr(obj, "parse", None)
    if callable(parse) and hasattr(obj, "headers") and hasattr(obj, "http_response"):
        return usage_of(parse())
    return None


def headers_of(obj: Any) -> Mapping[str, str] | None:
    """The HTTP headers of a raw response, an SDK error, or an ``httpx.Response``."""
    if obj is None:
        return None
    headers = getattr(obj, "headers", None)
    if headers is None:
        response = getattr(obj, "response", None)
        headers = getattr(response, "headers", None)
    return headers if headers is not None and _is_mapping(headers) else None


class FailureKind(enum.Enum):
    """What an exception from a chat call means for the guard."""

    RATE_LIMITED = "rate_limited"  # 429: wait as the server says, then retry
    TOO_LARGE = "too_large"  # 413: the request costs more than the limit itself
    CONTEXT_EXCEEDED = "context_exceeded"  # 400 context_length_exceeded: refit
    REJECTED = "rejected"  # another 4xx: the request itself is wrong; do not retry
    SERVER = "server"  # 5xx: the server may have charged it
    CONNECTION = "connection"  # the connection failed before the request was sent
    DROPPED = "dropped"  # sent, the connection closed before an answer: may have been charged
    TIMEOUT = "timeout"  # sent, no answer in time: the server may have charged it
    OTHER = "other"  # not an SDK error: raised by the wrapped code itself


class NamedLimit(NamedTuple):
    """The limit a 429 or 413 body names, read strictly from its one clause ("on tokens
    per day (TPD): Limit 500000, Used 499950, Requested 120. Please try again in
    2m3.5s"): ``name`` ("tpm", "rpm", "tpd", "rpd"), the numbers as written (``used``
    ``None`` when not given, as in a 413), and ``wait`` the "try again in" in seconds
    (``None``: not given). Unchecked: whether they can be believed is the reader's
    question (see ``tokenguard.limiter.Limiter.observe_limit``)."""

    name: str
    limit: int
    used: int | None
    requested: int
    wait: float | None


@dataclass(frozen=True)
class Failure:
    """An exception read: its kind and what the server said.

    ``limit_name`` is ``"tpm"``, ``"rpm"``, ``"tpd"`` or ``"rpd"`` when the body names
    it; ``limit``/``used``/``requested`` are the numbers of a 413/429 body;
    ``retry_after`` (seconds) comes from ``retry-after`` (seconds or an HTTP date) or
    the body's "try again in": a finite wait >= 0, or ``inf`` when the server asked for
    an endless one (never NaN or negative).
    ``reached_server`` says whether the request may have been charged.
    """

    kind: FailureKind
    status: int | None = None
    code: str | None = None
    limit_name: str | None = None
    limit: int | None = None
    used: int | None = None
    requested: int | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] | None = None
    #: The 413/429 body's limit clause when it reads strictly (see :class:`NamedLimit`).
    named: NamedLimit | None = None

    @property
    def reached_server(self) -> bool:
        return self.kind not in (FailureKind.CONNECTION, FailureKind.OTHER)

    @property
    def may_be_charged(self) -> bool:
        """Whether the server may have charged the request though it answered nothing
        usable: a 5xx, a timeout, or a connection closed after the request was sent."""
        return self.kind in (FailureKind.SERVER, FailureKind.TIMEOUT, FailureKind.DROPPED)

    @property
    def error_type(self) -> str:
        """A short name for ``error.type`` in usage events."""
        if self.status is not None:
            return str(self.status)
        if self.kind is FailureKind.OTHER and self.code is not None:
            return self.code  # the class of an exception no SDK wrapped (a cut stream)
        return self.kind.value


_LIMIT_NAMES = {
    "tokens per minute": "tpm",
    "requests per minute": "rpm",
    "tokens per day": "tpd",
    "requests per day": "rpd",
}
_NAMED = re.compile(r"(tokens|requests) per (minute|day)", re.IGNORECASE)
_NUMBER = {
    "limit": re.compile(r"\bLimit (\d+)"),
    "used": re.compile(r"\bUsed (\d+)"),
    "requested": re.compile(r"\bRequested (\d+)"),
}
_TRY_AGAIN = re.compile(r"try again in ((?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))+)")
#: Groq's limit clause, whole: the words and the abbreviation must agree (checked), the
#: numbers plain digits (at most 19: an int64), "Used" only in a 429.
_CLAUSE = re.compile(
    r"\bon (tokens|requests) per (minute|day) \(([TR]P[MD])\): Limit (\d{1,19}), "
    r"(?:Used (\d{1,19}), )?Requested (\d{1,19})(?:[.,]|$)"
)
#: The wait right after the clause.
_CLAUSE_WAIT = re.compile(r" Please try again in ((?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))+)\.")


def _error_body(exc: Any) -> tuple[str, str | None, str | None]:
    """(message, code, type) of an SDK error's JSON body, tolerant of its shapes."""
    body = getattr(exc, "body", None)
    err = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        message = err.get("message")
        code = err.get("code")
        kind = err.get("type")
        return (
            message if isinstance(message, str) else str(getattr(exc, "message", "")),
            code if isinstance(code, str) else None,
            kind if isinstance(kind, str) else None,
        )
    return str(getattr(exc, "message", "") or exc), getattr(exc, "code", None), None


def _retry_after(headers: Mapping[str, str] | None, message: str) -> float | None:
    """Seconds a 429 asks to wait: ``retry-after-ms``, else ``retry-after`` (seconds or
    an HTTP date), else the body's "try again in". A value that is not a finite
    non-negative wait (NaN, negative, unreadable) is not believed and the next source is
    read; an infinite one (``inf``, ``1e400``) is kept as ``inf`` for the guard to refuse
    (it is no wait anyone can sleep)."""
    if headers is not None:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            wait = _seconds(ms, 1e-3)
            if wait is not None:
                return wait
        text = headers.get("retry-after")
        if text is not None:
            wait = _seconds(text, 1.0)
            if wait is None:
                wait = _http_date_wait(text, headers.get("date"))
            if wait is not None:
                return wait
    found = _TRY_AGAIN.search(message)
    if found is not None:
        try:
            return parse_go_duration(found.group(1))
        except ValueError:
            return None
    return None


def _seconds(text: Any, unit: float) -> float | None:
    """``text`` as a number of ``unit`` seconds: ``None`` unless it is a number >= 0
    (``inf`` included: see :func:`_retry_after`)."""
    try:
        value = float(text) * unit
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None  # NaN compares false: not believed either


def _http_date_wait(text: Any, date: Any) -> float | None:
    """Seconds until the HTTP date ``text`` (RFC 9110 allows it in ``retry-after``),
    counted from the response's own ``date`` header when it has one (the server's clock,
    so a skewed client clock does not matter), else from this host's clock."""
    when = _http_date(text)
    if when is None:
        return None
    now = _http_date(date)
    return max(0.0, when - (time.time() if now is None else now))


def _http_date(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 reads it
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _named_limit(message: str) -> NamedLimit | None:
    """The body's limit clause when it reads strictly, else ``None``."""
    found = _CLAUSE.search(message)
    if found is None:
        return None
    unit, period, abbreviation, limit, used, requested = found.groups()
    name = _LIMIT_NAMES[f"{unit} per {period}"]
    if abbreviation.lower() != name:
        return None
    wait = None
    after = _CLAUSE_WAIT.match(message, found.end())
    if after is not None:
        try:
            wait = parse_go_duration(after.group(1))
        except ValueError:
            return None
    return NamedLimit(name, int(limit), None if used is None else int(used), int(requested), wait)


#: The transport's errors (httpx's) raised before a request's bytes left: the server
#: cannot have seen it. Any other cause of a connection error may come after it did.
_BEFORE_SENDING = frozenset(
    (
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "ProxyError",
        "UnsupportedProtocol",
        "LocalProtocolError",  # a request the client's own HTTP layer would not write
        "InvalidURL",
    )
)
#: httpx's error for a request on a closed client (a RuntimeError of its own words).
_CLOSED_CLIENT = "client has been closed"


def _before_sending(exc: BaseException) -> bool:
    """Whether an SDK's connection error came before the request's bytes left: no
    connection, a request its HTTP layer would not write, or a closed client."""
    cause = exc.__cause__
    for _ in range(8):  # the chain of causes, bounded
        if cause is None:
            return False
        if any(c.__name__ in _BEFORE_SENDING for c in type(cause).__mro__):
            return True
        if isinstance(cause, RuntimeError) and _CLOSED_CLIENT in str(cause):
            return True
        cause = cause.__cause__
    return False


def classify(exc: BaseException) -> Failure:
    """Read an exception raised by a chat call (openai or groq SDK, or anything else).

    Example::

        try:
            client.chat.completions.create(...)
        except Exception as e:
            f = classify(e)          # Failure(kind=FailureKind.RATE_LIMITED, retry_after=4.77, ...)
    """
    names = {c.__name__ for c in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or "APIStatusError" not in names:
        if "APITimeoutError" in names:
            return Failure(FailureKind.TIMEOUT)
        if "APIConnectionError" in names:
            return Failure(FailureKind.CONNECTION if _before_sending(exc) else FailureKind.DROPPED)
        return Failure(FailureKind.OTHER)
    headers = headers_of(exc)
    message, code, _ = _error_body(exc)
    numbers = {
        k: (int(m.group(1)) if (m := rx.search(message)) else None) for k, rx in _NUMBER.items()
    }
    named = _NAMED.search(message)
    limit_name = _LIMIT_NAMES.get(named.group(0).lower()) if named else None
    if status == 429:
        kind = FailureKind.RATE_LIMITED
    elif status == 413:
        kind = FailureKind.TOO_LARGE
    elif status == 400 and code == "context_length_exceeded":
        kind = FailureKind.CONTEXT_EXCEEDED
    elif status >= 500:
        kind = FailureKind.SERVER
    else:
        kind = FailureKind.REJECTED
    return Failure(
        kind,
        status=status,
        code=code,
        limit_name=limit_name,
        limit=numbers["limit"],
        used=numbers["used"],
        requested=numbers["requested"],
        retry_after=_retry_after(headers, message) if kind is FailureKind.RATE_LIMITED else None,
        headers=headers,
        named=_named_limit(message) if kind in _NAMING else None,
    )


#: The refusals whose body names the limit that bound them.
_NAMING = (FailureKind.RATE_LIMITED, FailureKind.TOO_LARGE)
