"""Process-wide state the guards share: default limiters and limits learned from servers.

Without ``limiter=``, every guarded function and instrumented client of a process that
talks to the same model at the same base URL shares one :class:`~tokenguard.Limiter`
built from the model table (or from explicit ``tpm=``/``rpm=``/... options, shared by
every guard giving the same ones), so they spend one quota together.

Limits learned from a server's refusals are evidence, not orders: one is never below
what that server already served for the model, never 0, and lapses after
:data:`LESSON_TTL_S` (the next refusal teaches it again).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from .._discovery import default_directory, model_info
from ..errors import ConfigurationError
from ..limiter import Limiter
from ._options import DEFAULT_BASE_URL, GuardOptions

__all__ = [
    "LESSON_TTL_S",
    "Learned",
    "Served",
    "learned",
    "limiter_for",
    "normalize_base_url",
    "remember",
    "reset",
    "saw_served",
    "served",
]

_lock = threading.Lock()
_limiters: dict[tuple[object, ...], Limiter | None] = {}


#: Seconds a learned limit is kept (on the clock of the guard that learned it): a server
#: that refused wrongly, or raised its limits since, is not believed for ever.
LESSON_TTL_S = 600.0


@dataclass(frozen=True)
class Learned:
    """Limits a server showed to be tighter than the table: ``context_window`` (from a
    ``context_length_exceeded``) and ``tpm`` (from a 413), both kept ``until`` then."""

    context_window: int | None = None
    tpm: int | None = None
    until: float = math.inf


_learned: dict[tuple[str, str], Learned] = {}
_NOTHING_LEARNED = Learned()  # read on every call: one value, not one per call


class Served:
    """The largest request a server served for a model: its ``total_tokens`` (the prompt
    with its ``max_tokens``, or its completion when larger: a context window is at least
    that) and its ``limit_tokens`` (a TPM limit is at least that)."""

    __slots__ = ("limit_tokens", "total_tokens")

    def __init__(self) -> None:
        self.total_tokens = 0
        self.limit_tokens = 0


_served: dict[tuple[str, str], Served] = {}
_NOTHING_SERVED = Served()


#: Counts every change to what this module hands out (a limit learned, a reset): what a
#: call site worked out from it is good while the generation it read is current.
generation = 0


def normalize_base_url(url: object) -> str:
    """One spelling per endpoint: no trailing slash, lower-case scheme and host."""
    text = str(url or DEFAULT_BASE_URL).rstrip("/")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def limiter_for(opts: GuardOptions, base_url: str, model: str, account: str = "") -> Limiter | None:
    """The limiter a call to ``model`` at ``base_url`` for ``account`` goes through
    (``None``: no limits are known for the model and none were given, so only counting
    and fitting apply).

    Explicit ``tpm=``/``rpm=``/``tpd=``/``rpd=`` are the limits, all of them: the table
    adds none (a paid account must not stall on the free tier's day limits). Otherwise
    the table's ``tier`` is the starting point, which the server's headers then correct
    (see :class:`~tokenguard.Limiter`)."""
    if not opts.rate_limit:
        return None
    if opts.limiter is not None:
        return opts.limiter
    key = (base_url, model, account, opts.tier, opts.tpm, opts.rpm, opts.tpd, opts.rpd, opts.window)
    found = _limiters.get(key, _lock)
    if found is not _lock:
        return found  # type: ignore[return-value]
    with _lock:
        if key in _limiters:
            return _limiters[key]
        window: dict[str, Any] = {} if opts.window is None else {"window": opts.window}
        limiter: Limiter | None
        if any(v is not None for v in (opts.tpm, opts.rpm, opts.tpd, opts.rpd)):
            limiter = Limiter(tpm=opts.tpm, rpm=opts.rpm, tpd=opts.tpd, rpd=opts.rpd, **window)
        else:
            tier = "free" if opts.tier is None else opts.tier  # make_options resolved it
            try:
                limiter = Limiter.from_model(model_info(base_url, model), tier, **window)
            except ConfigurationError:
                # A model without known limits (and none given): nothing to limit against.
                limiter = None
        _limiters[key] = limiter
        return limiter


def learned(base_url: str, model: str) -> Learned:
    """What the server at ``base_url`` showed of ``model``'s real limits so far (lapsed
    lessons included: the reader compares ``until`` with its own clock)."""
    return _learned.get((base_url, model), _NOTHING_LEARNED)


def remember(
    base_url: str,
    model: str,
    *,
    now: float,
    context_window: int | None = None,
    tpm: int | None = None,
) -> Learned:
    """Record a tighter limit of ``model`` at ``now``: kept :data:`LESSON_TTL_S` from
    then; a looser one never replaces a tighter one still kept."""
    global generation
    with _lock:
        old = _learned.get((base_url, model), _NOTHING_LEARNED)
        if old.until <= now:
            old = _NOTHING_LEARNED
        new = Learned(
            context_window=_tighter(old.context_window, context_window),
            tpm=_tighter(old.tpm, tpm),
            until=now + LESSON_TTL_S,
        )
        _learned[(base_url, model)] = new
        generation += 1
        return new


def served(base_url: str, model: str) -> Served:
    """The largest request the server at ``base_url`` served for ``model`` so far."""
    return _served.get((base_url, model), _NOTHING_SERVED)


def saw_served(base_url: str, model: str, total_tokens: int, limit_tokens: int) -> None:
    """Note a served request's usage (called for every response: a look-up and two
    comparisons unless it is the largest yet)."""
    known = _served.get((base_url, model))
    if (
        known is not None
        and total_tokens <= known.total_tokens
        and limit_tokens <= known.limit_tokens
    ):
        return
    with _lock:
        known = _served.get((base_url, model))
        if known is None:
            if len(_served) >= 4096:  # bounded: model names come from callers
                _served.clear()
            known = _served[(base_url, model)] = Served()
        known.total_tokens = max(known.total_tokens, total_tokens)
        known.limit_tokens = max(known.limit_tokens, limit_tokens)


def _tighter(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def reset() -> None:
    """Forget every default limiter, learned limit and discovered model (for tests and
    long-lived shells).

    Example::

        from tokenguard import reset_defaults
        reset_defaults()   # the next guarded call builds its limiter afresh
    """
    global generation
    with _lock:
        _limiters.clear()
        _learned.clear()
        _served.clear()
        default_directory().clear()
        generation += 1
