"""Structured events: one small typed record per kind, one place that emits them.

Every event is a frozen dataclass below, named ``tokenguard.<area>.<event>``, carrying
counts, names and timings only (never message content or secrets); :func:`emit` is the
one way out. Quiet by default: events go to the application's logging (structlog when
the application configured it, else the stdlib logger ``"tokenguard"``), which the
library never configures; :func:`add_sink` and :func:`to_console` send them elsewhere.
A sink that raises is dropped from that one emission, never from the caller's request.
Routing in full: docs/internals.md ("Where events go").
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal, TextIO

from .sinks._console import ConsoleSink
from .sinks._logging import LEVELS, LoggingSink

__all__ = [
    "CountingMismatch",
    "CountingTokenizerMissing",
    "Event",
    "FitCustom",
    "FitFallback",
    "FitMaxTokensLowered",
    "FitOverflow",
    "FitSummarized",
    "FitTruncated",
    "GuardBadUsage",
    "GuardFallback",
    "GuardLimitLearned",
    "GuardRequest",
    "GuardRetry",
    "GuardSettleFailed",
    "GuardWait",
    "LimiterBadBody",
    "LimiterBadHeader",
    "LimiterFailOpen",
    "LimiterLimitChanged",
    "LimiterRefundsLearned",
    "ModelsDiscovered",
    "ModelsDiscoveryFailed",
    "ModelsUnknown",
    "Sink",
    "add_sink",
    "emit",
    "enabled",
    "remove_sink",
    "to_console",
    "to_logging",
    "use_logging",
    "use_structlog",
]

Level = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class Event:
    """Base of every record: ``name`` (``tokenguard.<area>.<event>``) and ``level``
    are class attributes; the fields are the record's data."""

    name: ClassVar[str] = "tokenguard.event"
    level: ClassVar[Level] = "info"

    def fields(self) -> dict[str, Any]:
        """The record's data as a plain dict (what the sinks log)."""
        return asdict(self)


@dataclass(frozen=True)
class LimiterFailOpen(Event):
    """The shared limiter could not be reached and a local one stands in
    (``during`` is ``"acquire"``, ``"settle"`` or ``"observe"``; Redis is tried again after
    ``retry_in``)."""

    name: ClassVar[str] = "tokenguard.limiter.fail_open"
    level: ClassVar[Level] = "warning"
    error: str
    during: str
    retry_in: float | None = None


@dataclass(frozen=True)
class LimiterBadHeader(Event):
    """A rate-limit header could not be read, or cannot be true, and was ignored."""

    name: ClassVar[str] = "tokenguard.limiter.bad_header"
    level: ClassVar[Level] = "debug"
    header: str


@dataclass(frozen=True)
class LimiterBadBody(Event):
    """A refusal's body named a limit (``limit``: ``"tpd"``, ...; ``None`` when the name
    itself could not be read) that was not believed, for ``reason``; the limiter learned
    nothing from it. The body itself is not logged."""

    name: ClassVar[str] = "tokenguard.limiter.bad_body"
    level: ClassVar[Level] = "debug"
    limit: str | None
    reason: str


@dataclass(frozen=True)
class LimiterRefundsLearned(Event):
    """The limiter learned whether the server gives back unused completion tokens
    (``refunds``), from ``evidence`` (e.g. ``"headers"`` or ``"429"``), with the
    server's and the limiter's view of the tokens in use at that moment (learning
    ``True``: the least a server keeping every estimate would have in use)."""

    name: ClassVar[str] = "tokenguard.limiter.refunds_learned"
    level: ClassVar[Level] = "warning"
    refunds: bool
    evidence: str
    server_used: int | None = None
    ledger_used: int | None = None


