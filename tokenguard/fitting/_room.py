"""How many prompt tokens a request may use: the room, and the completion reservation.

``allowed = min(context window, TPM limit, budget left) - completion reservation``.
The reservation is the request's ``max_tokens`` (or the default the server holds
when the call gives none). A ``max_tokens`` that alone makes the request impossible
(prompt + ``max_tokens`` above the ceiling, which Groq answers with 413 or 400 and
which can never pass) is lowered to what fits, keeping at least ``min_completion``,
before any message is dropped. Pure arithmetic: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigurationError, ContextOverflow

__all__ = [
    "DEFAULT_MIN_COMPLETION",
    "DEFAULT_RESERVE",
    "Bound",
    "Room",
    "room_for",
]

Bound = Literal["context_window", "tpm", "budget"]

#: Completion tokens a lowered ``max_tokens`` keeps at least (unless the caller asked
#: for fewer): enough for a paragraph of answer, small next to Groq's 6,000 TPM.
DEFAULT_MIN_COMPLETION = 512

#: Completion tokens held for a call that gives no ``max_tokens``. What Groq holds then
#: is not documented; this is the emulator's default and can be set per call.
DEFAULT_RESERVE = 1024


@dataclass(frozen=True)
class Room:
    """The room one request has.

    ``ceiling`` is ``min(context window, TPM limit, budget left)`` and ``bound_by``
    names the limit that set it; ``allowed`` is what the prompt may use once the
    completion reservation ``reserve`` is taken off. ``max_tokens`` is what to send
    (``None`` when the call gave none); ``max_tokens_requested`` what the call asked.

    Example::

        >>> r = room_for(9_000, context_window=8_192, tpm=6_000, max_tokens=32_768)
        >>> (r.ceiling, r.bound_by, r.max_tokens, r.allowed)
        (6000, 'tpm', 512, 5488)
    """

    allowed: int
    ceiling: int
    bound_by: Bound
    reserve: int
    max_tokens: int | None
    max_tokens_requested: int | None

    @property
    def lowered(self) -> bool:
        """Whether ``max_tokens`` was lowered to make the request possible."""
        return self.max_tokens != self.max_tokens_requested


def _positive_or_none(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{name} must be >= 0, got {value}")
    return value


def room_for(
    prompt_tokens: int,
    *,
    context_window: int,
    tpm: int | None = None,
    budget: int | None = None,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    default_reserve: int = DEFAULT_RESERVE,
    min_completion: int = DEFAULT_MIN_COMPLETION,
    shrink_max_tokens: bool = True,
) -> Room:
    """The :class:`Room` of a request whose prompt costs ``prompt_tokens``.

    With ``shrink_max_tokens`` (the default), a ``max_tokens`` that makes prompt +
    completion exceed the ceiling (or exceeds the model's ``max_completion_tokens``) is
    lowered to ``max(ceiling - prompt_tokens, min(min_completion, max_tokens))``, so the
    prompt is only cut when even ``min_completion`` would not fit. Without it the
    reservation stays as asked and only the prompt can give way.

    Raises :class:`~tokenguard.ContextOverflow` when the reservation alone fills the
    ceiling (no prompt can fit), and :class:`~tokenguard.ConfigurationError` for
    malformed numbers.

    Example::

        >>> room_for(100, context_window=8_192, tpm=6_000, max_tokens=256).allowed
        5744
    """
    context_window = _positive_or_none(context_window, "context_window") or 0
    if context_window <= 0:
        raise ConfigurationError(f"context_window must be positive, got {context_window}")
    tpm = _positive_or_none(tpm, "tpm")
    budget = _positive_or_none(budget, "budget")
    max_tokens = _positive_or_none(max_tokens, "max_tokens")
    _positive_or_none(default_reserve, "default_reserve")
    if (
        isinstance(min_completion, bool)
        or not isinstance(min_completion, int)
        or min_completion < 1
    ):
        raise ConfigurationError(f"min_completion must be an int >= 1, got {min_completion!r}")
    if max_tokens == 0:
        raise ConfigurationError("max_tokens must be at least 1 (the server refuses 0)")

    ceiling, bound_by = context_window, "context_window"
    # On ties the rate limit is named: it is the one a user can change (tier, budget).
    if tpm is not None and tpm <= ceiling:
        ceiling, bound_by = tpm, "tpm"
    if budget is not None and budget <= ceiling:
        ceiling, bound_by = budget, "budget"

    if max_tokens is None:
        reserve = default_reserve
        sent = None
    else:
        reserve = max_tokens
        if shrink_max_tokens:
            if max_completion_tokens is not None and reserve > max_completion_tokens:
                reserve = max_completion_tokens
            if prompt_tokens + reserve > ceiling:
                floor = min(min_completion, reserve)
                reserve = max(ceiling - prompt_tokens, floor)
        sent = reserve
    allowed = ceiling - reserve
    if allowed <= 0:
        raise ContextOverflow(
            f"the completion reservation of {reserve} tokens leaves no room for a prompt "
            f"within {ceiling} tokens (bound by {bound_by}); lower max_tokens",
            needed=prompt_tokens + reserve,
            available=ceiling,
            limit_name=bound_by,
        )
    return Room(
        allowed=allowed,
        ceiling=ceiling,
        bound_by=bound_by,  # type: ignore[arg-type]
        reserve=reserve,
        max_tokens=sent,
        max_tokens_requested=max_tokens,
    )
