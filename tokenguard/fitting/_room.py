"""How many prompt tokens a request may use: the room, and the completion reservation.

``allowed = min(context window, TPM limit, budget left) - completion reservation``, and
at most a ceiling of the caller's own on the prompt (``max_prompt_tokens``).
The reservation is the request's ``max_tokens``, or, when the call gives none, what the
server holds for it: the default reserve capped by the room the prompt leaves in the
context window (so a prompt the server would take is never cut). A ``max_tokens`` that
alone makes the request impossible (prompt + ``max_tokens`` above the ceiling, which
Groq answers with 413 or 400 and which can never pass) is lowered to what fits, keeping
at least ``min_completion``, before any message is dropped. Pure arithmetic: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..counting._request_options import check_completion_cap
from ..errors import ConfigurationError, ContextOverflow
from ..models import DEFAULT_RESERVE

__all__ = [
    "DEFAULT_MIN_COMPLETION",
    "DEFAULT_RESERVE",
    "Bound",
    "Room",
    "room_for",
]

#: The limit that set a request's room: the model's context window, the TPM limit, an open
#: budget, or the caller's own ceiling on the prompt (``max_prompt_tokens``).
Bound = Literal["context_window", "tpm", "budget", "max_prompt_tokens"]

#: Completion tokens a lowered ``max_tokens`` keeps at least (unless the caller asked
#: for fewer): enough for a paragraph of answer, small next to Groq's 6,000 TPM.
DEFAULT_MIN_COMPLETION = 512


@dataclass(frozen=True)
class Room:
    """The room one request has.

    ``ceiling`` is ``min(context window, TPM limit, budget left)`` for prompt and
    completion together; ``allowed`` is what the prompt may use: the ceiling less the
    completion reservation ``reserve``, and at most ``max_prompt_tokens`` when one was
    given. ``bound_by`` names the limit that set ``allowed``. ``max_tokens`` is what to send
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


def _server_reserve(
    prompt_tokens: int,
    *,
    context_window: int,
    ceiling: int,
    default_reserve: int,
    max_completion_tokens: int | None,
    min_completion: int,
    shrink: bool,
) -> int:
    """The completion reservation of a call that sends no ``max_tokens``.

    The server holds ``min(default_reserve, context window - prompt)`` for such a call
    (the emulator does; Groq's exact figure is not documented): it accepts any prompt
    that leaves it at least one completion token and answers more briefly. So a prompt
    that costs no more than the ceiling that way is reserved exactly that and never cut.
    A prompt that must be cut anyway is cut to leave the whole default (or, when the
    default alone fills the ceiling, ``min_completion``); under a TPM limit or a budget
    below the context window the server holds the whole default for any prompt that can
    pass, so nothing less can be reserved there.
    """
    full = default_reserve
    if max_completion_tokens:
        full = min(full, max_completion_tokens)
    if full == 0:
        return 0  # no reservation at all (a Conversation's own ceiling)
    held = min(full, context_window - prompt_tokens)
    if held >= 1 and prompt_tokens + held <= ceiling:
        return held  # taken as is
    if ceiling < context_window or full < ceiling or not shrink:
        return full
    return min(min_completion, full)


def _checked(
    context_window: object,
    tpm: object,
    budget: object,
    max_tokens: object,
    default_reserve: object,
    min_completion: object,
    max_prompt_tokens: object,
) -> tuple[int, int | None, int | None, int | None, int | None]:
    """The numbers of :func:`room_for`, checked: ``(context_window, tpm, budget,
    max_tokens, max_prompt_tokens)``; a :class:`ConfigurationError` names a bad one."""
    window = _positive_or_none(context_window, "context_window") or 0
    if window <= 0:
        raise ConfigurationError(f"context_window must be positive, got {context_window}")
    checked = (
        window,
        _positive_or_none(tpm, "tpm"),
        _positive_or_none(budget, "budget"),
        check_completion_cap("max_tokens", max_tokens),
    )
    _positive_or_none(default_reserve, "default_reserve")
    if (
        isinstance(min_completion, bool)
        or not isinstance(min_completion, int)
        or min_completion < 1
    ):
        raise ConfigurationError(f"min_completion must be an int >= 1, got {min_completion!r}")
    prompt_cap = _positive_or_none(max_prompt_tokens, "max_prompt_tokens")
    if prompt_cap == 0:
        raise ConfigurationError("max_prompt_tokens must be at least 1")
    return (*checked, prompt_cap)


