"""What a limiter backend offers the blocking drivers (sync and async).

A backend makes decisions; the drivers in ``_limiter`` only loop: start (enqueue
or admit at once), wait until told or until the computed time, poll again,
leave on any failure. Every call returns a :class:`Step` in the backend's clock
(the injected clock in memory, Redis ``TIME`` on Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ._headers import ServerView

__all__ = ["Backend", "Signal", "Step", "Ticket"]


class Signal:
    """Wakes one waiter, from any thread; for a thread or for an asyncio task."""

    def __init__(self, *, for_async: bool) -> None:
        self._event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aevent: asyncio.Event | None = None
        if for_async:
            self._loop = asyncio.get_running_loop()
            self._aevent = asyncio.Event()

    def set(self) -> None:
        if self._aevent is None:
            self._event.set()
            return
        assert self._loop is not None
        # RuntimeError: the waiter's loop is closed, nobody is left to wake.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._aevent.set)

    def clear(self) -> None:
        # Called by the waiter itself (its own thread or loop) before it waits.
        if self._aevent is None:
            self._event.clear()
        else:
            self._aevent.clear()

    def wait(self, timeout: float | None) -> None:
        self._event.wait(timeout)

    async def wait_async(self, timeout: float | None) -> None:
        assert self._aevent is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._aevent.wait(), timeout)


@dataclass(eq=False)
class Ticket:
    """One waiting request: its cost, identity and wake-up signal."""

    tokens: int
    signal: Signal
    estimate: bool = False  # compute the wait for its queue position (max_wait given)
    id: str = ""


@dataclass
class Step:
    """The backend's answer: admitted (``charge``), or waiting: ``until`` is when to
    look again at the latest (the head's earliest admission time, for the head or for
    the waiter right behind it), ``None`` to wait until woken."""

    now: float
    charge: Any = None
    until: float | None = None
    # For a queued (not head) ticket with ``estimate``: when it would go at the earliest.
    needed_until: float | None = None
    lost: bool = False  # the ticket's queue place expired (Redis lease); start again


class Backend(Protocol):
    def start(self, ticket: Ticket) -> Step: ...
    def poll(self, ticket: Ticket) -> Step: ...
    def leave(self, ticket: Ticket) -> None: ...
    def wait(self, ticket: Ticket, timeout: float | None) -> None: ...
    def settle(self, charge: Any, actual: int | None, view: ServerView | None) -> None: ...
    def observe(self, view: ServerView) -> None: ...

    async def start_async(self, ticket: Ticket) -> Step: ...
    async def poll_async(self, ticket: Ticket) -> Step: ...
    async def leave_async(self, ticket: Ticket) -> None: ...
    async def wait_async(self, ticket: Ticket, timeout: float | None) -> None: ...
    async def settle_async(
        self, charge: Any, actual: int | None, view: ServerView | None
    ) -> None: ...
    async def observe_async(self, view: ServerView) -> None: ...