@dataclass(frozen=True)
class LimiterLimitChanged(Event):
    """The server's headers (``x-ratelimit-limit-tokens`` for ``"tpm"``,
    ``x-ratelimit-limit-requests`` for ``"rpd"``) set one of the limiter's limits from
    ``old`` to ``new``, raised or lowered: the server is the authority on the account's
    limits, the model table only the starting point (reported once per change, by
    each process that sees it). ``"rpm"`` and ``"tpd"``, which no header reports,
    change with the first TPM the server shows: to the table's tier with that TPM, or
    ``new`` ``None`` (no longer counted) for a larger TPM no tier has. A 429 or 413
    whose body names a limit ("tokens per day (TPD): Limit 500000, Used ...") sets it
    too, ``old`` ``None`` when the limiter did not count it."""

    name: ClassVar[str] = "tokenguard.limiter.limit_changed"
    level: ClassVar[Level] = "info"
    limit: str
    old: int | None
    new: int | None


@dataclass(frozen=True)
class CountingMismatch(Event):
    """An exact pre-flight count disagreed with the server's ``usage.prompt_tokens``
    (reported once per model)."""

    name: ClassVar[str] = "tokenguard.counting.mismatch"
    level: ClassVar[Level] = "warning"
    model: str
    counted: int
    reported: int


@dataclass(frozen=True)
class CountingTokenizerMissing(Event):
    """A model's exact tokenizer data is not installed: counts are conservative
    estimates; ``hint`` says how to get exact ones (reported once per tokenizer)."""

    name: ClassVar[str] = "tokenguard.counting.tokenizer_missing"
    level: ClassVar[Level] = "warning"
    tokenizer: str
    model: str
    hint: str


@dataclass(frozen=True)
class ModelsUnknown(Event):
    """A model not in the table: conservative defaults are used (once per name)."""

    name: ClassVar[str] = "tokenguard.models.unknown"
    level: ClassVar[Level] = "warning"
    model: str
    context_window: int
    hint: str


@dataclass(frozen=True)
class ModelsDiscovered(Event):
    """A model the table lacks, described by the server's ``GET /models/{model}``
    (checked and bounded first); believed for ``ttl_s`` seconds."""

    name: ClassVar[str] = "tokenguard.models.discovered"
    model: str
    base_url: str
    context_window: int
    max_completion_tokens: int
    ttl_s: float


@dataclass(frozen=True)
class ModelsDiscoveryFailed(Event):
    """``GET /models/{model}`` gave nothing usable: ``reason`` is ``not_found`` (404),
    ``unreachable`` (no answer), ``refused`` (another error status) or ``invalid`` (an
    answer whose limits are missing or out of bounds). The model gets the unknown-model
    defaults (``context_window``) until the lookup is tried again ``retry_s`` later."""

    name: ClassVar[str] = "tokenguard.models.discovery_failed"
    level: ClassVar[Level] = "warning"
    model: str
    base_url: str
    reason: str
    status: int | None
    context_window: int
    retry_s: float
    hint: str


@dataclass(frozen=True)
class FitEvent(Event):
    """Base of the ``tokenguard.fit.*`` records: one per fit that changed a request.

    ``requested`` is the ``on_overflow`` asked for, ``strategy`` what was done;
    ``dropped``/``summarized``/``shortened`` count messages; ``max_tokens_from``/
    ``max_tokens_to`` differ when ``max_tokens`` was lowered; ``fallback`` says why a
    summary was not used. Counts only, never content. Never emitted itself (one of
    its kinds below is), so it is kept out of ``__all__``."""

    name: ClassVar[str] = "tokenguard.fit.base"
    model: str
    strategy: str
    requested: str
    tokens_before: int
    tokens_after: int
    allowed: int
    bound_by: str
    dropped: int = 0
    summarized: int = 0
    shortened: int = 0
    summary_calls: int = 0
    max_tokens_from: int | None = None
    max_tokens_to: int | None = None
    fallback: str | None = None


@dataclass(frozen=True)
class FitTruncated(FitEvent):
    """Older messages were dropped (and/or one shortened inside) to fit the room."""

    name: ClassVar[str] = "tokenguard.fit.truncated"


@dataclass(frozen=True)
class FitSummarized(FitEvent):
    """The dropped prefix was replaced by a summary (``summary_calls`` 0: from the cache)."""

    name: ClassVar[str] = "tokenguard.fit.summarized"


