"""What a guarded call does after a failed send: wait and send again, refit, or give up.

A 429 waits as the server says (``retry-after``, else the reset headers) and is sent
again; without a usable wait (none, 0, NaN, negative) it backs off exponentially with
jitter. A 413 or ``context_length_exceeded`` teaches the site the limit and the request
is refitted once; 5xx, connection errors and timeouts are sent again as the SDK would
(``transient_retries``, with its backoff). Invariant: every decision here is bounded
(``retries``, ``max_wait``, a wait no longer than the limits can justify, one refit per
limit, ``transient_retries``), and what the server says is checked before it is
believed: a lesson below what it already served, or 0, is not learned.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .._adapters import Failure, FailureKind
from .._discovery import model_info
from .._drive import Call, Plan, Sleep
from ..errors import RateLimitTimeout
from ..events import GuardLimitLearned, GuardRetry, GuardWait, emit
from ..limiter import parse_headers
from . import _registry
from ._request import ChatRequest, Sender
from ._settle import Settlement, report
from ._site import Guard

__all__ = ["Attempts", "recover_plan"]

#: The SDKs' backoff between retries of a failed request: min(0.5 * 2**n, 8) seconds,
#: less up to a quarter at random.
_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0
#: A 429 without a usable wait is retried after min(1 * 2**n, the minute's window)
#: seconds, less up to a quarter at random: never at once, and spread out.
_BACKOFF_429_BASE = 1.0
#: One generator for the jitter, so that callers started together drift apart.
_jitter = random.Random()


@dataclass(slots=True)
class Attempts:
    """The retries and waits of one call so far."""

    rate_limited: int = 0
    transient: int = 0
    refit_context: bool = False
    refit_tpm: bool = False
    waited: float = 0.0

    @property
    def total(self) -> int:
        return self.rate_limited + self.transient + self.refit_context + self.refit_tpm


def recover_plan(
    g: Guard,
    req: ChatRequest,
    sender: Sender,
    s: Settlement,
    failure: Failure,
    attempts: Attempts,
    exc: BaseException,
) -> Plan[bool]:
    """Decide whether a failed request is sent again, and wait as needed. ``False``:
    give up (the caller gets ``exc`` unchanged, or ``RateLimitTimeout`` when the
    server's wait would pass ``max_wait``)."""
    kind = failure.kind
    wait = 0.0
    if kind is FailureKind.RATE_LIMITED:
        if g.opts.retries is not None and attempts.rate_limited >= g.opts.retries:
            return False
        wait = _rate_limit_wait(g, req, s, failure, attempts.rate_limited, exc)
        attempts.rate_limited += 1
        attempt = attempts.rate_limited
    elif kind is FailureKind.TOO_LARGE:
        limit = failure.limit
        if attempts.refit_tpm or limit is None or not _believable_tpm(g, req, failure, limit):
            return False
        attempts.refit_tpm = True
        _learn(req, g, "tpm", limit, "error")
        attempt = 1
    elif kind is FailureKind.CONTEXT_EXCEEDED:
        if attempts.refit_context:
            return False
        attempts.refit_context = True
        if not (yield from _learn_context_plan(g, req, sender, s)):
            return False
        attempt = 1
    elif kind is FailureKind.CONNECTION or failure.may_be_charged:
        if attempts.transient >= g.transient_retries or not isinstance(exc, Exception):
            return False
        wait = _backoff(attempts.transient, _BACKOFF_BASE, _BACKOFF_MAX)
        attempts.transient += 1
        attempt = attempts.transient
    else:
        return False
    yield from _retry_plan(g, req, s, failure, attempt, wait, attempts)
    return True


def _retry_plan(
    g: Guard,
    req: ChatRequest,
    s: Settlement,
    failure: Failure,
    attempt: int,
    wait: float,
    attempts: Attempts,
) -> Plan[None]:
    """Report the retry, and wait as decided before sending again."""
    emit(
        GuardRetry(
            model=req.model,
            site=g.site,
            kind=failure.kind.value,
            status=failure.status,
            attempt=attempt,
            wait_s=wait,
        )
    )
    if wait <= 0:
        return
    if wait >= g.opts.wait_event_s and failure.kind is FailureKind.RATE_LIMITED:
        emit(
            GuardWait(
                model=req.model, site=g.site, wait_s=wait, reason="retry_after", tokens=s.estimate
            )
        )
    yield Sleep(wait, g.opts.sleep)
    attempts.waited += wait


def _backoff(attempt: int, base: float, cap: float) -> float:
    """The ``attempt``-th wait (from 0) of an exponential backoff: ``base * 2**attempt``
    seconds at most ``cap``, less up to a quarter at random (as the SDKs jitter)."""
    return min(base * 2.0 ** min(attempt, 32), cap) * (1.0 - 0.25 * _jitter.random())


def _rate_limit_wait(
    g: Guard, req: ChatRequest, s: Settlement, failure: Failure, attempt: int, exc: BaseException
) -> float:
    """How long a 429 asks to wait: ``RateLimitTimeout`` (reported) when that is longer
    than the limits can justify or passes ``max_wait``."""
    wait = failure.retry_after
    if wait is None and failure.headers is not None:
        wait = parse_headers(failure.headers).reset_tokens
    window, bound, what = g.longest_wait(req.model, failure.limit_name)
    if wait is None or not wait > 0:  # none, 0 (or NaN): a storm if taken at its word
        wait = _backoff(attempt, _BACKOFF_429_BASE, window)
    elif wait > bound:
        report(s, usage=None, failure=failure)
        raise RateLimitTimeout(
            f"the server refused the request (429) and asks to wait {wait:.3f}s, longer "
            f"than {what} limits can justify ({bound:g}s); not waiting for it",
            needed_wait=wait,
            max_wait=bound,
            limit_name=failure.limit_name,
        ) from exc
    max_wait, which = g.opts.max_wait, "max_wait"
    if max_wait is None and (failure.limit_name in ("tpd", "rpd") or wait > window):
        # A wait only a day limit can justify (named, or longer than a minute's), bound
        # as the limiter bounds one: a caller is not held for hours.
        max_wait, which = _day_wait(g, req), "the limiter's max_day_wait"
    if max_wait is not None:
        spent = g.opts.clock() - s.started
        if spent + wait > max_wait:
            report(s, usage=None, failure=failure)
            raise RateLimitTimeout(
                f"the server refused the request (429) and asks to wait {wait:.3f}s, "
                f"which would pass {which}={max_wait}s ({spent:.3f}s spent)",
                needed_wait=spent + wait,
                max_wait=max_wait,
                limit_name=failure.limit_name,
            ) from exc
    return wait


def _day_wait(g: Guard, req: ChatRequest) -> float | None:
    """The longest wait for a day limit a call without ``max_wait`` accepts: its
    limiter's ``max_day_wait`` (``None``: as long as it takes)."""
    limiter = _registry.limiter_for(g.opts, g.base_url, req.model, g.account)
    return None if limiter is None else limiter.max_day_wait


def _believable_tpm(g: Guard, req: ChatRequest, failure: Failure, limit: int) -> bool:
    """Whether a 413's ``limit`` can be learned: a positive number, below what it says
    the request needed, and not below the largest request this server already served."""
    return (
        limit > 0
        and (failure.requested is None or failure.requested > limit)
        and limit >= _registry.served(g.base_url, req.model).limit_tokens
    )


def _learn_context_plan(g: Guard, req: ChatRequest, sender: Sender, s: Settlement) -> Plan[bool]:
    """Learn the context window the server enforces: from the models endpoint when it
    says, else half of what it refused, never below the largest request it served.
    ``False``: nothing believable to learn (the endpoint or what was served says the
    request fits), so the refusal reaches the caller as it is."""
    window = yield Call(sender.context_window, sender.context_window_async, req.model)
    refused = (s.fitted.tokens_after if s.fitted else s.count.prompt_tokens) + s.reserve
    if isinstance(window, int) and window > 0:
        if window >= refused:
            return False  # the endpoint says it fits: one refusal does not outweigh it
        source = "models_endpoint"
    else:
        window, source = refused // 2, "estimate"
    window = max(window, _registry.served(g.base_url, req.model).total_tokens, 1)
    if window >= refused:
        return False  # a request as large was served: the refusal is not believed
    _learn(req, g, "context_window", window, source)
    return True


def _learn(req: ChatRequest, g: Guard, limit: str, value: int, source: str) -> None:
    now = g.opts.clock()
    if limit == "context_window":
        table: int | None = model_info(g.base_url, req.model).context_window
        _registry.remember(g.base_url, req.model, now=now, context_window=value)
    else:
        table = None
        _registry.remember(g.base_url, req.model, now=now, tpm=value)
    emit(GuardLimitLearned(model=req.model, limit=limit, table=table, learned=value, source=source))
