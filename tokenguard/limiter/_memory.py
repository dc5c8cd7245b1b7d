"""The in-process backend: the limiter's state (:class:`~._bucket.Buckets` or
:class:`~._window.Window`, through :class:`~._state.State`) and one FIFO queue under a
lock.

Threads and asyncio tasks (of any loop) share it. Only the head of the queue (see
:class:`~._queue.WaitQueue`: interactive before batch, FIFO within each) is ever
admitted; whoever changes what the head is waiting for or who the head is (an
admission, an arrival, a departure, a commit, a cancel, a header) wakes the head, so
nobody polls.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, TypeAlias

from .._drive import Call, Plan, Sleep
from ..events import LimiterRefundsLearned, emit
from ._backend import Soonest, Step, Ticket
from ._bucket import BucketCharge, Buckets
from ._headers import ServerView
from ._named import adopt_named
from ._queue import BATCH_SHARE, WaitQueue, batch_need
from ._state import Lesson, LimitChange, State
from ._window import Charge, Window, WindowLimits

#: An admission of either state.
AnyCharge: TypeAlias = Charge | BucketCharge
#: A step's lesson (if any), the refunds policy learned then, and its limit changes.
_News: TypeAlias = tuple[Lesson | None, bool | None, list[LimitChange]]

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Decisions in process memory; ``clock`` gives seconds (monotonic by default).

    ``sleep``, when given, replaces timed waits (a fake clock's ``sleep`` advances
    it); waits for one's turn in the queue still end when the previous head leaves.
    """

    def __init__(
        self,
        limits: WindowLimits,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Any] | None = None,
        header_lag: float = 0.0,
        refunds: bool | None = None,
        algorithm: str = "window",
        batch_share: float = BATCH_SHARE,
        backfill: float = 0.0,
        reserve: int = 0,
    ) -> None:
        self._state: State[Any]
        self._backfill = backfill
        self._reserve = reserve
        if algorithm == "bucket":
            self._state = Buckets(limits, header_lag=header_lag, refunds=refunds)
        else:
            self._state = Window(limits, header_lag=header_lag, refunds=refunds)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._queue = WaitQueue(batch_share)
        #: Told of the limits the server's headers changed (see Limiter), outside the lock.
        self.on_limits: Callable[[list[LimitChange]], None] | None = None
        #: Whether the limits in headers set this backend's (not for a fail-open share).
        self.takes_limits = True

    # -- decisions (under the lock) -------------------------------------------------

    def _need(self, tokens: int, batch: bool) -> int:
        """The tokens that must be free to admit ``tokens``: a batch call's leave the
        interactive reserve (see :func:`~._queue.batch_need`)."""
        if batch and self._reserve:
            return batch_need(tokens, self._reserve, self._state.token_cap())
        return tokens

    def _admit_head(self, ticket: Ticket, now: float) -> Step:
        w = self._state
        until = w.earliest(self._need(ticket.tokens, ticket.batch), now)
        if until > now:
            return Step(now, until=until, soonest=self._soonest(ticket, now))
        charge = w.admit(ticket.tokens, now)
        q = self._queue
        if q.head() is ticket:
            q.served(ticket)
            self._wake_head()
        return Step(now, charge=charge)

    def _wake_head(self) -> None:
        if self._queue.size:  # most settles find nobody waiting
            head = self._queue.head()
            assert head is not None
            head.signal.set()

    def admit_now(self, tokens: int, batch: bool = False) -> tuple[float, AnyCharge] | None:
        """``(now, charge)`` when nobody is queued and the model has the room now (for a
        ``batch`` call, beside the interactive reserve), else ``None`` with nothing
        changed (then ``start`` decides, with a ticket).

        The uncontended path of every acquire: the decision ``start`` takes for an
        empty queue, without a ticket, a step or a plan. Never ahead of a waiter."""
        with self._lock:
            if self._queue:
                return None
            now = self._clock()
            w = self._state
            if batch and self._reserve:
                w.expire(now)
                if w.earliest(self._need(tokens, True), now) > now:
                    return None
                return now, w.admit(tokens, now)
            charge = w.try_admit(tokens, now)
        return None if charge is None else (now, charge)

    def start(self, ticket: Ticket) -> Step:
        with self._lock:
            now = self._clock()
            self._state.expire(now)
            if not self._queue:
                step = self._admit_head(ticket, now)
                if step.charge is None:
                    ticket.signal.clear()
                    self._queue.add(ticket)
                return step
            return self._behind(ticket, now)

    def _behind(self, ticket: Ticket, now: float) -> Step:
        """Queue ``ticket`` behind others. It becomes head at once when its class goes
        first, unless the head it would pass could already be served: that head is
        pinned (and goes when it polls), so nobody passes a head the bucket can serve."""
        q = self._queue
        ticket.signal.clear()
        old = q.head()
        q.add(ticket)
        if q.head() is ticket:
            assert old is not None
            if self._state.earliest(self._need(old.tokens, old.batch), now) > now:
                return self._admit_head(ticket, now)
            q.pinned = old
            old.signal.set()
        return self._waiting(ticket, now)

    def _waiting(self, ticket: Ticket, now: float) -> Step:
        """A waiter behind the head: admitted ahead of it by backfill when that is
        allowed now (see :meth:`_pass_at`); else when to look again (its own turn when
        it may pass then, else when woken)."""
        until = self._pass_at(ticket, now) if self._backfill else None
        if until == now:
            self._queue.remove(ticket)
            return Step(now, charge=self._state.admit(ticket.tokens, now))
        return Step(now, until=until, soonest=self._soonest(ticket, now))

    def _pass_at(self, ticket: Ticket, now: float) -> float | None:
        """When ``ticket`` could pass the head (``now``: at once; ``None``: it cannot):
        when it fits, if every pass of this head together delays the head's turn by at
        most ``backfill`` seconds from its turn when first passed. Never a batch call
        ahead of an interactive head."""
        q, w = self._queue, self._state
        head = q.head()
        if head is None or head is ticket or (ticket.batch and not head.batch):
            return None
        at = w.earliest(self._need(head.tokens, head.batch), now)
        if at + w.delay(ticket.tokens, head.tokens) > q.fifo_time(head, at) + self._backfill:
            return None
        fits = w.earliest(self._need(ticket.tokens, ticket.batch), now)
        return fits if fits < math.inf else None

    def poll(self, ticket: Ticket) -> Step:
        with self._lock:
            now = self._clock()
            self._state.expire(now)
            ticket.signal.clear()
            if self._queue.head() is not ticket:
                return self._waiting(ticket, now)
            return self._admit_head(ticket, now)

    def _soonest(self, ticket: Ticket, now: float) -> Soonest | None:
        # Only a caller with a deadline or a bound listens (under the lock, expired).
        return self._state.soonest(ticket.tokens, now) if ticket.estimate else None

    def leave(self, ticket: Ticket) -> None:
        with self._lock:
            q = self._queue
            if ticket in q:
                was_head = q.head() is ticket
                q.remove(ticket)
                if was_head:
                    self._wake_head()

    @property
    def refunds(self) -> bool | None:
        """Whether commits free unused tokens: as set, or as learned (None: learning)."""
        return self._state.policy

    def settle(
        self,
        charge: AnyCharge,
        actual: int | None,
        view: ServerView | None,
        owner: Any = None,
    ) -> None:
        """``owner``: the reservation of ``charge``, marked ``settled`` here, under the
        lock; nothing is done when it is already (the first of a commit and a cancel
        racing in two threads wins)."""
        with self._lock:
            if owner is not None:
                if owner.settled:
                    return
                owner.settled = True
            now = self._clock()
            w = self._state
            w.expire(now)
            if view is None:
                # No headers: nothing to adopt, and lessons come only from headers.
                w.settle(charge, actual, now)
                self._wake_head()
                return
            w.settle_answered(charge, actual, self._own(view), now)
            self._wake_head()
            news = self._news()
        if news is not None:
            self._announce(news)

    def observe(self, view: ServerView, charge: AnyCharge | None = None) -> None:
        """Adopt headers; ``charge``: of the response to that admission (see
        ``State.adopt_answer``), else taken as current."""
        with self._lock:
            now = self._clock()
            self._state.expire(now)
            view = self._own(view)
            if charge is None:
                changed = self._state.adopt(now, view)
            else:
                changed = self._state.adopt_answer(charge, view, now)
            if changed:
                # A tighter view delays the head, a freed one lets it go: wake it to
                # recompute its time.
                self._wake_head()
            news = self._news()
        if news is not None:
            self._announce(news)

    def observe_limit(self, name: str, limit: int, used: int | None) -> None:
        """Adopt a limit a refusal's body named (checked by the caller): see
        :func:`~._named.adopt_named`. A fail-open share takes none (as headers' limits)."""
        if not self.takes_limits:
            return
        with self._lock:
            now = self._clock()
            self._state.expire(now)
            if adopt_named(self._state, name, limit, used, now):
                self._wake_head()  # held longer: the head recomputes its wait
            changes = self._state.pop_limit_changes()
        if changes:
            self._tell(changes)

    def observe_limit_plan(self, name: str, limit: int, used: int | None) -> Plan[None]:
        yield from ()
        self.observe_limit(name, limit, used)

    def set_limit(self, name: str, value: int | None) -> None:
        """Set a limit no header reports (``rpm``, ``tpd``; ``None``: none)."""
        with self._lock:
            self._state.set_limit(name, value)
            changes = self._state.pop_limit_changes()
            self._wake_head()
        if changes:
            self._tell(changes)

    def _own(self, view: ServerView) -> ServerView:
        """``view`` as this backend adopts it: without its limits unless it takes them."""
        if self.takes_limits or (view.limit_tokens is None and view.limit_requests is None):
            return view
        return view._replace(limit_tokens=None, limit_requests=None)

    def _news(self) -> _News | None:
        """What the step just taken taught (under the lock), taken from the state to be
        announced after the lock; ``None`` when it taught nothing (the usual step)."""
        w = self._state
        if w.lesson is None and not w.limit_changes:
            return None
        return w.pop_lesson(), w.learned, w.pop_limit_changes()

    def _announce(self, news: _News) -> None:
        lesson, learned, changes = news
        _report(lesson, learned)
        if changes:
            self._tell(changes)

    def _tell(self, changes: list[LimitChange]) -> None:
        if self.on_limits is not None:
            self.on_limits(changes)

    # -- plans: decisions never block nor await; only waiting differs --------------

    def start_plan(self, ticket: Ticket) -> Plan[Step]:
        yield from ()  # a plan with no effect: memory decisions neither block nor await
        return self.start(ticket)

    def poll_plan(self, ticket: Ticket) -> Plan[Step]:
        yield from ()
        return self.poll(ticket)

    def leave_plan(self, ticket: Ticket) -> Plan[None]:
        yield from ()
        self.leave(ticket)

    def settle_plan(
        self, charge: AnyCharge, actual: int | None, view: ServerView | None
    ) -> Plan[None]:
        yield from ()
        self.settle(charge, actual, view)

    def observe_plan(self, view: ServerView, charge: AnyCharge | None = None) -> Plan[None]:
        yield from ()
        self.observe(view, charge)

    def wait_plan(self, ticket: Ticket, timeout: float | None) -> Plan[None]:
        if self._sleep is not None and timeout is not None:
            yield Sleep(timeout, self._sleep)
        else:
            signal = ticket.signal
            yield Call(signal.wait, signal.wait_async, timeout)


def _report(lesson: Lesson | None, learned: bool | None) -> None:
    # A lesson sets ``learned`` in the same step, and only one lesson is learned per
    # step, so ``learned`` is what this lesson taught.
    if lesson is not None:
        emit(
            LimiterRefundsLearned(
                refunds=bool(learned),
                evidence=lesson.evidence,
                server_used=lesson.server_used,
                ledger_used=lesson.ledger_used,
            )
        )