@dataclass(frozen=True)
class FitFallback(FitEvent):
    """Summarizing failed or did not fit (``fallback`` says why): truncated instead."""

    name: ClassVar[str] = "tokenguard.fit.fallback"
    level: ClassVar[Level] = "warning"


@dataclass(frozen=True)
class FitCustom(FitEvent):
    """A user-supplied ``on_overflow`` callable fitted the request."""

    name: ClassVar[str] = "tokenguard.fit.custom"


@dataclass(frozen=True)
class FitMaxTokensLowered(FitEvent):
    """Only ``max_tokens`` was lowered (the messages fit as they were)."""

    name: ClassVar[str] = "tokenguard.fit.max_tokens_lowered"


@dataclass(frozen=True)
class FitOverflow(Event):
    """The request could not be fitted (``ContextOverflow`` raised; nothing is sent):
    it ``needed`` more than the ``allowed`` tokens, as ``bound_by`` set them."""

    name: ClassVar[str] = "tokenguard.fit.overflow"
    level: ClassVar[Level] = "warning"
    model: str
    requested: str
    needed: int
    allowed: int
    bound_by: str
    reason: str


@dataclass(frozen=True)
class GuardRequest(Event):
    """One guarded chat call, as it ended (``tokenguard.guard.request``): one per call.

    :meth:`fields` gives the OpenTelemetry GenAI attribute names (``gen_ai.*``,
    ``error.type``) and tokenguard's own (``tokenguard.*``). ``input_tokens`` and
    ``output_tokens`` are the usage as the server reported it (``None`` when none came
    back: a failure, or a stream closed early); ``cached_tokens`` are the prompt tokens
    served from Groq's cache (they do not count toward its limits);
    ``limit_tokens`` what the rate limiter was charged. ``cost_usd`` is what the call
    cost in US dollars, exactly (a :class:`~decimal.Decimal`; in :meth:`fields` a JSON
    number, ``tokenguard.cost_usd``), by the request model's price
    (:func:`tokenguard.price_of`): cached prompt tokens at the cached price; absent
    (``None``) when the model has no price or no usage came back. ``site`` names the call site
    (the guarded function's qualified name, or ``"<client>.chat.completions.create"``);
    ``site_completion_max`` is the largest completion seen at that site so far.
    ``content`` is only filled when the guard was given ``log_content=True``.
    ``fallback_from`` is the model the call asked for when it was sent to a fallback
    model (``request_model``) instead (see :class:`GuardFallback`).
    """

    name: ClassVar[str] = "tokenguard.guard.request"
    request_model: str
    site: str
    estimated_tokens: int
    completion_reserve: int
    max_tokens: int | None = None
    response_model: str | None = None
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    limit_tokens: int | None = None
    cost_usd: Decimal | None = None
    error_type: str | None = None
    wait_s: float = 0.0
    retries: int = 0
    fit: str = "none"
    stream: bool = False
    stream_closed_early: bool = False
    budget_remaining: int | None = None
    server_remaining_tokens: int | None = None
    server_remaining_requests: int | None = None
    site_completion_max: int | None = None
    duration_s: float = 0.0
    content: tuple[Any, ...] | None = None
    fallback_from: str | None = None

    def fields(self) -> dict[str, Any]:
        """The OpenTelemetry GenAI names, then tokenguard's; ``None`` values left out."""
        out: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "groq",
            "gen_ai.request.model": self.request_model,
            "gen_ai.request.max_tokens": self.max_tokens,
            "gen_ai.response.model": self.response_model,
            "gen_ai.response.id": self.response_id,
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "error.type": self.error_type,
            "tokenguard.site": self.site,
            "tokenguard.estimated_tokens": self.estimated_tokens,
            "tokenguard.completion_reserve": self.completion_reserve,
            "tokenguard.cached_tokens": self.cached_tokens,
            "tokenguard.limit_tokens": self.limit_tokens,
            # A float's repr is the shortest decimal that reads back to it: a reader
            # parsing it as a decimal (``tokenguard report`` does) gets the cost exactly.
            "tokenguard.cost_usd": None if self.cost_usd is None else float(self.cost_usd),
            "tokenguard.wait_s": round(self.wait_s, 6),
            "tokenguard.retries": self.retries,
            "tokenguard.fit": self.fit,
            "tokenguard.stream": self.stream,
            "tokenguard.stream_closed_early": self.stream_closed_early or None,
            "tokenguard.budget_remaining": self.budget_remaining,
            "tokenguard.server_remaining_tokens": self.server_remaining_tokens,
            "tokenguard.server_remaining_requests": self.server_remaining_requests,
            "tokenguard.site_completion_max": self.site_completion_max,
            "tokenguard.duration_s": round(self.duration_s, 6),
            "tokenguard.fallback_from": self.fallback_from,
            "gen_ai.input.messages": self.content,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class GuardWait(Event):
    """A guarded call waited ``wait_s`` seconds (at least the guard's ``wait_event_s``)
    before it was sent, for the rate window (``reason="limiter"``) or for the server's
    ``retry-after`` (``reason="retry_after"``)."""

    name: ClassVar[str] = "tokenguard.guard.wait"
    model: str
    site: str
    wait_s: float
    reason: str
    tokens: int


