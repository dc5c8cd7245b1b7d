"""tokenguard: count, fit, rate-limit and log every chat request sent to Groq.

Drop it onto code that already calls Groq's OpenAI-compatible API::

    import tokenguard as tg

    n = tg.count_tokens([{"role": "user", "content": "Hello"}], model="llama-3.1-8b-instant")
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "ConfigurationError",
    "ContextOverflow",
    "InvalidMessages",
    "LimiterUnavailable",
    "RateLimitTimeout",
    "RequestTooLarge",
    "TokenGuardError",
    "TokenizerUnavailable",
    "__version__",
]
