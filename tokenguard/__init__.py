"""tokenguard: count, fit, rate-limit and log every chat request sent to Groq.

Drop it onto code that already calls Groq's OpenAI-compatible API::

    import tokenguard as tg

    n = tg.count_tokens([{"role": "user", "content": "Hello"}], model="llama-3.1-8b-instant")
"""

from __future__ import annotations

from . import events
from ._budget import Budget, BudgetHold, budget, carry
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
from .guard import guard, instrument, uninstrument
from .limiter import Limiter, Reservation
from .models import Limits, ModelInfo, get_model, register_model

__version__ = "0.1.0"

__all__ = [
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
    "InvalidMessages",
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
    "observe_prompt_tokens",
    "register_model",
    "uninstrument",
]