@dataclass(frozen=True)
class GuardRetry(Event):
    """A guarded call is sent again (``attempt`` counts from 1) after the server said
    ``status`` (``kind`` as :class:`tokenguard._adapters.FailureKind` names it), after
    waiting ``wait_s``."""

    name: ClassVar[str] = "tokenguard.guard.retry"
    level: ClassVar[Level] = "warning"
    model: str
    site: str
    kind: str
    status: int | None
    attempt: int
    wait_s: float


@dataclass(frozen=True)
class GuardFallback(Event):
    """A guarded call goes from ``from_model`` to the next of its ``fallback`` models,
    ``to_model``: ``reason="max_wait"`` when ``from_model`` would have held it past
    ``max_wait``, ``"day_limit"`` when a day limit of ``from_model`` is spent (``limit``
    names the limit that bound, when known: ``"tpd"``, ``"rpd"``, ``"tpm"``, ...);
    ``needed_wait_s`` is the least wait ``from_model`` asked for, when known."""

    name: ClassVar[str] = "tokenguard.guard.fallback"
    level: ClassVar[Level] = "warning"
    from_model: str
    to_model: str
    site: str
    reason: str
    limit: str | None = None
    needed_wait_s: float | None = None


@dataclass(frozen=True)
class GuardLimitLearned(Event):
    """The server refused a request as too large for the model: the guard now fits that
    model's requests within ``learned`` tokens (``limit`` is ``"context_window"`` or
    ``"tpm"``; ``source`` is ``"error"`` or ``"models_endpoint"`` or ``"estimate"``)."""

    name: ClassVar[str] = "tokenguard.guard.limit_learned"
    level: ClassVar[Level] = "warning"
    model: str
    limit: str
    table: int | None
    learned: int
    source: str


@dataclass(frozen=True)
class GuardBadUsage(Event):
    """A served response's ``usage`` was not believed, for ``reason``: the limiter and
    budgets were charged the request's estimate instead, and the counter learned nothing
    from it. The counts are the server's, as it sent them."""

    name: ClassVar[str] = "tokenguard.guard.bad_usage"
    level: ClassVar[Level] = "warning"
    model: str
    site: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    charged: int
    reason: str


@dataclass(frozen=True)
class GuardSettleFailed(Event):
    """The limiter could not be reached (``error``) to settle a guarded call, at the
    ``commit``, ``cancel`` or ``observe`` step named by ``during`` (``"budget"``: a
    shared budget's Redis, whose hold is charged its estimate when its lease runs out).
    The caller still gets what the call gave: the response when the server ``served`` it
    (budgets charged with its usage, the request event sent), else its own exception
    unchanged. The reservation of ``tokens`` stays charged in the limiter and ages out
    with the window."""

    name: ClassVar[str] = "tokenguard.guard.settle_failed"
    level: ClassVar[Level] = "warning"
    model: str
    site: str
    during: str
    served: bool
    tokens: int
    error: str


