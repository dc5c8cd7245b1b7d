"""Which class a call waits in, interactive or batch, for the calls inside a block.

A context variable, so each thread and each asyncio task has its own: a block in one
thread never changes the class of another's calls. Invariant: nothing set means
``"interactive"``, today's behaviour.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from ..errors import ConfigurationError
from ._queue import PRIORITIES, Priority

__all__ = ["Priority", "check_priority", "current_priority", "priority"]

_CURRENT: contextvars.ContextVar[Priority | None] = contextvars.ContextVar(
    "tokenguard_priority", default=None
)


def check_priority(value: object, what: str = "priority") -> Priority:
    """``value`` if it is a priority, else :class:`~tokenguard.ConfigurationError`."""
    if value not in PRIORITIES:
        raise ConfigurationError(f'{what} must be "interactive" or "batch", got {value!r}')
    return value


def current_priority(default: Priority | None = None) -> Priority:
    """The class of a call made here: the innermost :func:`priority` block's, else
    ``default``, else ``"interactive"``."""
    return _CURRENT.get() or default or "interactive"


@contextlib.contextmanager
def priority(kind: Priority) -> Iterator[None]:
    """Calls made inside the block (guarded, instrumented, or ``Limiter.acquire``
    without ``priority=``) wait as ``kind``: ``"batch"`` calls are admitted after
    waiting ``"interactive"`` ones, except for the limiter's ``batch_share``; a
    block's class wins over a guard's ``priority=`` option. Threads and asyncio tasks
    each see their own (a task started inside the block inherits it).

    Example::

        with tg.priority("batch"):
            for doc in documents:
                summarize(doc)      # a guarded function: waits behind interactive calls
    """
    token = _CURRENT.set(check_priority(kind))
    try:
        yield
    finally:
        _CURRENT.reset(token)
