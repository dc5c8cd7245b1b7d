"""Fitting: make a chat request fit the room it has, by truncating or summarizing.

The room is ``min(context window, TPM limit, budget left) - completion reservation``
(:class:`Room`); :func:`fit` (and :func:`fit_async`) brings a request within it and
says what it did in a :class:`FitResult`::

    import tokenguard as tg

    r = tg.fit(history, model="llama3-8b-8192", max_tokens=256)
    client.chat.completions.create(model="llama3-8b-8192", messages=r.messages,
                                   max_tokens=r.max_tokens)

Fitting is pure: it reads no clock and does no I/O but the summarizer's call, and it
imports no client library (the default :class:`ClientSummarizer` only calls the
``chat.completions.create`` of the client it is given).
"""

from __future__ import annotations

from ._api import FitOptions, fit, fit_async
from ._layout import Layout, layout
from ._plan import FitResult, Strategy, StrategyCallable
from ._room import DEFAULT_MIN_COMPLETION, DEFAULT_RESERVE, Bound, Room, room_for
from ._shorten import MARKER
from ._summary import (
    DEFAULT_SUMMARY_TOKENS,
    SUMMARY_PREFIX,
    ClientSummarizer,
    Summarizer,
    SummaryCache,
    SummaryRequest,
    default_summary_cache,
    transcript,
)

__all__ = [
    "DEFAULT_MIN_COMPLETION",
    "DEFAULT_RESERVE",
    "DEFAULT_SUMMARY_TOKENS",
    "MARKER",
    "SUMMARY_PREFIX",
    "Bound",
    "ClientSummarizer",
    "FitOptions",
    "FitResult",
    "Layout",
    "Room",
    "Strategy",
    "StrategyCallable",
    "Summarizer",
    "SummaryCache",
    "SummaryRequest",
    "default_summary_cache",
    "fit",
    "fit_async",
    "layout",
    "room_for",
    "transcript",
]
