"""What a shared budget's state is, as read from Redis (:func:`tokenguard.budget_status`).

Apart from the Redis side (:mod:`._shared`) so that ``import tokenguard`` works without
the ``redis`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._prices import from_pico

__all__ = ["BudgetStatus", "status_from", "text_of"]


def text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cap(value: Any) -> int | None:
    n = int(text_of(value))
    return None if n < 0 else n


@dataclass(frozen=True)
class BudgetStatus:
    """A shared budget as Redis holds it now (see :func:`tokenguard.budget_status`).

    ``per`` is ``"day"``, ``"month"`` (calendar periods in UTC) or a rolling number of
    seconds as text; ``None`` (and zeros) when no process has used ``key`` yet. The
    caps are those the last hold gave. ``used_*``: settled in the current period;
    ``reserved_*``: held by calls in flight; ``resets_in``: seconds until the period ends
    (rolling: until its oldest charge ages out; ``None``: nothing to age out).
    """

    key: str
    per: str | None
    tokens: int | None
    requests: int | None
    usd: Decimal | None
    used_tokens: int
    used_requests: int
    spent_usd: Decimal
    reserved_tokens: int
    reserved_requests: int
    reserved_usd: Decimal
    resets_in: float | None

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens a new call may still hold (``None``: no token cap)."""
        if self.tokens is None:
            return None
        return max(0, self.tokens - self.used_tokens - self.reserved_tokens)

    @property
    def remaining_requests(self) -> int | None:
        """Requests a new call may still make (``None``: no request cap)."""
        if self.requests is None:
            return None
        return max(0, self.requests - self.used_requests - self.reserved_requests)

    @property
    def remaining_usd(self) -> Decimal | None:
        """Dollars a new call may still hold (``None``: no money cap)."""
        if self.usd is None:
            return None
        return max(Decimal(0), self.usd - self.spent_usd - self.reserved_usd)


def status_from(key: str, reply: list[Any]) -> BudgetStatus:
    """A ``read`` reply as a :class:`BudgetStatus`."""
    if int(reply[0]) == 0:
        zero = Decimal(0)
        return BudgetStatus(key, None, None, None, None, 0, 0, zero, 0, 0, zero, None)
    f = [text_of(x) for x in reply[1:]]
    pico_cap = _cap(f[3])
    resets = float(f[10])
    return BudgetStatus(
        key=key,
        per=f[0],
        tokens=_cap(f[1]),
        requests=_cap(f[2]),
        usd=None if pico_cap is None else from_pico(pico_cap),
        used_tokens=int(float(f[4])),
        used_requests=int(float(f[5])),
        spent_usd=from_pico(int(f[6])),
        reserved_tokens=int(float(f[7])),
        reserved_requests=int(float(f[8])),
        reserved_usd=from_pico(int(f[9])),
        resets_in=None if resets < 0 else max(resets, 0.0),
    )
