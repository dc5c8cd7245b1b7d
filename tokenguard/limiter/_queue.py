"""The in-memory waiting line: two FIFO classes, interactive and batch, and who is next.

Pure bookkeeping, no clock and no lock (the backend holds its lock around every call).
Invariant: :meth:`WaitQueue.head` is the first interactive waiter, unless batch waiters
are owed their share of the tokens admitted while both classes waited, enough for the
first batch waiter (then it), or a head was pinned (the bucket could already serve it: nobody who
arrives later passes it). ``lua/lib.lua``'s ``q_head`` and ``q_served`` make the same
choice on Redis.
"""

from __future__ import annotations

from collections import deque
from typing import Literal, TypeAlias

from ._backend import Ticket

__all__ = [
    "BATCH_SHARE",
    "PRIORITIES",
    "RESERVE_SHARE",
    "Priority",
    "WaitQueue",
    "batch_need",
    "next_class",
]

#: What a call says of itself: served before waiting batch calls, or after them.
Priority: TypeAlias = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")
#: The default fraction of admitted tokens that goes to batch while both classes wait.
BATCH_SHARE = 0.1
#: The default interactive reserve, as a fraction of the smallest token limit.
RESERVE_SHARE = 0.1


def batch_need(tokens: int, reserve: int, cap: float) -> int:
    """The tokens a batch request of ``tokens`` needs free to be admitted: its own plus
    the interactive ``reserve``, which it may not take, so that an interactive call
    arriving finds them waiting. The reserve is capped at what the capacity ``cap`` (the
    smallest token limit) holds beside the request, so a batch request up to the whole
    capacity is still admissible (it waits for a full bucket) and never starves."""
    return tokens + max(0, int(min(reserve, cap - tokens)))


def next_class(interactive: bool, batch: int | None, owed: float) -> bool | None:
    """Which class is served next: ``True`` batch, ``False`` interactive, ``None`` none
    waits. ``batch``: the tokens of the first batch waiter (``None``: none waits); it
    goes first when no interactive call waits, or when batch's credit covers it."""
    if batch is None:
        return False if interactive else None
    return not interactive or owed >= batch


def owed_after(owed: float, share: float, tokens: int, batch: bool, both: bool) -> float:
    """Batch's credit (tokens) after an admission of ``tokens``; ``both``: the other
    class waited too. While both wait, an interactive admission earns batch
    ``share / (1 - share)`` of its tokens and a batch admission spends its own, so batch
    gets ``share`` of those tokens, give or take one request (deficit round robin: a
    batch request passes waiting interactive ones once its credit covers it). A batch
    admission while no interactive call waits spends credit too, never below zero:
    batch was served, and time alone earns no debt that would later hold interactive
    calls back."""
    if both:
        return owed + (-tokens if batch else share / (1 - share) * tokens)
    if batch and owed > 0:
        return max(owed - tokens, 0.0)
    return owed


class WaitQueue:
    """The waiters of one in-memory limiter, by class; see the module."""

    __slots__ = ("_lines", "base", "base_for", "owed", "pinned", "share", "size")

    def __init__(self, share: float = BATCH_SHARE) -> None:
        self._lines: tuple[deque[Ticket], deque[Ticket]] = (deque(), deque())
        #: How many wait (an attribute: read on every settle, where a call would show).
        self.size = 0
        self.share = share
        #: Batch's credit, in tokens (see :func:`owed_after`).
        self.owed = 0.0
        #: A head the bucket could serve when a later caller came: it stays head.
        self.pinned: Ticket | None = None
        #: The head first passed by backfill, and its turn then (its FIFO time): all
        #: passes together may delay it by at most the bound from there.
        self.base_for: Ticket | None = None
        self.base = 0.0

    def fifo_time(self, head: Ticket, at: float) -> float:
        """``head``'s turn before anyone passed it: ``at`` (its turn now) for a head not
        passed yet."""
        if self.base_for is not head:
            self.base_for, self.base = head, at
        return self.base

    def __bool__(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return self.size

    def __contains__(self, ticket: Ticket) -> bool:
        return ticket in self._lines[ticket.batch]

    def add(self, ticket: Ticket) -> None:
        self._lines[ticket.batch].append(ticket)
        self.size += 1

    def head(self) -> Ticket | None:
        """The one waiter that may be admitted now (or ``None``: nobody waits)."""
        if self.pinned is not None:
            return self.pinned
        inter, batch = self._lines
        if not batch:  # the usual queue: interactive calls only, or nobody
            return inter[0] if inter else None
        return batch[0] if next_class(bool(inter), batch[0].tokens, self.owed) else inter[0]

    def remove(self, ticket: Ticket) -> None:
        """Take a waiter out (it left), its class's order kept."""
        self._lines[ticket.batch].remove(ticket)
        self.size -= 1
        if self.pinned is ticket:
            self.pinned = None

    def served(self, ticket: Ticket) -> None:
        """Take the head out as admitted, crediting or charging batch's share."""
        self.remove(ticket)
        both = bool(self._lines[not ticket.batch])
        self.owed = owed_after(self.owed, self.share, ticket.tokens, ticket.batch, both)
