"""tokenguard: count, fit, rate-limit and log every chat request sent to Groq.

Drop it onto code that already calls Groq's OpenAI-compatible API::

    import tokenguard as tg

    n = tg.count_tokens([{"role": "user", "content": "Hello"}], model="llama-3.1-8b-instant")
"""

from __future__ import annotations

from . import events, sinks
from ._budget import Budget, BudgetHold, budget, carry
from ._guard import (
    DEFAULT_BASE_URL,
    GuardedAsyncStream,
    GuardedStream,
    GuardKwargs,
    GuardOptions,
    InstrumentKwargs,
    guard,
    instrument,
    is_instrumented,
    reset_defaults,
    uninstrument,
)
from .conversation import Conversation
from .counting import (
    Calibration,
    Counter,
    PromptCount,
    RequestCount,
    count_prompt,
    count_request,
    count_tokens,
    default_counter,
    observe_prompt_tokens,
)
from .errors import (
    BudgetExceeded,
    ConfigurationError,
    ContextOverflow,
    InvalidMessages,
    InvalidRequest,
    LimiterUnavailable,
    RateLimitTimeout,
    RequestTooLarge,
    TokenGuardError,
    TokenizerUnavailable,
)
from .fitting import (
    ClientSummarizer,
    FitResult,
    Room,
    Summarizer,
    SummaryCache,
    SummaryRequest,
    fit,
    fit_async,
)
from .limiter import Limiter, Reservation
from .models import Limits, ModelInfo, get_model, register_model

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "Budget",
    "BudgetExceeded",
    "BudgetHold",
    "Calibration",
    "ClientSummarizer",
    "ConfigurationError",
    "ContextOverflow",
    "Conversation",
    "Counter",
    "FitResult",
    "GuardKwargs",
    "GuardOptions",
    "GuardedAsyncStream",
    "GuardedStream",
    "InstrumentKwargs",
    "InvalidMessages",
    "InvalidRequest",
    "Limiter",
    "LimiterUnavailable",
    "Limits",
    "ModelInfo",
    "PromptCount",
    "RateLimitTimeout",
    "RequestCount",
    "RequestTooLarge",
    "Reservation",
    "Room",
    "Summarizer",
    "SummaryCache",
    "SummaryRequest",
    "TokenGuardError",
    "TokenizerUnavailable",
    "__version__",
    "budget",
    "carry",
    "count_prompt",
    "count_request",
    "count_tokens",
    "default_counter",
    "events",
    "fit",
    "fit_async",
    "get_model",
    "guard",
    "instrument",
    "is_instrumented",
    "observe_prompt_tokens",
    "register_model",
    "reset_defaults",
    "sinks",
    "uninstrument",
]
