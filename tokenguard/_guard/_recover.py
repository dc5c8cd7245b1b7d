"""What a guarded call does after a failed send: wait and send again, refit, or give up.

A 429 waits as the server says (``retry-after``, else the reset headers) and is sent
again; a 413 or ``context_length_exceeded`` teaches the site the limit and the request
is refitted once; 5xx, connection errors and timeouts are sent again as the SDK would
(``transient_retries``, with its backoff). Invariant: every decision here is bounded
(``retries``, ``max_wait``, one refit per limit, ``transient_retries``).
"""

from __future__ import annotations

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

#: The SDKs' backoff between retries of a failed request: min(0.5 * 2**n, 8) seconds.
_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0
#: Without ``retry-after`` or reset headers, a 429 is retried after this long.
_DEFAULT_429_WAIT = 1.0


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
        wait = _rate_limit_wait(g, s, failure, exc)
        attempts.rate_limited += 1
        attempt = attempts.rate_limited
    elif kind is FailureKind.TOO_LARGE:
        if attempts.refit_tpm or failure.limit is None:
            return False
        attempts.refit_tpm = True
        _learn(req, g, "tpm", failure.limit, "error")
        attempt = 1
    elif kind is FailureKind.CONTEXT_EXCEEDED:
        if attempts.refit_context:
            return False
        attempts.refit_context = True
        yield from _learn_context_plan(g, req, sender, s)
        attempt = 1
    elif kind in (FailureKind.SERVER, FailureKind.CONNECTION, FailureKind.TIMEOUT):
        if attempts.transient >= g.transient_retries or not isinstance(exc, Exception):
            return False
        wait = min(_BACKOFF_BASE * 2**attempts.transient, _BACKOFF_MAX)
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


def _rate_limit_wait(g: Guard, s: Settlement, failure: Failure, exc: BaseException) -> float:
    """How long a 429 asks to wait: ``RateLimitTimeout`` (reported) when that passes
    ``max_wait``."""
    wait = _DEFAULT_429_WAIT
    if failure.retry_after is not None:
        wait = failure.retry_after
    elif failure.headers is not None:
        reset = parse_headers(failure.headers).reset_tokens
        if reset is not None and reset > 0:
            wait = reset
    max_wait = g.opts.max_wait
    if max_wait is not None:
        spent = g.opts.clock() - s.started
        if spent + wait > max_wait:
            report(s, usage=None, failure=failure)
            raise RateLimitTimeout(
                f"the server refused the request (429) and asks to wait {wait:.3f}s, "
                f"which would pass max_wait={max_wait}s ({spent:.3f}s spent)",
                needed_wait=spent + wait,
                max_wait=max_wait,
            ) from exc
    return wait


def _learn_context_plan(g: Guard, req: ChatRequest, sender: Sender, s: Settlement) -> Plan[None]:
    """Learn the context window the server enforces: from the models endpoint when it
    says, else half of what it refused (one refit)."""
    window = yield Call(sender.context_window, sender.context_window_async, req.model)
    source = "models_endpoint"
    refused = (s.fitted.tokens_after if s.fitted else s.count.prompt_tokens) + s.reserve
    if not isinstance(window, int) or window <= 0 or window >= refused:
        window, source = max(1, refused // 2), "estimate"
    _learn(req, g, "context_window", window, source)


def _learn(req: ChatRequest, g: Guard, limit: str, value: int, source: str) -> None:
    if limit == "context_window":
        table: int | None = model_info(g.base_url, req.model).context_window
        _registry.remember(g.base_url, req.model, context_window=value)
    else:
        table = None
        _registry.remember(g.base_url, req.model, tpm=value)
    emit(GuardLimitLearned(model=req.model, limit=limit, table=table, learned=value, source=source))
