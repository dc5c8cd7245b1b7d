"""When a queue of requests would be served: one loop for every limiter model.

Pure: ``now`` is passed in; the model is cloned, never changed.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, TypeVar

__all__ = ["Model", "simulate"]

M = TypeVar("M", bound="Model")


class Model(Protocol):
    """What :func:`simulate` needs of a limiter model (the window or the bucket)."""

    def clone(self: M) -> M: ...
    def expire(self, now: float) -> None: ...
    def earliest(self, tokens: int, now: float) -> float: ...
    def admit(self, tokens: int, now: float) -> Any: ...


def simulate(model: Model, costs: list[int], now: float) -> float:
    """When the last of ``costs`` would be admitted if all went in order and nothing
    was settled and no header arrived meanwhile: an upper bound for a queue.

    Example::

        simulate(window, [1200, 800], now)   # when the second of two queued requests goes
    """
    m = model.clone()
    at = now
    for tokens in costs:
        m.expire(at)
        at = m.earliest(tokens, at)
        if math.isinf(at):
            return at
        m.expire(at)
        m.admit(tokens, at)
    return at
