"""Fallback models: a call its model cannot serve in time goes to the next one.

With ``fallback=[...]`` a call runs :func:`~._pipeline.call_plan` for its own model;
when that model would hold it past ``max_wait`` (or past the limiter's ``max_day_wait``)
or its day limit is spent, the same call is counted, fitted, admitted and sent again
for the next model, with that model's tokenizer, context window and limiter. Only the
failures that say "not in time" move a call on (see :func:`fallback_reason`): any other
error reaches the caller as it is. A stream moves on only before its first chunk: once
``call_plan`` has returned it, the stream is the caller's.

Invariant: each model is tried at most once per call, in the order given, within one
``max_wait`` counted from the start of the call; what a model held (its reservation,
the budgets) is released before the next is tried; the caller's request is never
changed, only copied with another model.
"""

from __future__ import annotations

import sys
from typing import Any

from .._adapters import FailureKind, classify
from .._drive import Plan
from ..errors import RateLimitTimeout
from ..events import GuardFallback, emit
from ._pipeline import call_plan
from ._request import ChatRequest, Sender
from ._site import Guard

__all__ = ["fallback_plan", "fallback_reason", "models_for"]

_DAY_LIMITS = ("tpd", "rpd")


def models_for(model: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
    """The models a call to ``model`` tries, in order: its own, then the fallback models
    (a call that names one of them directly goes on to the others)."""
    return (model, *(m for m in fallback if m != model))


def fallback_plan(g: Guard, req: ChatRequest, sender: Sender) -> Plan[Any]:
    """:func:`~._pipeline.call_plan` for ``req``'s model, then for each fallback model
    while the one before could not serve the call in time (a
    ``tokenguard.guard.fallback`` event each time). When none can, the caller gets the
    last model's error, naming the models tried."""
    assert g.opts.fallback is not None  # chosen by the guard only with fallback models
    models = models_for(req.model, tuple(g.opts.fallback))
    started = g.opts.clock()
    for i, model in enumerate(models):
        if i:
            req = req._replace(model=model, fallback_from=models[0])
            sender = sender.for_model(model)
        try:
            return (yield from call_plan(g, req, sender, started))
        except Exception as exc:
            reason = fallback_reason(exc)
            if reason is None:
                raise
            if i + 1 == len(models):
                if isinstance(exc, RateLimitTimeout):
                    raise _exhausted(exc, models) from exc
                if sys.version_info >= (3, 11):  # the SDK's own error, kept, with a note
                    exc.add_note(f"tokenguard: {_tried(models)}")
                raise
            emit(
                GuardFallback(
                    from_model=model,
                    to_model=models[i + 1],
                    site=g.site,
                    reason=reason[0],
                    limit=reason[1],
                    needed_wait_s=exc.needed_wait if isinstance(exc, RateLimitTimeout) else None,
                )
            )
    raise AssertionError("unreachable: the last model returns or raises")


def fallback_reason(exc: Exception) -> tuple[str, str | None] | None:
    """(why, the limit that bound) when ``exc`` says the model cannot serve the call in
    time: ``"day_limit"`` for a day limit spent (the limiter's refusal naming TPD or RPD,
    or the server's 429 naming it that recovery could not wait out), ``"max_wait"`` for
    any other wait past ``max_wait``. ``None``: any other error, which falls back to
    nothing."""
    if isinstance(exc, RateLimitTimeout):
        limit = exc.limit_name
        cause = exc.__cause__
        if limit is None and isinstance(cause, Exception):
            limit = classify(cause).limit_name  # recovery's refusal of the server's 429
        return ("day_limit" if limit in _DAY_LIMITS else "max_wait"), limit
    failure = classify(exc)
    if failure.kind is FailureKind.RATE_LIMITED and failure.limit_name in _DAY_LIMITS:
        return "day_limit", failure.limit_name  # the server's 429s, retries spent
    return None


def _tried(models: tuple[str, ...]) -> str:
    return f"no model could serve the call in time (tried {', '.join(models)})"


def _exhausted(exc: RateLimitTimeout, models: tuple[str, ...]) -> RateLimitTimeout:
    """The last model's refusal, saying which models were tried."""
    return RateLimitTimeout(
        f"{exc}; {_tried(models)}",
        needed_wait=exc.needed_wait,
        max_wait=exc.max_wait,
        limit_name=exc.limit_name,
        resets_in=exc.resets_in,
    )
