"""Rate limiting in FIFO order (waiting interactive calls ahead of batch ones), in memory
or shared through Redis: a mirror of the server's refilling token buckets (the default)
or a sliding window.

Example::

    import tokenguard as tg

    lim = tg.Limiter(tpm=6000, rpm=30)
    r = lim.acquire(1200)            # blocks until every limit has room
    r.commit(950)                    # actual usage; or r.cancel() if nothing was sent
"""

from __future__ import annotations

from ._headers import ServerView, parse_headers
from ._limiter import Limiter, Reservation
from ._priority import Priority, priority
from ._window import WindowLimits

__all__ = [
    "Limiter",
    "Priority",
    "Reservation",
    "ServerView",
    "WindowLimits",
    "parse_headers",
    "priority",
]