Sink = Callable[[Event], object]

_lock = threading.Lock()
_sinks: tuple[Sink, ...] = ()
_logging_on = True
#: The default route when structlog is not configured (a sink, so one code formats both).
_stdlib = LoggingSink("tokenguard")


def _structlog() -> Any:
    """structlog, when the application configured it (which it imported to do so: the
    library does not import structlog itself, a fifth of a second saved at startup)."""
    module = sys.modules.get("structlog")
    configured = getattr(module, "is_configured", None)
    return module if configured is not None and configured() else None


def emit(event: Event) -> None:
    """Send ``event`` to the application's logging (unless turned off) and to every
    added sink."""
    if _logging_on:
        # A broken logging setup must not break the request being logged.
        with contextlib.suppress(Exception):
            structlog = _structlog()
            if structlog is not None:
                logger = structlog.get_logger("tokenguard")
                getattr(logger, event.level)(event.name, **event.fields())
            else:
                _stdlib(event)
    for sink in _sinks:
        with contextlib.suppress(Exception):
            sink(event)


def enabled(level: Level = "info") -> bool:
    """Whether an event of ``level`` emitted now goes anywhere (a sink added, structlog
    configured, or the stdlib logger ``"tokenguard"`` enabled for it): a hot path may
    skip building a record that nobody would receive.

    Example::

        if tg.events.enabled():
            tg.events.emit(record)
    """
    if _sinks:
        return True
    return _logging_on and (_stdlib.logger.isEnabledFor(LEVELS[level]) or _structlog() is not None)


def add_sink(sink: Sink) -> Callable[[], None]:
    """Call ``sink(event)`` for every event from now on; returns a function that
    removes it again (as :func:`remove_sink` does).

    Example::

        undo = tg.events.add_sink(lambda e: print(e.name, e.fields()))
        ...
        undo()
    """
    if not callable(sink):
        raise TypeError(f"a sink must be callable with one event, got {sink!r}")
    global _sinks
    with _lock:
        _sinks = (*_sinks, sink)
    return lambda: remove_sink(sink)


def remove_sink(sink: Sink) -> None:
    """Stop sending events to ``sink`` (no error if it was not added)."""
    global _sinks
    with _lock:
        rest = list(_sinks)
        if sink in rest:
            rest.remove(sink)
        _sinks = tuple(rest)


def use_logging(on: bool) -> None:
    """Turn the default route to the application's logging (structlog when configured,
    else the stdlib logger ``"tokenguard"``) on or off; it is on at import. An
    application that sends events to its own sinks turns it off to get each event once.

    Example::

        tg.events.use_logging(False)
        tg.events.add_sink(my_sink)
    """
    global _logging_on
    _logging_on = bool(on)


def use_structlog(on: bool) -> None:
    """The former name of :func:`use_logging` (the default route is no longer always
    structlog); deprecated."""
    warnings.warn(
        "tokenguard.events.use_structlog is deprecated: use tokenguard.events.use_logging",
        DeprecationWarning,
        stacklevel=2,
    )
    use_logging(on)


def to_console(stream: TextIO | None = None, *, level: Level = "debug") -> Callable[[], None]:
    """See every event (or those at ``level`` and above) as one line each on ``stream``
    (default: standard error), from now on; returns a function that stops it.

    Example::

        tg.events.to_console()    # one line to see everything
    """
    return add_sink(ConsoleSink(stream, level=level))


def to_logging(logger: logging.Logger | str = "tokenguard") -> Sink:
    """A sink that logs each event to a stdlib ``logging`` logger at the record's
    level (a :class:`tokenguard.sinks.LoggingSink`).

    Example::

        tg.events.add_sink(tg.events.to_logging("myapp.tokens"))
    """
    return LoggingSink(logger)
