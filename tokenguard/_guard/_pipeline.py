"""The path of one guarded call, written once as a plan (see :mod:`tokenguard._drive`).

:func:`call_plan` reads as its steps: the site's worked-out values
(:meth:`Guard.site_for`), count and fit (a plain :func:`_as_asked` for a prompt
within the site's room, else :func:`_fit_plan`), admit into the budgets and the
limiter (:func:`_admit_plan`), send, then settle the response (:func:`_receive_plan`,
:mod:`._settle`) or release and recover from the error (:mod:`._recover`) and go
round again. A stream is settled when it ends by :mod:`._streams`. Invariant: every
request that was admitted is settled or released exactly once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import Any, NamedTuple

from .._adapters import Failure, FailureKind, classify, headers_of, usage_of
from .._budget import NO_HOLD, BudgetHold, open_budgets, reserve_plan, room
from .._discovery import lookup_plan
from .._drive import Call, Plan
from .._spend._prices import price_of
from ..counting import RequestCount, default_counter
from ..errors import BudgetExceeded, ContextOverflow
from ..events import GuardWait, emit
from ..fitting import FitResult, fit, fit_async, room_for
from ..limiter import Reservation
from ..limiter._priority import current_priority
from ..models import ModelInfo, table_entry, unseen_prompt_allowance
from ._recover import Attempts, recover_plan
from ._request import ChatRequest, Sender
from ._settle import (
    Settlement,
    release_hold,
    release_plan,
    report,
    settle_plan,
)
from ._site import Guard, Site
from ._streams import present_stream

__all__ = ["call_plan", "fits_as_is"]


class Outgoing(NamedTuple):
    """The request as it will be sent: what it costs and how it was fitted."""

    messages: list[Any]
    max_tokens: int | None
    counted: RequestCount
    #: ``None``: sent as asked (the prompt is within the site's room, no budget open).
    fitted: FitResult | None
    #: The completion tokens the server holds for it.
    reserve: int
    #: Prompt tokens the server adds that no client sees (``groq/compound``'s tools),
    #: held until the counter has learned them from usage.
    unseen: int
    #: What the request is held at: prompt, unseen prompt and completion reserve.
    estimate: int


class Kind(NamedTuple):
    """What a class of results is: a raw response, a stream, an awaitable."""

    raw: bool
    stream: bool
    awaitable: bool


def call_plan(
    g: Guard, req: ChatRequest, sender: Sender, started: float | None = None
) -> Plan[Any]:
    """Count, fit, hold, acquire, send, read, settle and report one call; retry as the
    server's answer says. Returns what the caller gets (a stream is wrapped).
    ``started``: when the call began, if before this plan (``max_wait`` counts from it)."""
    attempts = Attempts()
    if started is None:
        started = g.opts.clock()
    while True:
        site = g.kept_site(req)  # none after a retry that taught a limit, say
        if site is None or not site.known:
            if table_entry(req.model) is None:  # the server's GET /models/{model}, cached
                yield from lookup_plan(g.base_url, req.model, g.client)
            site = g.site_for(req)
        count = _count(g, req, req.messages, site.info, site.asked)
        out = _as_asked(g, req, site, count)
        if out is None:
            out = yield from _fit_plan(g, req, site, count)
        s = yield from _admit_plan(g, req, site, out, started, attempts)
        try:
            result = yield Call(sender.send, sender.send_async, out.messages, out.max_tokens)
        except BaseException as exc:
            # Cancelled or interrupted while in flight: it may have been charged.
            failure = classify(exc) if isinstance(exc, Exception) else Failure(FailureKind.TIMEOUT)
            yield from release_plan(s, failure)
            if not (yield from recover_plan(g, req, sender, s, failure, attempts, exc)):
                report(s, usage=None, failure=failure)
                raise
            continue
        return (yield from _receive_plan(s, sender, result))


def _as_asked(g: Guard, req: ChatRequest, site: Site, count: RequestCount) -> Outgoing | None:
    """The request as asked, when its prompt is within the site's room and no budget
    caps tokens (fitting would send it unchanged, see :class:`Site`); ``None``: it goes
    through :func:`_fit_plan`. A plain call: the usual request needs no effect here."""
    if site.fits is None or count.prompt_tokens > site.fits or room() is not None:
        return None
    messages = req.messages if type(req.messages) is list else list(req.messages)
    return _outgoing(g, site, messages, site.asked, count, None)


def _fit_plan(g: Guard, req: ChatRequest, site: Site, count: RequestCount) -> Plan[Outgoing]:
    """Fit the request (``count``: its prompt as asked) into the room it has: the context
    window, the rate window, the open budgets."""
    kwargs = _fit_kwargs(g, req, site, room())
    fitted = fits_as_is(req, count, site.info, kwargs)
    if fitted is None:
        try:
            fitted = yield Call(
                functools.partial(fit, req.messages, **kwargs),
                functools.partial(fit_async, req.messages, **kwargs),
            )
        except ContextOverflow as exc:
            if exc.limit_name != "budget":
                raise
            raise BudgetExceeded(
                f"the request needs at least {exc.needed} tokens and the open budgets "
                f"leave {exc.available}; nothing was sent",
                needed=exc.needed,
                remaining=exc.available,
                unit="tokens",
            ) from exc
        count = _count(g, req, fitted.messages, site.info, fitted.max_tokens)
    return _outgoing(g, site, fitted.messages, fitted.max_tokens, count, fitted)


def _outgoing(
    g: Guard,
    site: Site,
    messages: list[Any],
    max_tokens: int | None,
    count: RequestCount,
    fitted: FitResult | None,
) -> Outgoing:
    """What the request holds: its prompt, the completion tokens the server reserves, the
    prompt tokens it adds unseen."""
    reserve = count.completion_reserve
    if max_tokens is None:
        # What the server holds for a call without max_tokens: the default reserve,
        # capped by the room left in the context window (as the emulator does).
        left = site.context_window - count.prompt_tokens
        reserve = max(0, min(g.opts.default_reserve, left, site.info.max_completion_tokens))
    unseen = unseen_prompt_allowance(site.info, count.prompt_tokens, count.raw_prompt_tokens)
    estimate = count.prompt_tokens + unseen + reserve
    return Outgoing(messages, max_tokens, count, fitted, reserve, unseen, estimate)


def _count(
    g: Guard, req: ChatRequest, messages: Any, info: ModelInfo, max_tokens: int | None
) -> RequestCount:
    return default_counter().count_request(
        messages,
        info,
        tools=req.tools,
        functions=req.functions,
        max_tokens=max_tokens,
        default_reserve=g.opts.default_reserve,
        **req.options,
    )


def _fit_kwargs(g: Guard, req: ChatRequest, site: Site, budget: int | None) -> Any:
    return {
        "model": site.info,
        "max_tokens": site.asked,
        "tpm": site.tpm,
        "budget": budget,
        "context_window": site.context_window,
        "tier": g.opts.tier,
        "on_overflow": g.opts.on_overflow,
        "summarizer": g.summarizer,
        "default_reserve": g.opts.default_reserve,
        "tools": req.tools,
        "functions": req.functions,
    }


def fits_as_is(
    req: ChatRequest, count: RequestCount, info: ModelInfo, kwargs: dict[str, Any]
) -> FitResult | None:
    """What :func:`~tokenguard.fit` gives a request that needs no fitting, without its
    per-message breakdown; ``None`` when it must be fitted (or its room is impossible,
    which ``fit`` reports)."""
    try:
        r = room_for(
            count.prompt_tokens,
            context_window=kwargs["context_window"],
            tpm=kwargs["tpm"],
            budget=kwargs["budget"],
            max_tokens=kwargs["max_tokens"],
            max_completion_tokens=info.max_completion_tokens,
            default_reserve=kwargs["default_reserve"],
        )
    except ContextOverflow:
        return None
    if count.prompt_tokens > r.allowed or r.lowered:
        return None
    strategy = kwargs["on_overflow"]
    return FitResult(
        messages=req.messages if type(req.messages) is list else list(req.messages),
        strategy="none",
        requested=strategy if isinstance(strategy, str) else "custom",
        model=info.name,
        exact=count.exact,
        tokens_before=count.prompt_tokens,
        tokens_after=count.prompt_tokens,
        allowed=r.allowed,
        bound_by=r.bound_by,
        max_tokens=r.max_tokens,
        max_tokens_requested=r.max_tokens_requested,
    )


def _admit_plan(
    g: Guard, req: ChatRequest, site: Site, out: Outgoing, started: float, attempts: Attempts
) -> Plan[Settlement]:
    """Hold the estimate in the open budgets and acquire it from the limiter (waiting
    as it says, within ``max_wait``); what settling the request will need."""
    estimate = out.estimate
    hold: BudgetHold = NO_HOLD
    if open_budgets():
        price = price_of(req.model)  # the prompt at the input price: nothing assumed cached
        cost = None if price is None else price.cost(estimate - out.reserve, out.reserve)
        hold = yield from reserve_plan(estimate, cost, req.model)
    reservation: Reservation | None = None
    limiter = site.limiter
    if limiter is not None:
        try:
            priority = current_priority(g.opts.priority)  # a tg.priority block wins
            # The usual admission (in memory, with room now) is a plain call.
            reservation = limiter.try_acquire(estimate, priority)
            if reservation is None:
                left = None
                if g.opts.max_wait is not None:
                    left = max(0.0, g.opts.max_wait - (g.opts.clock() - started))
                reservation = yield Call(
                    limiter.acquire, limiter.acquire_async, estimate, left, priority
                )
        except BaseException:
            yield from release_hold(hold)
            raise
        waited = reservation.waited
        attempts.waited += waited
        if waited >= g.opts.wait_event_s:
            emit(
                GuardWait(
                    model=req.model, site=g.site, wait_s=waited, reason="limiter", tokens=estimate
                )
            )
    return Settlement(
        guard=g,
        request=req,
        count=out.counted,
        estimate=estimate,
        reserve=out.reserve,
        max_tokens=out.max_tokens,
        fitted=out.fitted,
        hold=hold,
        reservation=reservation,
        started=started,
        waited=attempts.waited,
        retries=attempts.total,
    )


def _receive_plan(s: Settlement, sender: Sender, result: Any) -> Plan[Any]:
    """Read what the server answered: a raw response is parsed and read for its
    headers; a stream is handed back wrapped, settled when it ends; anything else is
    settled now. Returns what the caller gets."""
    kind = kind_of(type(result))
    body, raw = result, False
    if kind.raw:
        try:
            body = result.parse()
            kind = kind_of(type(body))
            if kind.awaitable:  # the async SDKs' parse: a coroutine
                body = yield Call(_never, _itself, body)
                kind = kind_of(type(body))
            s.headers, raw = headers_of(result), True
        except BaseException:
            # Served, but its body cannot be read (e.g. a response the function
            # closed): the SDK's error goes on, settled at what it may have cost.
            yield from settle_plan(s, None)
            raise
    if kind.stream:
        if not raw:
            # An SDK's stream keeps the HTTP response it reads (``.response``): its
            # headers are the limiter's evidence as a raw response's are.
            s.headers = headers_of(result)
        return present_stream(s, result, body, raw and not sender.raw_internal)
    yield from settle_plan(s, usage_of(body), body)
    return body if sender.raw_internal else result


def _itself(pending: Awaitable[Any]) -> Awaitable[Any]:
    # The async runner awaits the SDK's own coroutine: no coroutine of ours around it.
    return pending


def _never(pending: Any) -> Any:
    raise TypeError(f"an awaitable ({type(pending).__name__}) reached a synchronous call")


#: Per class, looked up once: a pydantic model class answers a missing attribute
#: through its metaclass, slowly.
_KINDS: dict[type, Kind] = {}


def kind_of(cls: type) -> Kind:
    """What results of class ``cls`` are (see :class:`Kind`)."""
    found = _KINDS.get(cls)
    if found is None:
        raw = callable(getattr(cls, "parse", None)) and hasattr(cls, "http_request")
        stream = cls not in (dict, str, bytes, type(None)) and (
            hasattr(cls, "__next__") or hasattr(cls, "__anext__")
        )
        found = Kind(raw, stream, hasattr(cls, "__await__"))
        if len(_KINDS) < 256:  # bounded: classes made on the fly must not pile up
            _KINDS[cls] = found
    return found