def _ceiling(context_window: int, tpm: int | None, budget: int | None) -> tuple[int, Bound]:
    """The smallest of the limits on prompt + completion, and which one it is."""
    ceiling: int = context_window
    bound_by: Bound = "context_window"
    # On ties the rate limit is named: it is the one a user can change (tier, budget).
    if tpm is not None and tpm <= ceiling:
        ceiling, bound_by = tpm, "tpm"
    if budget is not None and budget <= ceiling:
        ceiling, bound_by = budget, "budget"
    return ceiling, bound_by


def _lowered(
    prompt_tokens: int,
    max_tokens: int,
    ceiling: int,
    max_completion_tokens: int | None,
    min_completion: int,
    shrink: bool,
) -> int:
    """``max_tokens`` lowered (when ``shrink``) to the model's cap and to what the ceiling
    leaves the prompt, but not below ``min(min_completion, max_tokens)``."""
    if not shrink:
        return max_tokens
    reserve = max_tokens
    if max_completion_tokens is not None and reserve > max_completion_tokens:
        reserve = max_completion_tokens
    if prompt_tokens + reserve > ceiling:
        reserve = max(ceiling - prompt_tokens, min(min_completion, reserve))
    return reserve


def _no_room(
    prompt_tokens: int, reserve: int, ceiling: int, bound_by: Bound, *, asked: bool
) -> ContextOverflow:
    """The error for a reservation that alone fills the ceiling; ``asked``: the call sent
    ``max_tokens`` (else the reservation is the default's)."""
    lower = "max_tokens" if asked else "default_reserve (or send max_tokens)"
    return ContextOverflow(
        f"the completion reservation of {reserve} tokens leaves no room for a prompt "
        f"within {ceiling} tokens (bound by {bound_by}); lower {lower}",
        needed=prompt_tokens + reserve,
        available=ceiling,
        limit_name=bound_by,
    )


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
    max_prompt_tokens: int | None = None,
) -> Room:
    """The :class:`Room` of a request whose prompt costs ``prompt_tokens``.

    A ``max_tokens`` too large for the ceiling or the model is lowered first (unless not
    ``shrink_max_tokens``; see ``_lowered``); without one, the reservation is what the
    server holds (``_server_reserve``), so a prompt it would take is never cut.

    ``max_prompt_tokens`` caps the prompt alone (a Conversation's ceiling). Raises
    :class:`~tokenguard.ContextOverflow` when the reservation alone fills the ceiling,
    :class:`~tokenguard.ConfigurationError` for malformed numbers.

    Example::

        >>> room_for(100, context_window=8_192, tpm=6_000, max_tokens=256).allowed
        5744
        >>> r = room_for(7_900, context_window=8_192)  # no max_tokens: the server's hold
        >>> (r.reserve, r.allowed)
        (292, 7900)
    """
    context_window, tpm, budget, max_tokens, max_prompt_tokens = _checked(
        context_window, tpm, budget, max_tokens, default_reserve, min_completion, max_prompt_tokens
    )
    ceiling, bound_by = _ceiling(context_window, tpm, budget)
    if max_tokens is None:
        reserve = _server_reserve(
            prompt_tokens,
            context_window=context_window,
            ceiling=ceiling,
            default_reserve=default_reserve,
            max_completion_tokens=max_completion_tokens,
            min_completion=min_completion,
            shrink=shrink_max_tokens,
        )
    else:
        cap, least = max_completion_tokens, min_completion
        reserve = _lowered(prompt_tokens, max_tokens, ceiling, cap, least, shrink_max_tokens)
    if ceiling - reserve <= 0:
        raise _no_room(prompt_tokens, reserve, ceiling, bound_by, asked=max_tokens is not None)
    if max_prompt_tokens is not None and max_prompt_tokens < ceiling - reserve:
        ceiling, bound_by = max_prompt_tokens + reserve, "max_prompt_tokens"
    return Room(
        allowed=ceiling - reserve,
        ceiling=ceiling,
        bound_by=bound_by,
        reserve=reserve,
        max_tokens=None if max_tokens is None else reserve,
        max_tokens_requested=max_tokens,
    )
