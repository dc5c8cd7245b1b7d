"""The in-memory waiting line: two FIFO classes, interactive and batch, and who is next.

Pure bookkeeping, no clock and no lock (the backend holds its lock around every call).
Invariant: :meth:`WaitQueue.head` is the first interactive waiter, unless batch waiters
are owed their share of the tokens admitted while both classes waited (then the first
batch waiter), or a head was pinned (the bucket could already serve it: nobody who
arrives later passes it). ``lua/lib.lua``'s ``q_head`` and ``q_served`` make the same
choice on Redis.
"""

from __future__ import annotations

from collections import deque
from typing import Literal, TypeAlias

from ._backend import Ticket

__all__ = ["BATCH_SHARE", "PRIORITIES", "Priority", "WaitQueue", "next_class"]

#: What a call says of itself: served before waiting batch calls, or after them.
Priority: TypeAlias = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")
#: The default fraction of admitted tokens that goes to batch while both classes wait.
BATCH_SHARE = 0.1


def next_class(interactive: bool, batch: bool, owed: float) -> bool | None:
    """Which class is served next: ``True`` batch, ``False`` interactive, ``None`` none
    waits. Batch only when it waits and is owed (or interactive does not wait)."""
    if not batch:
        return False if interactive else None
    return not interactive or owed > 0


def owed_after(owed: float, share: float, tokens: int, batch: bool) -> float:
    """The batch class's credit after an admission made while both classes waited:
    every admitted token owes batch ``share`` of itself; a batch admission pays back its
    tokens. It stays within one request of zero, so batch gets at least ``share`` of
    the tokens, give or take one request."""
    return owed + share * tokens - (tokens if batch else 0)


class WaitQueue:
    """The waiters of one in-memory limiter, by class; see the module."""

    __slots__ = ("_lines", "owed", "pinned", "share")

    def __init__(self, share: float = BATCH_SHARE) -> None:
        self._lines: tuple[deque[Ticket], deque[Ticket]] = (deque(), deque())
        self.share = share
        #: Batch's credit, in tokens (see :func:`owed_after`).
        self.owed = 0.0
        #: A head the bucket could serve when a later caller came: it stays head.
        self.pinned: Ticket | None = None

    def __bool__(self) -> bool:
        return bool(self._lines[0] or self._lines[1])

    def __len__(self) -> int:
        return len(self._lines[0]) + len(self._lines[1])

    def __contains__(self, ticket: Ticket) -> bool:
        return ticket in self._lines[ticket.batch]

    def add(self, ticket: Ticket) -> None:
        self._lines[ticket.batch].append(ticket)

    def head(self) -> Ticket | None:
        """The one waiter that may be admitted now (or ``None``: nobody waits)."""
        if self.pinned is not None:
            return self.pinned
        inter, batch = self._lines
        which = next_class(bool(inter), bool(batch), self.owed)
        return None if which is None else self._lines[which][0]

    def remove(self, ticket: Ticket) -> None:
        """Take a waiter out (it left), its class's order kept."""
        self._lines[ticket.batch].remove(ticket)
        if self.pinned is ticket:
            self.pinned = None

    def served(self, ticket: Ticket) -> None:
        """Take the head out as admitted, crediting or charging batch's share."""
        self.remove(ticket)
        if self._lines[not ticket.batch]:  # the other class waited too
            self.owed = owed_after(self.owed, self.share, ticket.tokens, ticket.batch)
