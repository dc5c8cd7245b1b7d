"""tokenguard: count, fit, rate-limit and log every chat request sent to Groq.

Drop it onto code that already calls Groq's OpenAI-compatible API::

    import tokenguard as tg

    n = tg.count_tokens([{"role": "user", "content": "Hello"}], model="llama-3.1-8b-instant")
"""

from __future__ import annotations

from . import events, sinks
from ._budget import Budget, BudgetHold, budget, budget_status, carry
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
from ._spend._prices import Price, price_of, register_price
from ._spend._status import BudgetStatus
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
    BudgetUnavailable,
    ConfigurationError,
    ContextOverflow,
    InvalidMessages,
    InvalidRequest,
    LimiterUnavailable,
    RateLimitTimeout,
    RequestTooLarge,
    TokenGuardError,
    TokenizerUnavailable,
    UnknownPrice,
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
from .limiter import Limiter, Priority, Reservation, priority
from .models import Limits, ModelInfo, get_model, register_model

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "Budget",
    "BudgetExceeded",
    "BudgetHold",
    "BudgetStatus",
    "BudgetUnavailable",
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
    "Price",
    "Priority",
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
    "UnknownPrice",
    "__version__",
    "budget",
    "budget_status",
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
    "price_of",
    "priority",
    "register_model",
    "register_price",
    "reset_defaults",
    "sinks",
    "uninstrument",
]
