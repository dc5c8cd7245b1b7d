"""Settling a sent request: the limiter and the budgets charged, the counter taught,
the call's one ``tokenguard.guard.request`` event.

Invariant: a request is settled once (``Settlement.settled``), by the pipeline for a
plain response or an error and by the stream wrappers for a stream; a limiter that
cannot be reached while settling is reported as an event, never raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from .._adapters import Failure, FailureKind, Usage
from .._budget import BudgetHold, room
from .._discovery import model_info
from .._drive import Call, Effect, Plan
from .._spend._prices import cost_of
from ..counting import RequestCount, default_counter
from ..errors import BudgetUnavailable, LimiterUnavailable
from ..events import (
    GuardBadUsage,
    GuardRequest,
    GuardSettleFailed,
    LimiterBadBody,
    emit,
    enabled,
)
from ..fitting import FitResult
from ..limiter import Reservation
from . import _registry
from ._request import ChatRequest
from ._site import Guard

__all__ = [
    "Commit",
    "Settlement",
    "call_cost",
    "doubt",
    "release_hold",
    "release_plan",
    "report",
    "settle_plan",
]


@dataclass(slots=True)
class Settlement:
    """What settling one sent request needs: its holds, its estimate and its event."""

    guard: Guard
    request: ChatRequest
    count: RequestCount
    estimate: int
    reserve: int
    max_tokens: int | None
    #: ``None``: sent as asked (the request fit without fitting, see ``Site.fits``).
    fitted: FitResult | None
    hold: BudgetHold
    reservation: Reservation | None
    started: float
    waited: float
    retries: int
    headers: Mapping[str, Any] | None = None
    settled: bool = False


class Commit(NamedTuple):
    """The effect that charges a reservation ``tokens`` and shows the limiter the
    response's headers: ``commit`` in a thread, ``commit_async`` in a task."""

    reservation: Reservation
    tokens: int
    headers: Mapping[str, Any] | None

    def perform(self) -> None:
        self.reservation.commit(self.tokens, headers=self.headers)

    def perform_async(self) -> Awaitable[None]:
        return self.reservation.commit_async(self.tokens, headers=self.headers)


def _believed_usage(s: Settlement, usage: Usage | None) -> Usage | None:
    """A response's usage as settling may charge it: ``None`` (charged at the estimate,
    reported as ``tokenguard.guard.bad_usage``) when :func:`doubt` finds a reason."""
    why = None if usage is None else doubt(s, usage)
    if why is None or usage is None:
        return usage
    emit(
        GuardBadUsage(
            model=s.request.model,
            site=s.guard.site,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            charged=s.estimate,
            reason=why,
        )
    )
    return None


def doubt(s: Settlement, usage: Usage) -> str | None:
    """Why ``usage`` cannot be what the server billed, or ``None``: its total is not its
    prompt plus its completion, or either is more than one request of the model can be
    billed (its context window, plus a compound system's allowance for its tools' text)."""
    prompt, completion, total = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    if total != prompt + completion:
        return f"total_tokens {total} is not prompt_tokens + completion_tokens"
    if total <= s.estimate:  # no more than was reserved: nothing to bound
        return None
    info = model_info(s.guard.base_url, s.request.model)
    most = max(info.context_window, s.guard.opts.context_window or 0)
    if prompt > most + info.unseen_prompt_tokens or completion > most:
        return f"more than one request of {s.request.model} can be billed ({most} tokens)"
    return None


