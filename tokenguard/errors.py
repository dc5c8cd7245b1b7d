"""The exception tree of tokenguard.

Every error that tokenguard raises on its own account derives from
:class:`TokenGuardError`, so ``except tg.TokenGuardError`` catches them all::

    TokenGuardError
    ├── InvalidMessages        the messages are malformed (names the message and problem)
    ├── InvalidRequest         another part of the request is malformed (max_tokens, extra_body)
    ├── ConfigurationError     an option or model-table entry is malformed
    │   └── UnknownPrice       a money budget is open and the model has no price
    ├── TokenizerUnavailable   tokenizer data is missing or fails its sha256 check
    ├── ContextOverflow        the request cannot be made to fit the context window
    ├── RequestTooLarge        one request costs more than a limit itself (it could never go)
    ├── BudgetExceeded         the request does not fit an open ``budget()``
    ├── RateLimitTimeout       the limiter would have to wait longer than ``max_wait``
    └── LimiterUnavailable     the shared (Redis) limiter cannot be reached
        └── BudgetUnavailable  a shared (Redis) budget cannot be reached

Errors say what was expected and what was found, with the numbers, and carry
those numbers as attributes so that callers need not parse messages.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "BudgetExceeded",
    "BudgetUnavailable",
    "ConfigurationError",
    "ContextOverflow",
    "InvalidMessages",
    "InvalidRequest",
    "LimiterUnavailable",
    "RateLimitTimeout",
    "RequestTooLarge",
    "TokenGuardError",
    "TokenizerUnavailable",
    "UnknownPrice",
]


class TokenGuardError(Exception):
    """Root of every error raised by tokenguard."""


class InvalidMessages(TokenGuardError, ValueError):
    """The messages (or another part of the request) are malformed.

    ``index`` is the position of the offending message, or ``None`` when the
    problem is with the list as a whole; ``field`` is the path of the offending value
    when one is named (``messages[2].tool_calls[0].function.arguments``).
    """

    def __init__(self, problem: str, *, index: int | None = None, field: str | None = None) -> None:
        self.problem = problem
        self.index = index
        self.field = field
        where = f"messages[{index}]: " if index is not None else ""
        super().__init__(f"{where}{problem}")


class InvalidRequest(TokenGuardError, ValueError):
    """A part of the request other than its messages is malformed (``max_tokens``,
    ``max_completion_tokens``, ``extra_body``); ``field`` names it. Nothing was sent."""

    def __init__(self, problem: str, *, field: str) -> None:
        self.problem = problem
        self.field = field
        super().__init__(problem)


class ConfigurationError(TokenGuardError, ValueError):
    """An option, limit or model-table entry has a value that cannot work."""


class TokenizerUnavailable(TokenGuardError):
    """Tokenizer data could not be found offline, or did not match its sha256."""


class ContextOverflow(TokenGuardError):
    """The request does not fit the model's context window and could not be fitted.

    ``needed`` and ``available`` are in tokens; ``limit_name`` names the limit that
    bound the room (``"context_window"``, ``"tpm"`` or ``"budget"``) when known.
    """

    def __init__(
        self, message: str, *, needed: int, available: int, limit_name: str | None = None
    ) -> None:
        self.needed = needed
        self.available = available
        self.limit_name = limit_name
        super().__init__(message)


class RequestTooLarge(TokenGuardError):
    """One request costs more than a limit allows in a whole window; it can never be sent.

    ``limit_name`` is e.g. ``"tpm"``; ``cost`` and ``limit`` are in that limit's units.
    """

    def __init__(self, message: str, *, limit_name: str, cost: int, limit: int) -> None:
        self.limit_name = limit_name
        self.cost = cost
        self.limit = limit
        super().__init__(message)


class BudgetExceeded(TokenGuardError):
    """The request's estimate does not fit the remaining tokens or requests of a budget.

    ``needed`` and ``remaining`` are in ``unit`` (``"tokens"``, ``"requests"``, or
    ``"usd"``: then exact :class:`~decimal.Decimal` dollars).
    """

    def __init__(
        self,
        message: str,
        *,
        needed: int | Decimal,
        remaining: int | Decimal,
        unit: str = "tokens",
    ) -> None:
        self.needed = needed
        self.remaining = remaining
        self.unit = unit
        super().__init__(message)


class RateLimitTimeout(TokenGuardError):
    """Waiting for the rate window would take longer than ``max_wait`` (or, without
    one, a day limit would hold the request longer than the limiter's ``max_day_wait``).

    ``needed_wait`` is the least wait (seconds) the request would have needed, when
    known; ``max_wait`` the bound it passed; ``limit_name`` the limit that binds
    (``"tpm"``, ``"rpm"``, ``"tpd"``, ``"rpd"``, ``"retry-after"``), when one does;
    ``resets_in`` the seconds until that limit is whole again, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        needed_wait: float | None,
        max_wait: float,
        limit_name: str | None = None,
        resets_in: float | None = None,
    ) -> None:
        self.needed_wait = needed_wait
        self.max_wait = max_wait
        self.limit_name = limit_name
        self.resets_in = resets_in
        super().__init__(message)


class LimiterUnavailable(TokenGuardError):
    """The shared limiter's backend (Redis) could not be reached or answered wrongly."""


class BudgetUnavailable(LimiterUnavailable):
    """A shared budget's Redis could not be reached or answered wrongly: nothing was
    sent (a hold could not be taken), or a settle did not arrive (the hold is charged
    its estimate when its lease runs out)."""


class UnknownPrice(ConfigurationError):
    """A budget in money (``usd=``) is open and the call's ``model`` has no price: register
    one with :func:`tokenguard.register_price`. Nothing was sent."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"a budget in US dollars is open and model {model!r} has no price: give it one "
            f"with tg.register_price({model!r}, input=..., output=...) (USD per million "
            "tokens); nothing was sent"
        )
