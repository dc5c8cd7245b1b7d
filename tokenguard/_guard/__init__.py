"""The guard: every chat call counted, fitted, budgeted, rate-limited, retried and logged.

Three entry points share one pipeline (``_pipeline``, a plan run by a thread or an
asyncio task): :func:`guard` decorates a function that sends a chat request,
:func:`instrument` wraps an openai or groq client, and budgets
(:func:`tokenguard.budget`) cap what the calls inside a block may spend.

Example::

    import tokenguard as tg

    client = tg.instrument(OpenAI(base_url=GROQ, api_key=KEY))

    @tg.guard(max_wait=30)
    def ask(messages, model="llama-3.1-8b-instant", max_tokens=256):
        return other_client.chat.completions.create(messages=messages, model=model,
                                                    max_tokens=max_tokens)

Modules: ``_options`` (the options value), ``_request`` (reading a call), ``_site`` (a
call site and what it works out once), ``_pipeline`` (the plan: fit, admit, send),
``_settle`` (settling and the call's event), ``_recover`` (retries and refits),
``_streams`` (streams settled at their end), ``_decorator``, ``_instrument``,
``_registry`` (the process-wide default limiters and learned limits). Internal: the public
names are re-exported from :mod:`tokenguard`.
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