def settle_plan(
    s: Settlement,
    usage: Usage | None,
    response: Any = None,
    *,
    closed_early: bool = False,
    failure: Failure | None = None,
) -> Plan[None]:
    """Settle a request that reached the server: the limiter is charged what counts
    toward the limits (cached prompt tokens left out), the budgets the usage as
    reported; without usage (a stream closed early) both at the estimate. ``failure``:
    what broke a stream midway (its event's ``error.type``). A usage :func:`doubt`
    finds a reason against is charged as none (see :func:`_believed_usage`)."""
    if s.settled:
        return
    s.settled = True
    usage = _believed_usage(s, usage)
    counted = None if usage is None else usage.limit_tokens  # toward the rate limits
    try:
        r = s.reservation
        if r is not None:
            tokens = s.estimate if counted is None else counted
            if r.in_place:  # in memory: settled here, by a thread or a task alike
                r.commit(tokens, headers=s.headers)
            else:
                try:
                    yield Commit(r, tokens, s.headers)
                except LimiterUnavailable as exc:
                    _settle_failed(s, "commit", True, exc)
    finally:
        # Charged and reported even when settling is interrupted (a cancelled task).
        if not s.hold.settled:  # a settled hold (no budget open) has nothing to charge
            try:
                if usage is None:
                    yield from s.hold.commit_plan(s.estimate)
                else:
                    yield from s.hold.commit_plan(usage.total_tokens, call_cost(s, usage))
            except BudgetUnavailable as exc:
                _settle_failed(s, "budget", True, exc)
        if usage is not None and counted is not None:
            # What was served bounds what a later refusal can teach (see _recover): the
            # server admitted the prompt with its max_tokens into the context window.
            admitted = usage.prompt_tokens + max(usage.completion_tokens, s.max_tokens or 0)
            _registry.saw_served(s.guard.base_url, s.request.model, admitted, counted)
            if not (s.count.exact and usage.prompt_tokens == s.count.prompt_tokens):
                # (an exact count the server agrees with teaches nothing)
                default_counter().observe(s.count, usage.prompt_tokens)
        report(s, usage=usage, failure=failure, response=response, closed_early=closed_early)


def release_plan(s: Settlement, failure: Failure) -> Plan[None]:
    """Settle a request that failed: nothing is charged to budgets; the limiter keeps the
    estimate when the request may have been charged by the server, else refunds it, and
    adopts the server's view from the error's headers."""
    s.settled = True
    s.headers = failure.headers
    yield from release_hold(s.hold)
    r = s.reservation
    if r is None:
        return
    if failure.may_be_charged:
        yield from _limiter_step(s, "commit", False, Commit(r, s.estimate, failure.headers))
        return
    yield from _limiter_step(s, "cancel", False, Call(r.cancel, r.cancel_async))
    if failure.headers is not None:
        # The error's headers answer this request: matched to its reservation, with
        # only the waits its limits can justify.
        headers = _believed_headers(s, failure, failure.headers)
        step = Call(r.observe, r.observe_async, headers)
        yield from _limiter_step(s, "observe", False, step)
    named = _believed_limit(s, failure)
    if named is not None:
        # The body names the limit that bound (a day's, which no header reports): the
        # limiter counts it from now on, so callers wait for it instead of being refused.
        lim = _registry.limiter_for(
            s.guard.opts, s.guard.base_url, s.request.model, s.guard.account
        )
        if lim is not None:
            step = Call(lim.observe_limit, lim.observe_limit_async, *named)
            yield from _limiter_step(s, "observe", False, step)


def release_hold(hold: BudgetHold) -> Plan[None]:
    """Give a hold back; a shared budget that cannot be reached keeps it until its
    lease runs out (the caller's own error matters more)."""
    if not hold.settled:
        with contextlib.suppress(BudgetUnavailable):
            yield from hold.cancel_plan()


def call_cost(s: Settlement, usage: Usage) -> Decimal | None:
    """What the call cost, by the request's model's price (``None``: no price known)."""
    u = usage
    return cost_of(s.request.model, u.prompt_tokens, u.completion_tokens, u.cached_tokens)


def _believed_headers(
    s: Settlement, failure: Failure, headers: Mapping[str, Any]
) -> Mapping[str, Any]:
    """A failure's headers as the limiter may adopt them: a 429's wait cut to what the
    limit it names can justify (the limiter alone cannot tell a minute's 429 from a
    day's), so that a wait the caller was refused holds no later call either."""
    wait = failure.retry_after
    if failure.kind is not FailureKind.RATE_LIMITED or wait is None:
        return headers
    bound = s.guard.longest_wait(s.request.model, failure.limit_name)[1]
    if wait <= bound:
        return headers
    kept = {k: v for k, v in headers.items() if k.lower() not in ("retry-after", "retry-after-ms")}
    kept["retry-after"] = repr(bound)
    return kept


