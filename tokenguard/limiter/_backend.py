"""What a limiter backend offers the limiter's one decision loop.

A backend makes decisions; ``_limiter`` only loops: start (enqueue or admit at
once), wait until told or until the computed time, poll again, leave on any
failure. Each of those is a *plan* (see :mod:`tokenguard._drive`): a generator that
yields the effects a thread and an asyncio task perform differently (a Redis call,
a wait for a wake-up) and returns a :class:`Step` in the caller's clock (the
injected clock in memory, the monotonic clock on Redis, whose time only orders the
queue and the buckets: a jumping Redis clock cannot stretch a wait). The limiter runs
the same plans with ``run_sync`` or ``run_async``; no decision is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .._drive import Plan
from ._headers import ServerView
from ._state import LimitChange, Soonest

__all__ = ["Backend", "Signal", "Soonest", "Step", "Ticket"]


class Signal:
    """Wakes one waiter, set from any thread; the waiter is a thread or an asyncio task.

    A thread waits with :meth:`wait`; a task with :meth:`wait_async`, whose first call
    binds the signal to the task's event loop (``for_async=True`` binds it at once, to
    the running loop). A ``set`` before the waiter waits is not lost.
    """

    __slots__ = ("_aevent", "_event", "_loop")

    def __init__(self, *, for_async: bool = False) -> None:
        self._event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aevent: asyncio.Event | None = None
        if for_async:
            self._bind()

    def _bind(self) -> asyncio.Event:
        # The loop first: set() reads _aevent, then _loop.
        self._loop = asyncio.get_running_loop()
        self._aevent = asyncio.Event()
        return self._aevent

    def set(self) -> None:
        self._event.set()
        aevent = self._aevent
        if aevent is not None:
            assert self._loop is not None
            # RuntimeError: the waiter's loop is closed, nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(aevent.set)

    def clear(self) -> None:
        # Called by the waiter itself (its own thread or loop) before it waits.
        self._event.clear()
        if self._aevent is not None:
            self._aevent.clear()

    def wait(self, timeout: float | None) -> None:
        self._event.wait(timeout)

    async def wait_async(self, timeout: float | None) -> None:
        aevent = self._aevent if self._aevent is not None else self._bind()
        if self._event.is_set():  # set before this task bound the signal
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(aevent.wait(), timeout)


class Ticket:
    """One waiting request: its cost, identity and wake-up signal.

    ``estimate``: report the soonest it could go (``max_wait`` given, or a bound on
    day-limit waits);
    ``batch``: it waits behind interactive waiters (see :mod:`._queue`);
    ``max_wait`` itself bounds a shared backend's round trips for this ticket (its
    ``deadline``, in the steps' clock, is the backend's to set, before its first round
    trip; the limiter gives up by the same deadline). The signal is
    made when first used (by a backend that queues the ticket, under its
    lock): most tickets are admitted at once, and a thread-safe event costs
    microseconds to make.
    """

    __slots__ = ("_signal", "batch", "deadline", "estimate", "id", "max_wait", "tokens")

    def __init__(
        self,
        tokens: int,
        signal: Signal | None = None,
        estimate: bool = False,
        id: str = "",
        max_wait: float | None = None,
        batch: bool = False,
    ) -> None:
        self.tokens = tokens
        self.batch = batch
        self.estimate = estimate or max_wait is not None
        self.id = id
        self.max_wait = max_wait
        self.deadline: float | None = None
        self._signal = signal

    @property
    def signal(self) -> Signal:
        if self._signal is None:
            self._signal = Signal()
        return self._signal

    def __repr__(self) -> str:
        return f"<Ticket tokens={self.tokens} id={self.id!r}>"


@dataclass
class Step:
    """The backend's answer: admitted (``charge``), or waiting: ``until`` is when to
    look again at the latest (the head's earliest admission time, for the head or for
    the waiter right behind it), ``None`` to wait until woken."""

    now: float
    charge: Any = None
    until: float | None = None
    # For a waiting ticket with ``estimate``: the soonest it could go (see
    # ``State.soonest``), the limit that binds it, and when that limit is whole again.
    soonest: Soonest | None = None
    lost: bool = False  # the ticket's queue place expired (Redis lease); start again
    # The ticket left the queue at the caller's deadline (the shared backend's last poll
    # leaves in the same round trip): the wait is over, whatever the caller's clock says.
    left: bool = False
    # An admission's time in the backend's own clock when that is not the caller's (Redis
    # time; ``now`` is then the caller's monotonic clock): the reservation's ``at``.
    at: float | None = None


class Backend(Protocol):
    """Every decision as a plan, for the limiter to run sync or async.

    Backends also offer the decisions as plain calls (``start``, ``poll``, ``leave``,
    ``settle``, ``observe``), run in the calling thread, for tests and tools.
    """

    def start_plan(self, ticket: Ticket) -> Plan[Step]: ...
    def poll_plan(self, ticket: Ticket) -> Plan[Step]: ...
    def leave_plan(self, ticket: Ticket) -> Plan[None]: ...
    def wait_plan(self, ticket: Ticket, timeout: float | None) -> Plan[None]: ...
    def settle_plan(
        self, charge: Any, actual: int | None, view: ServerView | None
    ) -> Plan[None]: ...
    def observe_plan(self, view: ServerView, charge: Any = None) -> Plan[None]: ...
    def observe_limit_plan(self, name: str, limit: int, used: int | None) -> Plan[None]:
        """Adopt a limit a refusal's body named (see ``Limiter.observe_limit``)."""
        ...

    #: Told of the limits the server's headers changed (set by the limiter).
    on_limits: Callable[[list[LimitChange]], None] | None

    def set_limit(self, name: str, value: int | None) -> None:
        """Set a limit no header reports (``rpm``, ``tpd``; ``None``: none)."""
        ...

    @property
    def refunds(self) -> bool | None:
        """Whether commits free unused tokens: as set, or as learned (None: learning)."""
        ...

    # The same decisions as plain calls in the calling thread.
    def start(self, ticket: Ticket) -> Step: ...
    def poll(self, ticket: Ticket) -> Step: ...
    def leave(self, ticket: Ticket) -> None: ...
    def settle(self, charge: Any, actual: int | None, view: ServerView | None) -> None: ...
    def observe(self, view: ServerView, charge: Any = None) -> None: ...
