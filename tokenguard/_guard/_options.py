"""The guard's options: one frozen value, checked once when the guard is made."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypedDict

from ..errors import ConfigurationError
from ..fitting import DEFAULT_RESERVE, Strategy, StrategyCallable, Summarizer
from ..limiter._priority import Priority, check_priority

if TYPE_CHECKING:
    from ..limiter import Limiter
    from ..models import Limits

#: The environment variable giving the tier when ``tier=`` is not given.
TIER_ENV = "TOKENGUARD_TIER"

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_RETRIES",
    "DEFAULT_WAIT_EVENT_S",
    "TIER_ENV",
    "GuardKwargs",
    "GuardOptions",
    "InstrumentKwargs",
    "make_options",
    "read_tier",
]

#: Groq's OpenAI-compatible endpoint: the base URL a decorated function is assumed to
#: talk to (its default limiters are shared with clients instrumented for that URL).
DEFAULT_BASE_URL = "https://api.groq.com/openai/v1"

#: 429 retries of one call by default. The openai and groq SDKs retry a 429 twice
#: (``max_retries=2``, after ``retry-after`` when it is at most 120 s (openai) or 60 s
#: (groq), else after 0.5-8 s of backoff); the guard waits as the server says, so it
#: can afford more, and six backoffs without a server wait (1, 2, 4, 8, 16, 32 s, less
#: up to a quarter at random, each at most the window) span about one window before the
#: caller sees the 429. See docs/reliability.md.
DEFAULT_RETRIES = 6

#: Waits at least this long (seconds) are reported as ``tokenguard.guard.wait`` events.
DEFAULT_WAIT_EVENT_S = 1.0

_STRATEGIES = ("truncate", "summarize", "error")


@dataclass(frozen=True)
class GuardOptions:
    """Everything a guard was asked to do (see :func:`tokenguard.guard`).

    ``default_reserve`` is the completion reservation of a call that sends no
    ``max_tokens``: what the server is assumed to hold for it (Groq does not document
    it; the emulator holds the same by default), capped by the room left in the
    context window. ``cap_max_tokens`` (opt-in) sends an explicit ``max_tokens`` of at
    most that many tokens. ``retries`` bounds the 429 retries (:data:`DEFAULT_RETRIES`;
    ``None``: retry until ``max_wait`` runs out, forever without one). ``fallback``: the
    models a call goes to when its own cannot serve it in time (a tuple once checked).
    """

    model: str | None = None
    limiter: Limiter | None = None
    tpm: int | None = None
    rpm: int | None = None
    tpd: int | None = None
    rpd: int | None = None
    window: float | None = None
    tier: str | Limits | None = None
    base_url: str | None = None
    context_window: int | None = None
    on_overflow: Strategy | StrategyCallable = "truncate"
    summarizer: Summarizer | None = None
    max_wait: float | None = None
    retries: int | None = DEFAULT_RETRIES
    fallback: list[str] | tuple[str, ...] | None = None
    priority: Priority = "interactive"
    messages_arg: str = "messages"
    model_arg: str = "model"
    default_reserve: int = DEFAULT_RESERVE
    cap_max_tokens: int | None = None
    rate_limit: bool = True
    log_content: bool = False
    wait_event_s: float = DEFAULT_WAIT_EVENT_S
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Any] | None = None

    @property
    def explicit_limits(self) -> bool:
        """Whether the options give limits of their own (not the model table's)."""
        return any(v is not None for v in (self.tpm, self.rpm, self.tpd, self.rpd, self.window))


class InstrumentKwargs(TypedDict, total=False):
    """The keyword options of :func:`tokenguard.instrument` (those of
    :func:`tokenguard.guard` but ``messages_arg`` and ``model_arg``): each is a field of
    :class:`GuardOptions`, with the same type; a test keeps the two in step."""

    #: The model of calls that name none.
    model: str | None
    #: A shared :class:`~tokenguard.Limiter` (e.g. on Redis), instead of limits of its own.
    limiter: Limiter | None
    #: Limits of its own (else the model table's, shared process-wide per base URL and
    #: model): tokens and requests per minute and per day, and the window in seconds.
    tpm: int | None
    rpm: int | None
    tpd: int | None
    rpd: int | None
    window: float | None
    #: Where the limits start for code that sees no headers: the model table's tier
    #: (``"free"``, ``"developer"``) or explicit :class:`~tokenguard.Limits`; default
    #: ``$TOKENGUARD_TIER``, else ``"free"``. The server's headers correct it.
    tier: str | Limits | None
    #: The endpoint the calls go to (Groq's by default): default limiters are per URL.
    base_url: str | None
    #: A context window smaller than the model table's.
    context_window: int | None
    #: What to do with a conversation that does not fit: ``"truncate"``, ``"summarize"``
    #: (with ``summarizer``), ``"error"`` or a callable.
    on_overflow: Strategy | StrategyCallable
    summarizer: Summarizer | None
    #: Seconds a call may wait for the rate window and the server's 429s (``None``: as
    #: long as it takes).
    max_wait: float | None
    #: The 429 retries (6 by default; ``None``: until ``max_wait``).
    retries: int | None
    #: Models to send a call to, in order, when its own would wait past ``max_wait`` or
    #: its day limit is spent (docs/guide/guard.md, "Fallback models").
    fallback: list[str] | tuple[str, ...] | None
    #: The calls' class in the limiter's queue: ``"interactive"`` (the default) or
    #: ``"batch"`` (admitted after waiting interactive calls, but for the limiter's
    #: ``batch_share``); a ``tg.priority(...)`` block around a call wins.
    priority: Priority
    #: Completion tokens held for a call without ``max_tokens``.
    default_reserve: int
    #: Opt-in: send an explicit ``max_tokens`` of at most that many.
    cap_max_tokens: int | None
    #: ``False``: count, fit and budget only.
    rate_limit: bool
    #: Put the messages sent in the call's event (off: events never carry content).
    log_content: bool
    #: Waits of at least this many seconds are reported as events.
    wait_event_s: float
    #: The clock and sleep of the waits (a fake pair in tests).
    clock: Callable[[], float]
    sleep: Callable[[float], Any] | None


class GuardKwargs(InstrumentKwargs, total=False):
    """The keyword options of :func:`tokenguard.guard`."""

    #: The function's parameter that takes the messages.
    messages_arg: str
    #: The function's parameter that takes the model.
    model_arg: str


def _positive_int(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int or None, got {value!r}")


def _seconds(name: str, value: object, *, positive: bool = False, forever: bool = False) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or (math.isinf(value) and not (forever and value > 0))
        or value < 0
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"{name} must be seconds {bound} or None, got {value!r}")


def read_tier(tier: object) -> str | Limits:
    """``tier=`` checked, or ``$TOKENGUARD_TIER`` when not given, else ``"free"``."""
    from ..models import TIERS, Limits

    where, expected = "tier", f"one of {list(TIERS)} or a tg.Limits"
    if tier is None:
        tier = os.environ.get(TIER_ENV, "").strip() or "free"
        # A variable holds a name, never a tg.Limits.
        where, expected = f"${TIER_ENV}", f"one of {list(TIERS)} (unset: 'free')"
    if isinstance(tier, Limits) or (isinstance(tier, str) and tier in TIERS):
        return tier
    raise ConfigurationError(f"{where} must be {expected}, got {tier!r}")


def make_options(**given: Any) -> GuardOptions:
    """Check the keyword options of ``guard``/``instrument`` and freeze them.

    Raises :class:`~tokenguard.ConfigurationError` naming the option, what was given
    and what is expected.
    """
    _refuse_unknown(given)
    opts = GuardOptions(**given)
    opts = replace(opts, tier=read_tier(opts.tier))
    if opts.model is not None and (not isinstance(opts.model, str) or not opts.model):
        raise ConfigurationError(f"model must be a non-empty str or None, got {opts.model!r}")
    _check_numbers(opts)
    check_priority(opts.priority)
    _check_strategy(opts)
    for name in ("messages_arg", "model_arg"):
        value = getattr(opts, name)
        if not isinstance(value, str) or not value.isidentifier():
            raise ConfigurationError(f"{name} must be a parameter name, got {value!r}")
    _check_limiter(opts)
    opts = _check_fallback(opts)
    if opts.base_url is not None and not isinstance(opts.base_url, str):
        raise ConfigurationError(f"base_url must be a str or None, got {opts.base_url!r}")
    if not callable(opts.clock):
        raise ConfigurationError(f"clock must be callable, got {opts.clock!r}")
    if opts.sleep is not None and not callable(opts.sleep):
        raise ConfigurationError(f"sleep must be callable or None, got {opts.sleep!r}")
    for name in ("rate_limit", "log_content"):
        # A str such as "false" (read from the environment) must not mean True.
        if type(getattr(opts, name)) is not bool:
            raise ConfigurationError(f"{name} must be True or False, got {getattr(opts, name)!r}")
    return opts


def _refuse_unknown(given: dict[str, Any]) -> None:
    known = GuardOptions.__dataclass_fields__
    for name in given:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(f"unknown guard option {name!r}{hint}")


def _check_numbers(opts: GuardOptions) -> None:
    for name in ("tpm", "rpm", "tpd", "rpd", "context_window", "cap_max_tokens"):
        _positive_int(name, getattr(opts, name))
    if isinstance(opts.default_reserve, bool) or not isinstance(opts.default_reserve, int):
        raise ConfigurationError(
            f"default_reserve must be an int >= 1, got {opts.default_reserve!r}"
        )
    if opts.default_reserve < 1:
        raise ConfigurationError(f"default_reserve must be an int >= 1, got {opts.default_reserve}")
    if opts.retries is not None and (
        isinstance(opts.retries, bool) or not isinstance(opts.retries, int) or opts.retries < 0
    ):
        raise ConfigurationError(f"retries must be an int >= 0 or None, got {opts.retries!r}")
    _seconds("max_wait", opts.max_wait, forever=True)  # math.inf: even a spent day limit
    _seconds("window", opts.window, positive=True)
    _seconds("wait_event_s", opts.wait_event_s)


def _check_strategy(opts: GuardOptions) -> None:
    if not callable(opts.on_overflow) and opts.on_overflow not in _STRATEGIES:
        raise ConfigurationError(
            f"on_overflow must be one of {list(_STRATEGIES)} or a callable, "
            f"got {opts.on_overflow!r}"
        )
    if opts.summarizer is not None and not callable(opts.summarizer):
        raise ConfigurationError(f"summarizer must be callable, got {opts.summarizer!r}")


def _check_fallback(opts: GuardOptions) -> GuardOptions:
    """``fallback`` checked and frozen into a tuple (``None`` when empty)."""
    given = opts.fallback
    if given is None:
        return opts
    if not isinstance(given, (list, tuple)):
        raise ConfigurationError(
            f"fallback must be a list of model names, got {type(given).__name__} {given!r}"
        )
    for name in given:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"fallback must be a list of non-empty model names (str), got {name!r} in {given!r}"
            )
    twice = sorted({name for name in given if given.count(name) > 1})
    if twice:
        raise ConfigurationError(f"fallback names {twice} more than once: {given!r}")
    if opts.model is not None and opts.model in given:
        raise ConfigurationError(
            f"fallback names the guard's own model {opts.model!r}: list only the models to "
            "go to when it cannot serve a call"
        )
    if given and opts.limiter is not None:
        raise ConfigurationError(
            "fallback= needs a limiter per model, and limiter= is one limiter for every "
            "model (a fallback model would wait on the same spent limits); give "
            "tpm=/rpm=/tpd=/rpd= or the model table's limits instead"
        )
    return replace(opts, fallback=tuple(given) or None)


def _check_limiter(opts: GuardOptions) -> None:
    if opts.limiter is None:
        return
    from ..limiter import Limiter

    if not isinstance(opts.limiter, Limiter):
        raise ConfigurationError(f"limiter must be a tg.Limiter, got {opts.limiter!r}")
    if opts.explicit_limits:
        raise ConfigurationError(
            "give either limiter= or tpm=/rpm=/tpd=/rpd=/window=, not both: a shared "
            "limiter has its own limits"
        )