def _believed_limit(s: Settlement, failure: Failure) -> tuple[str, int, int | None] | None:
    """(name, limit, used) of the limit a 413's or 429's body names, when it agrees with
    itself and with what the guard knows; else ``None``, reported as
    ``tokenguard.limiter.bad_body`` when the body named a limit. The limiter checks the
    bounds (``Limiter.observe_limit``); here: a 429's request fit the limit and not the
    room left, a 413's did not fit the limit, the wait is within the limit's period, a
    token limit is not below the largest request this server served, and a day's limit
    is not below the minute's of the same unit (nor a minute's above the day's)."""
    named = failure.named
    if named is None:
        if failure.limit_name is not None:
            emit(LimiterBadBody(limit=failure.limit_name, reason="the limit clause does not read"))
        return None
    name, limit, used, requested, wait = named
    why = None
    if failure.kind is FailureKind.TOO_LARGE:
        if requested <= limit:
            why = f"a 413 for {requested} tokens within the limit {limit}"
    elif requested > limit:
        why = f"a 429 for {requested}, more than the limit {limit} (a 413's case)"
    elif used is not None and requested + 1 <= limit - used:
        why = f"a 429 for {requested} that fits the room left, {limit - used}"
    if why is None and wait is not None:
        period = s.guard.longest_wait(s.request.model, name)[1]
        if wait > period:
            why = f"a wait of {wait:g}s, longer than the limit's period ({period:g}s)"
    if why is None and name[0] == "t":
        largest = _registry.served(s.guard.base_url, s.request.model).limit_tokens
        if limit < largest:
            why = f"limit {limit} below a request of {largest} tokens already served"
    if why is None:
        why = _against_limiter(s, name, limit)
    if why is not None:
        emit(LimiterBadBody(limit=name, reason=why))
        return None
    return name, limit, used


def _against_limiter(s: Settlement, name: str, limit: int) -> str | None:
    """Why a day's limit below the limiter's minute limit (or a minute's above its day
    limit) of the same unit cannot be, else ``None``."""
    g = s.guard
    lim = _registry.limiter_for(g.opts, g.base_url, s.request.model, g.account)
    if lim is None:
        return None
    other = {"tpm": "tpd", "tpd": "tpm", "rpm": "rpd", "rpd": "rpm"}[name]
    known: int | None = getattr(lim.limits, other)
    if known is None:
        return None
    if (name[2] == "d" and limit < known) or (name[2] == "m" and limit > known):
        return f"{name.upper()} {limit} against the limiter's {other.upper()} {known}"
    return None


def _limiter_step(s: Settlement, during: str, served: bool, step: Effect) -> Plan[None]:
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


def report(
    s: Settlement,
    *,
    usage: Usage | None,
    failure: Failure | None = None,
    response: Any = None,
    closed_early: bool = False,
) -> None:
    """Emit the call's one ``tokenguard.guard.request`` event, built only when someone
    receives it; the site's largest completion is learned either way."""
    site_max = s.guard.completion_max
    if usage is not None:
        site_max = s.guard.saw_completion(usage.completion_tokens)
    if enabled():
        emit(_event(s, usage, failure, response, closed_early, site_max))


def _event(
    s: Settlement,
    usage: Usage | None,
    failure: Failure | None,
    response: Any,
    closed_early: bool,
    site_max: int | None,
) -> GuardRequest:
    opts = s.guard.opts
    sent = s.request.messages if s.fitted is None else s.fitted.messages
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
        cost_usd=call_cost(s, usage) if usage is not None else None,
        error_type=failure.error_type if failure is not None else None,
        wait_s=s.waited,
        retries=s.retries,
        fit=s.fitted.strategy if s.fitted is not None else "none",
        stream=s.request.stream,
        stream_closed_early=closed_early,
        budget_remaining=room(),
        server_remaining_tokens=_header_int(s.headers, "x-ratelimit-remaining-tokens"),
        server_remaining_requests=_header_int(s.headers, "x-ratelimit-remaining-requests"),
        site_completion_max=site_max,
        duration_s=max(0.0, opts.clock() - s.started),
        content=tuple(sent) if opts.log_content else None,
        fallback_from=s.request.fallback_from,
    )


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
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return value if isinstance(value, str) else None
