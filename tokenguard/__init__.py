"""tokenguard: count, fit, rate-limit and log every chat request sent to Groq.

Drop it onto code that already calls Groq's OpenAI-compatible API::

    import tokenguard as tg

    n = tg.count_tokens([{"role": "user", "content": "Hello"}], model="llama-3.1-8b-instant")
"""

from __future__ import annotations

from . import events
from ._budget import Budget, BudgetHold, budget, carry
from .counting import (
    Calibration,
    Counter,
    RequestCount,
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
from .limiter import Limiter, Reservation
from .models import Limits, ModelInfo, get_model, register_model

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetHold",
    "Calibration",
    "ConfigurationError",
    "ContextOverflow",
    "Counter",
    "InvalidMessages",
    "Limiter",
    "LimiterUnavailable",
    "Limits",
    "ModelInfo",
    "RateLimitTimeout",
    "RequestCount",
    "RequestTooLarge",
    "Reservation",
    "TokenGuardError",
    "TokenizerUnavailable",
    "__version__",
    "budget",
    "carry",
    "count_request",
    "count_tokens",
    "default_counter",
    "events",
    "get_model",
    "observe_prompt_tokens",
    "register_model",
]
