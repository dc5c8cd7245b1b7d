"""The guard: every chat call counted, fitted, budgeted, rate-limited, retried and logged.

Three entry points share one pipeline (``_pipeline``, a plan run by a thread or an
asyncio task): :func:`guard` decorates a function that sends a chat request,
:func:`instrument` wraps an openai or groq client, and budgets (:func:`tokenguard.budget`)
cap what the calls inside a block may spend. What each module holds is listed in
docs/internals.md ("The guard's modules"); the public names are re-exported from
:mod:`tokenguard`.
"""

from __future__ import annotations

from ._decorator import guard
from ._instrument import instrument, is_instrumented, uninstrument
from ._options import (
    DEFAULT_BASE_URL,
    DEFAULT_WAIT_EVENT_S,
    GuardKwargs,
    GuardOptions,
    InstrumentKwargs,
)
from ._registry import reset as reset_defaults
from ._streams import GuardedAsyncStream, GuardedStream

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_WAIT_EVENT_S",
    "GuardKwargs",
    "GuardOptions",
    "GuardedAsyncStream",
    "GuardedStream",
    "InstrumentKwargs",
    "guard",
    "instrument",
    "is_instrumented",
    "reset_defaults",
    "uninstrument",
]
