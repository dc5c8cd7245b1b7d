"""The path of one guarded call, written once as a plan (see :mod:`tokenguard._drive`).

count and fit -> hold the budgets -> acquire the limiter -> send -> read the response
(usage, headers) or the error -> commit or cancel the reservation and the holds ->
learn -> one ``tokenguard.guard.request`` event. On a 429 the call waits as the server
says and is sent again; on a 413 or ``context_length_exceeded`` the limit is learned
and the request refitted once; on 5xx, connection errors and timeouts it is sent again
as the SDK would (``transient_retries``), then the exception goes on unchanged. A
stream is settled when it ends (or is closed) by :mod:`._streams`.

The decorator runs this plan with ``run_sync``/``run_async``; instrumented clients do
the same. Nothing here is sync- or async-specific.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._adapters import Failure, FailureKind, Usage, classify, headers_of, usage_of
from .._budget import NO_HOLD, BudgetHold, budgets_now, reserve, room
from .._discovery import lookup_plan, model_info
from .._drive import Call, Effect, Plan, Sleep
from ..counting import RequestCount, default_counter
from ..errors import (
    BudgetExceeded,
    ConfigurationError,
    ContextOverflow,
    LimiterUnavailable,
    RateLimitTimeout,
)
from ..events import (
    GuardContextLearned,
    GuardRequest,
    GuardRetry,
    GuardSettleFailed,
    GuardWait,
    emit,
    enabled,
)
from ..fitting import FitResult, Summarizer, fit, fit_async, room_for
from ..limiter import Limiter, Reservation, parse_headers
from ..models import ModelInfo, table_entry, unseen_prompt_allowance
from . import _registry
from ._options import GuardOptions
from ._request import ChatRequest, Sender

__all__ = ["Guard", "Settlement", "call_plan", "fits_as_asked", "settle_plan"]

#: The SDKs' backoff between retries of a failed request: min(0.5 * 2**n, 8) seconds.
_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0
#: Without ``retry-after`` or reset headers, a 429 is retried after this long.
_DEFAULT_429_WAIT = 1.0


@dataclass
class Guard:
    """One guarded call site: its options, endpoint, summarizer and what it learned."""

    opts: GuardOptions
    base_url: str
    site: str
    summarizer: Summarizer | None = None
    #: 5xx / connection / timeout retries (an instrumented client's own ``max_retries``,
    #: taken over from the SDK; 0 for a decorated function, whose SDK retries itself).
    transient_retries: int = 0
    #: The largest completion seen at this site (reported in events).
    completion_max: int | None = None
    #: The instrumented client (its retry-less copy) asked about models the table lacks.
    client: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Per (model, max_tokens asked): what does not change between calls (see _Site).
    _sites: dict[tuple[str, int | None], _Site] = field(default_factory=dict, repr=False)

    def saw_completion(self, tokens: int) -> int:
        known = self.completion_max
        if known is not None and tokens <= known:
            return known  # it only grows: no lock needed to see that it is not larger
        with self._lock:
            if self.completion_max is None or tokens > self.completion_max:
                self.completion_max = tokens
            return self.completion_max


@dataclass(frozen=True)
class _Site:
    """What one call site's calls to one model with one ``max_tokens`` share, worked out
    on the first call instead of on every one: the model's entry, its limiter, the
    limits fitting works within, and the largest prompt sent as it is.

    ``fits`` is that prompt (see :func:`fits_as_asked`): any prompt of at most ``fits``
    tokens has the same room (the same ceiling and reservation, nothing lowered), so
    such a call needs no fitting while no budget is open. ``None``: every call is fitted
    as usual (a ``max_tokens`` that must be lowered, or limits no prompt fits). Good
    while ``generation`` is the registry's and the model table still gives ``info``.
    """

    info: ModelInfo
    limiter: Limiter | None
    context_window: int
    tpm: int | None
    asked: int | None
    generation: int
    fits: int | None = None


def fits_as_asked(
    *,
    context_window: int,
    tpm: int | None,
    max_tokens: int | None,
    max_completion_tokens: int | None,
    default_reserve: int,
) -> int | None:
    """The largest prompt that fits as asked outside any budget: every prompt of at
    most that many tokens has the room :func:`~tokenguard.fitting.room_for` gives an empty
    prompt (the same ceiling and reservation, ``max_tokens`` not lowered), so fitting
    would send it unchanged. ``None`` when even an empty prompt does not fit as asked.

    With ``max_tokens`` the reservation does not depend on the prompt. Without it the
    server holds ``min(default, context window - prompt)``, which is the whole default
    for every prompt up to ``ceiling - default`` (the ceiling is at most the window):
    that is the room an empty prompt has, and so the answer too.
    """
    try:
        r = room_for(
            0,
            context_window=context_window,
            tpm=tpm,
            max_tokens=max_tokens,
            max_completion_tokens=max_completion_tokens,
            default_reserve=default_reserve,
        )
    except (ContextOverflow, ConfigurationError):
        return None  # every call goes through fitting, which says what is wrong
    return None if r.lowered else r.allowed


def _site(g: Guard, req: ChatRequest) -> _Site:
    key = (req.model, req.max_tokens)
    site = g._sites.get(key)
    info = model_info(g.base_url, req.model)
    if site is not None and site.generation == _registry.generation and site.info is info:
        return site
    generation = _registry.generation
    limiter = _registry.limiter_for(g.opts, g.base_url, req.model)
    learned = _registry.learned(g.base_url, req.model)
    window = g.opts.context_window or info.context_window
    if learned.context_window is not None:
        window = min(window, learned.context_window)
    tpm = limiter.limits.tpm if limiter is not None else None
    if learned.tpm is not None:
        tpm = learned.tpm if tpm is None else min(tpm, learned.tpm)
    asked = req.max_tokens
    cap = g.opts.cap_max_tokens
    if cap is not None:
        asked = cap if asked is None else min(asked, cap)
    fits = fits_as_asked(
        context_window=window,
        tpm=tpm,
        max_tokens=asked,
        max_completion_tokens=info.max_completion_tokens,
        default_reserve=g.opts.default_reserve,
    )
    site = _Site(info, limiter, window, tpm, asked, generation, fits)
    if len(g._sites) >= 64:  # bounded: a site that sees many models or sizes
        g._sites.clear()
    g._sites[key] = site
    return site


@dataclass(slots=True)
class Settlement:
    """What settling one sent request needs: its holds, its estimate and its event."""

    guard: Guard
    request: ChatRequest
    count: RequestCount
    estimate: int
    reserve: int
    max_tokens: int | None
    #: ``None``: sent as asked (the request fit without fitting, see ``_Site``).
    fitted: FitResult | None
    hold: BudgetHold
    reservation: Reservation | None
    headers: Mapping[str, Any] | None
    started: float
    waited: float
    retries: int
    settled: bool = False


@dataclass(slots=True)
class _Attempts:
    """The retries of one call so far: made at its first failure or wait (most calls
    have neither)."""

    rate_limited: int = 0
    transient: int = 0
    refit_context: bool = False
    refit_tpm: bool = False
    waited: float = 0.0

    @property
    def total(self) -> int:
        return self.rate_limited + self.transient + self.refit_context + self.refit_tpm


def _fit_kwargs(g: Guard, req: ChatRequest, site: _Site, budget: int | None) -> Any:
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


def _event(
    s: Settlement,
    *,
    usage: Usage | None,
    failure: Failure | None = None,
    response: Any = None,
    closed_early: bool = False,
) -> GuardRequest:
    headers = s.headers
    site_max = None
    if usage is not None:
        site_max = s.guard.saw_completion(usage.completion_tokens)
    else:
        site_max = s.guard.completion_max
    rooms = room()
    return GuardRequest(
        request_model=s.request.model,
        site=s.guard.site,
        estimated_tokens=s.estimate,
        completion_reserve=s.reserve,
        max_tokens=s.max_tokens,
        response_model=_attr(response, "model"),
        response_id=_attr(response, "id"),
        input_tokens=usage.prompt_tokens if usage is not None else None,
        output_tokens=usage.completion_tokens if usage is not None else None,
        cached_tokens=usage.cached_tokens if usage is not None else None,
        limit_tokens=usage.limit_tokens if usage is not None else None,
        error_type=failure.error_type if failure is not None else None,
        wait_s=s.waited,
        retries=s.retries,
        fit=s.fitted.strategy if s.fitted is not None else "none",
        stream=s.request.stream,
        stream_closed_early=closed_early,
        budget_remaining=rooms,
        server_remaining_tokens=_header_int(headers, "x-ratelimit-remaining-tokens"),
        server_remaining_requests=_header_int(headers, "x-ratelimit-remaining-requests"),
        site_completion_max=site_max,
        duration_s=max(0.0, s.guard.opts.clock() - s.started),
        content=tuple(s.request.messages if s.fitted is None else s.fitted.messages)
        if s.guard.opts.log_content
        else None,
    )


def _report(
    s: Settlement,
    *,
    usage: Usage | None,
    failure: Failure | None = None,
    response: Any = None,
    closed_early: bool = False,
) -> None:
    """Emit the call's one ``tokenguard.guard.request`` event, built only when someone
    receives it (the record is a third of the guard's own work on a plain call); the
    site's largest completion is learned either way."""
    if enabled():
        emit(_event(s, usage=usage, failure=failure, response=response, closed_early=closed_early))
    elif usage is not None:
        s.guard.saw_completion(usage.completion_tokens)


def _header_int(headers: Mapping[str, Any] | None, name: str) -> int | None:
    """One header as a count, for the event (the limiter parses them all, with checks;
    parsing every header twice would cost as much as the rest of the event)."""
    if headers is None:
        return None
    text = headers.get(name)
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _attr(obj: Any, name: str) -> str | None:
    if obj is None:
        return None
    if type(obj) is dict:
        value = obj.get(name)
    else:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return value if isinstance(value, str) else None


class _Commit(tuple[Reservation, int, "Mapping[str, Any] | None"]):
    """The effect that charges a reservation ``(reservation, tokens, headers)``:
    ``commit`` in a thread, ``commit_async`` in a task. One tuple, made in one step
    (:data:`_effect`), where a :class:`Call` would need two partials for the headers."""

    __slots__ = ()

    def perform(self) -> None:
        r, tokens, headers = self
        r.commit(tokens, headers=headers)

    def perform_async(self) -> Awaitable[None]:
        r, tokens, headers = self
        return r.commit_async(tokens, headers=headers)  # awaited by the runner


#: Makes an effect that is a tuple (``_effect(_Commit, (r, tokens, headers))``) without
#: a ``__new__`` of its own to call.
_effect = tuple.__new__


def settle_plan(
    s: Settlement, usage: Usage | None, response: Any = None, *, closed_early: bool = False
) -> Plan[None]:
    """Settle a request that reached the server: the limiter is charged what counts
    toward the limits (cached prompt tokens left out), the budgets the usage as
    reported; without usage (a stream closed early) both at the estimate. A limiter
    that cannot be reached is reported (``tokenguard.guard.settle_failed``), never
    raised: the call was served and billed, and its response is the caller's.

    :func:`call_plan` settles a plain response with these same steps written in place
    (one generator less on every call); a change here belongs there too."""
    if s.settled:
        return
    s.settled = True
    r = s.reservation
    try:
        if r is not None:
            try:
                yield _effect(
                    _Commit, (r, usage.limit_tokens if usage is not None else s.estimate, s.headers)
                )
            except LimiterUnavailable as exc:
                _settle_failed(s, "commit", True, exc)
    finally:
        # Charged and reported even when settling is interrupted (a cancelled task).
        _settled(s, usage, response, closed_early)


def _settled(s: Settlement, usage: Usage | None, response: Any, closed_early: bool) -> None:
    """What settling does besides the limiter: charge the budgets, teach the counter,
    report the call."""
    if not s.hold.settled:  # a settled hold (no budget open) has nothing to charge
        s.hold.commit(usage.total_tokens if usage is not None else s.estimate)
    if usage is not None and not (
        s.count.exact and usage.prompt_tokens == s.count.prompt_tokens
    ):  # an exact count the server agrees with teaches nothing
        default_counter().observe(s.count, usage.prompt_tokens)
    _report(s, usage=usage, response=response, closed_early=closed_early)


def _release_plan(s: Settlement, failure: Failure) -> Plan[None]:
    """Settle a request that failed: nothing is charged to budgets; the limiter keeps the
    estimate when the request may have been charged by the server, else refunds it, and
    adopts the server's view from the error's headers. A limiter that cannot be reached
    is reported, never raised: the caller gets the call's own exception."""
    s.settled = True
    s.hold.cancel()
    r = s.reservation
    if r is None:
        return
    may_have_charged = failure.kind in (FailureKind.SERVER, FailureKind.TIMEOUT)
    if may_have_charged:
        yield from _settle_step(
            s, "commit", False, _effect(_Commit, (r, s.estimate, failure.headers))
        )
        return
    yield from _settle_step(s, "cancel", False, Call(r.cancel, r.cancel_async))
    if failure.headers is not None:
        limiter = _registry_limiter(s)
        if limiter is not None:
            yield from _settle_step(
                s, "observe", False, Call(limiter.observe, limiter.observe_async, failure.headers)
            )


def _settle_step(s: Settlement, during: str, served: bool, step: Effect) -> Plan[None]:
    """One limiter step of settling; an unreachable limiter (Redis down without
    ``fail_open``) becomes a warning event. Its reservation is marked settled by then, so
    nothing tries again; its charge stays and ages out as the limiter documents."""
    try:
        yield step
    except LimiterUnavailable as exc:
        _settle_failed(s, during, served, exc)


def _settle_failed(s: Settlement, during: str, served: bool, exc: LimiterUnavailable) -> None:
    emit(
        GuardSettleFailed(
            model=s.request.model,
            site=s.guard.site,
            during=during,
            served=served,
            tokens=s.estimate,
            error=str(exc),
        )
    )


def _registry_limiter(s: Settlement) -> Limiter | None:
    return _registry.limiter_for(s.guard.opts, s.guard.base_url, s.request.model)


def _reset_wait(failure: Failure) -> float:
    if failure.retry_after is not None:
        return failure.retry_after
    if failure.headers is not None:
        view = parse_headers(failure.headers)
        if view.reset_tokens is not None and view.reset_tokens > 0:
            return view.reset_tokens
    return _DEFAULT_429_WAIT


def _backoff(n: int) -> float:
    return float(min(_BACKOFF_BASE * 2**n, _BACKOFF_MAX))


async def _awaited(pending: Any) -> Any:
    return await pending


def _never(pending: Any) -> Any:
    raise TypeError(f"an awaitable ({type(pending).__name__}) reached a synchronous call")


#: Per class: (is a raw response, is a stream, is awaitable). Looked up on the class,
#: once: a pydantic model class answers a missing attribute through its metaclass, slowly.
_KINDS: dict[type, tuple[bool, bool, bool]] = {}


def _kind(kind: type) -> tuple[bool, bool, bool]:
    found = _KINDS.get(kind)
    if found is None:
        raw = callable(getattr(kind, "parse", None)) and hasattr(kind, "http_request")
        stream = kind not in (dict, str, bytes, type(None)) and (
            hasattr(kind, "__next__") or hasattr(kind, "__anext__")
        )
        found = (raw, stream, hasattr(kind, "__await__"))
        if len(_KINDS) < 256:  # bounded: classes made on the fly must not pile up
            _KINDS[kind] = found
    return found


def _count(
    req: ChatRequest,
    messages: Any,
    info: ModelInfo,
    max_tokens: int | None,
    default_reserve: int,
) -> RequestCount:
    return default_counter().count_request(
        messages,
        info,
        tools=req.tools,
        functions=req.functions,
        max_tokens=max_tokens,
        default_reserve=default_reserve,
        **req.options,
    )


def _fits_as_is(
    req: ChatRequest, count: RequestCount, info: ModelInfo, kwargs: dict[str, Any]
) -> FitResult | None:
    """The fit of a request that needs none (the common case), without fitting's
    per-message breakdown; ``None`` when it must be fitted (or its room is impossible,
    which :func:`~tokenguard.fit` reports)."""
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


def call_plan(g: Guard, req: ChatRequest, sender: Sender) -> Plan[Any]:
    """Count, fit, hold, acquire, send, read, settle and report one call; retry as the
    server's answer says. Returns what the caller gets (a stream is wrapped)."""
    opts = g.opts
    started = opts.clock()
    attempts: _Attempts | None = None  # made at the first wait or failure
    while True:
        entry = table_entry(req.model)
        if entry is None:  # the server's GET /models/{model}, cached
            yield from lookup_plan(g.base_url, req.model, g.client)
        # Again after a retry: a limit may have been learned. (_site's own check first,
        # without its frame: the site worked out by an earlier call, if still good.)
        site = g._sites.get((req.model, req.max_tokens))
        if (
            site is None
            or site.generation != _registry.generation
            or site.info is not (entry or model_info(g.base_url, req.model))
        ):
            site = _site(g, req)
        info, limiter = site.info, site.limiter
        budgets = budgets_now()
        budget = room() if budgets else None
        if req.options:
            count = _count(req, req.messages, info, site.asked, opts.default_reserve)
        else:  # the usual call: _count's call, without its frame
            count = default_counter().count_request(
                req.messages,
                info,
                tools=req.tools,
                functions=req.functions,
                max_tokens=site.asked,
                default_reserve=opts.default_reserve,
            )
        fitted: FitResult | None = None
        if budget is not None or site.fits is None or count.prompt_tokens > site.fits:
            kwargs = _fit_kwargs(g, req, site, budget)
            fitted = _fits_as_is(req, count, info, kwargs)
            if fitted is None:
                try:
                    fitted = yield Call(
                        functools.partial(fit, req.messages, **kwargs),
                        functools.partial(fit_async, req.messages, **kwargs),
                    )
                except ContextOverflow as exc:
                    if exc.limit_name != "budget":
                        raise
                    # Only the open budgets are too small: say so, as a budget error.
                    raise BudgetExceeded(
                        f"the request needs at least {exc.needed} tokens and the open budgets "
                        f"leave {exc.available}; nothing was sent",
                        needed=exc.needed,
                        remaining=exc.available,
                        unit="tokens",
                    ) from exc
                count = _count(req, fitted.messages, info, fitted.max_tokens, opts.default_reserve)
        if fitted is None:  # sent as asked: within the site's room, no budget open
            messages: Any = req.messages if type(req.messages) is list else list(req.messages)
            max_tokens = site.asked
        else:
            messages, max_tokens = fitted.messages, fitted.max_tokens
        completion = count.completion_reserve
        if max_tokens is None:
            # What the server holds for a call without max_tokens: the default reserve,
            # capped by the room left in the context window (as the emulator does).
            completion = max(
                0,
                min(
                    opts.default_reserve,
                    site.context_window - count.prompt_tokens,
                    info.max_completion_tokens,
                ),
            )
        estimate = count.prompt_tokens + completion
        if info.unseen_prompt_tokens:  # groq/compound: its tools' text, until learned
            estimate += unseen_prompt_allowance(info, count.prompt_tokens, count.raw_prompt_tokens)
        hold = reserve(estimate) if budgets else NO_HOLD
        reservation: Reservation | None = None
        if limiter is not None:
            left = None
            if opts.max_wait is not None:
                left = max(0.0, opts.max_wait - (opts.clock() - started))
            try:
                # Call(limiter.acquire, limiter.acquire_async, estimate, left), made in one step
                reservation = yield _effect(
                    Call, (limiter.acquire, limiter.acquire_async, (estimate, left))
                )
            except BaseException:
                hold.cancel()
                raise
            waited = reservation.waited
            if waited:
                if attempts is None:
                    attempts = _Attempts()
                attempts.waited += waited
            if waited >= opts.wait_event_s:
                emit(
                    GuardWait(
                        model=req.model,
                        site=g.site,
                        wait_s=waited,
                        reason="limiter",
                        tokens=estimate,
                    )
                )
        s = Settlement(
            g,
            req,
            count,
            estimate,
            completion,
            max_tokens,
            fitted,
            hold,
            reservation,
            None,
            started,
            0.0 if attempts is None else attempts.waited,
            0 if attempts is None else attempts.total,
        )
        try:
            # Call(sender.send, sender.send_async, messages, max_tokens), in one step
            result = yield _effect(Call, (sender.send, sender.send_async, (messages, max_tokens)))
        except BaseException as exc:
            # Cancelled or interrupted while in flight: it may have been charged.
            failure = classify(exc) if isinstance(exc, Exception) else Failure(FailureKind.TIMEOUT)
            s.headers = failure.headers
            yield from _release_plan(s, failure)
            if attempts is None:
                attempts = _Attempts()
            wait = yield from _recover(g, req, sender, s, failure, attempts, exc)
            if wait is None:
                _report(s, usage=None, failure=failure)
                raise
            continue
        kind = _KINDS.get(type(result)) or _kind(type(result))
        body, headers, raw = result, None, False
        if kind[0]:  # a raw response: parsed (awaited when async), read for its headers
            try:
                body = result.parse()
                kind = _KINDS.get(type(body)) or _kind(type(body))
                if kind[2]:  # the async SDKs' parse: a coroutine
                    body = yield Call(_never, _awaited, body)
                    kind = _kind(type(body))
                headers, raw = headers_of(result), True
            except BaseException:
                # Served, but its body cannot be read (e.g. a response the function
                # closed): the SDK's error goes on, settled at what it may have cost.
                yield from settle_plan(s, None)
                raise
        s.headers = headers
        if kind[1]:  # a stream: settled when it ends
            from ._streams import present_stream  # they settle through this module

            return present_stream(s, result, body, raw and not sender.raw_internal)
        # settle_plan(s, usage, body) and its _settled, written in place: the usual call
        # settles without a generator, and builds its event only when someone listens.
        usage = usage_of(body)
        s.settled = True
        try:
            if reservation is not None:
                tokens = usage.limit_tokens if usage is not None else estimate
                try:
                    if headers is None:  # a plain Call, which the runners perform in place
                        yield _effect(
                            Call, (reservation.commit, reservation.commit_async, (tokens,))
                        )
                    else:
                        yield _effect(_Commit, (reservation, tokens, headers))
                except LimiterUnavailable as exc:
                    _settle_failed(s, "commit", True, exc)
        finally:
            # Charged and reported even when settling is interrupted (a cancelled task).
            if not hold.settled:
                hold.commit(usage.total_tokens if usage is not None else estimate)
            if usage is not None:
                if not (count.exact and usage.prompt_tokens == count.prompt_tokens):
                    default_counter().observe(count, usage.prompt_tokens)
                known = g.completion_max  # it only grows: a smaller one changes nothing
                if known is None or usage.completion_tokens > known:
                    g.saw_completion(usage.completion_tokens)
            if enabled():
                emit(_event(s, usage=usage, response=body))
        return body if sender.raw_internal else result


def _recover(
    g: Guard,
    req: ChatRequest,
    sender: Sender,
    s: Settlement,
    failure: Failure,
    attempts: _Attempts,
    exc: BaseException,
) -> Plan[float | None]:
    """Decide whether a failed request is sent again; wait as needed. ``None``: give up
    (the caller gets ``exc`` unchanged, or ``RateLimitTimeout`` when the server's wait
    would pass ``max_wait``)."""
    opts = g.opts
    kind = failure.kind
    wait = 0.0
    if kind is FailureKind.RATE_LIMITED:
        if opts.retries is not None and attempts.rate_limited >= opts.retries:
            return None
        wait = _reset_wait(failure)
        if opts.max_wait is not None:
            spent = opts.clock() - s.started
            if spent + wait > opts.max_wait:
                _report(s, usage=None, failure=failure)
                raise RateLimitTimeout(
                    f"the server refused the request (429) and asks to wait {wait:.3f}s, "
                    f"which would pass max_wait={opts.max_wait}s ({spent:.3f}s spent)",
                    needed_wait=spent + wait,
                    max_wait=opts.max_wait,
                ) from exc
        attempts.rate_limited += 1
        attempt = attempts.rate_limited
    elif kind is FailureKind.TOO_LARGE:
        if attempts.refit_tpm or failure.limit is None:
            return None
        attempts.refit_tpm = True
        _learn(g, req, "tpm", failure.limit, "error")
        attempt = 1
    elif kind is FailureKind.CONTEXT_EXCEEDED:
        if attempts.refit_context:
            return None
        attempts.refit_context = True
        window = yield Call(sender.context_window, sender.context_window_async, req.model)
        source = "models_endpoint"
        current = (s.fitted.tokens_after if s.fitted else s.count.prompt_tokens) + s.reserve
        if not isinstance(window, int) or window <= 0 or window >= current:
            # The server did not say: fit within half of what it refused (one retry).
            window, source = max(1, current // 2), "estimate"
        _learn(g, req, "context_window", window, source)
        attempt = 1
    elif kind in (FailureKind.SERVER, FailureKind.CONNECTION, FailureKind.TIMEOUT):
        if attempts.transient >= g.transient_retries or not isinstance(exc, Exception):
            return None
        wait = _backoff(attempts.transient)
        attempts.transient += 1
        attempt = attempts.transient
    else:
        return None
    emit(
        GuardRetry(
            model=req.model,
            site=g.site,
            kind=kind.value,
            status=failure.status,
            attempt=attempt,
            wait_s=wait,
        )
    )
    if wait > 0:
        if wait >= opts.wait_event_s and kind is FailureKind.RATE_LIMITED:
            emit(
                GuardWait(
                    model=req.model,
                    site=g.site,
                    wait_s=wait,
                    reason="retry_after",
                    tokens=s.estimate,
                )
            )
        yield Sleep(wait, opts.sleep)
        attempts.waited += wait
    return wait


def _learn(g: Guard, req: ChatRequest, limit: str, value: int, source: str) -> None:
    info = model_info(g.base_url, req.model)
    table = info.context_window if limit == "context_window" else None
    if limit == "context_window":
        _registry.remember(g.base_url, req.model, context_window=value)
    else:
        _registry.remember(g.base_url, req.model, tpm=value)
    emit(
        GuardContextLearned(model=req.model, limit=limit, table=table, learned=value, source=source)
    )
