"""The window arithmetic and the in-memory queue, exhaustively, with a fake clock.

The Hypothesis test drives the memory backend with any interleaving of acquire,
commit (with the headers a token-bucket server would send), cancel, leave,
observe and time passing, and checks: the ledger never admits more than a limit
in any window, the server's bucket never goes below zero, whether it charges
every estimate in full or refunds the unused part before it answers (with the
default ``refunds=None``, whose headers may be stale by any amount, and with
``refunds=True`` against the refunding server), and the queue is served in order.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tokenguard.limiter._backend import Signal, Ticket
from tokenguard.limiter._headers import ServerView
from tokenguard.limiter._memory import MemoryBackend
from tokenguard.limiter._window import HOLD_STEPS, Charge, Ledger, Window, WindowLimits


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_earliest_is_the_release_that_makes_room() -> None:
    w = Window(WindowLimits(tpm=100, window=10.0))
    w.admit(60, 0.0)
    w.admit(30, 4.0)
    assert w.earliest(10, 5.0) == 5.0
    assert w.earliest(11, 5.0) == 10.0
    assert w.earliest(71, 5.0) == 14.0
    w.expire(10.0)
    assert w.minute is not None
    assert w.minute.tokens == 30


def test_entry_counts_until_exactly_one_period_later() -> None:
    led = Ledger(10.0)
    led.add(0.0, 5, 1)
    led.expire(9.999)
    assert led.tokens == 5
    led.expire(10.0)
    assert led.tokens == 0
    assert not led.entries


def test_day_ledger_buckets_stay_bounded() -> None:
    w = Window(WindowLimits(tpd=10**9, rpd=10**9, window=1.0))
    for i in range(10_000):
        w.admit(1, i * 0.01)  # 100 admissions per window
    assert w.day is not None
    assert len(w.day.entries) == 100
    assert w.day.tokens == 10_000
    assert w.day.requests == 10_000


def test_commit_restamps_and_cancel_removes() -> None:
    w = Window(WindowLimits(tpm=100, window=10.0), refunds=True)
    c = w.admit(80, 0.0)
    w.settle(c, 50, 3.0)  # counted from the response on
    w.expire(10.0)
    assert w.minute is not None
    assert w.minute.tokens == 50
    assert w.earliest(60, 10.0) == 13.0
    w.settle(c, None, 11.0)
    assert w.minute.tokens == 0


def test_simulate_gives_the_wait_of_a_queue_position() -> None:
    w = Window(WindowLimits(tpm=100, window=10.0))
    w.admit(100, 0.0)
    assert w.simulate([60, 60], 1.0) == 20.0
    assert w.simulate([60, 40], 1.0) == 10.0
    assert math.isinf(w.simulate([101], 1.0))


def test_adopt_makes_a_staircase_that_follows_the_refill() -> None:
    led = Ledger(10.0)
    size = led.adopt(
        0.0, limit=100, unit="tokens", remaining=0, server_limit=100, reset=10.0, unseen=0
    )
    assert size == 100
    assert len(led.holds) == HOLD_STEPS
    # Never looser than the bucket: at every hold expiry, our room <= the bucket level.
    for expiry, _, _ in list(led.holds):
        led.expire(expiry)
        assert 100 - led.hold_tokens <= 100 * expiry / 10.0 + 1e-9
    assert led.hold_tokens == 0


def test_adopt_counts_later_admissions_as_unseen() -> None:
    led = Ledger(10.0)
    led.add(0.0, 30, 1)
    led.add(0.0, 30, 1)
    # The header came with the first response: the server had seen 30, not 60.
    assert (
        led.adopt(
            0.0, limit=100, unit="tokens", remaining=70, server_limit=100, reset=3.0, unseen=30
        )
        == 0
    )
    assert (
        led.adopt(
            0.0, limit=100, unit="tokens", remaining=70, server_limit=100, reset=3.0, unseen=0
        )
        == 0
    )
    # Tighter: the server has 20 left while we think 40.
    assert (
        led.adopt(
            0.0, limit=100, unit="tokens", remaining=20, server_limit=None, reset=None, unseen=0
        )
        == 20
    )


# -- the property test -------------------------------------------------------------------

LIMIT = 100
PERIOD = 10.0


@dataclass
class Bucket:
    """The server: a token bucket, capacity LIMIT, refilled LIMIT per PERIOD, which
    charges every estimate in full when the request arrives (any time between its
    admission and its commit); a refunding server gives the unused part back before
    it writes its answer. Events may be added in the past (a request that arrived
    late is only known when it is committed)."""

    events: list[tuple[float, int]] = field(default_factory=list)  # (time, -charge | +refund)

    def give(self, at: float, tokens: int) -> None:
        # After the events already known at the same instant: they happened first.
        bisect.insort(self.events, (at, tokens), key=lambda e: e[0])

    def lowest(self) -> float:
        """The lowest level right after any charge: below 0, the server refused it."""
        level, last, low = float(LIMIT), 0.0, float(LIMIT)
        for t, delta in self.events:
            level = min(LIMIT, level + (t - last) * LIMIT / PERIOD) + delta
            level = min(level, LIMIT)
            last = t
            low = min(low, level)
        return low

    def level(self, at: float) -> float:
        """The bucket at time ``at`` (after the events at that instant)."""
        level, last = float(LIMIT), 0.0
        for t, delta in self.events:
            if t > at:
                break
            level = min(LIMIT, level + (t - last) * LIMIT / PERIOD) + delta
            level = min(level, LIMIT)
            last = t
        return min(LIMIT, level + (at - last) * LIMIT / PERIOD)

    def header(self, at: float) -> ServerView:
        return ServerView(remaining_tokens=max(0, math.floor(self.level(at))), limit_tokens=LIMIT)


@dataclass
class Model:
    clock: FakeClock
    backend: MemoryBackend
    lag: float
    bucket: Bucket = field(default_factory=Bucket)
    queue: list[Ticket] = field(default_factory=list)
    started: list[Ticket] = field(default_factory=list)
    # admitted: (ticket, time, charge, cost history [(time, cost)])
    admitted: list[tuple[Ticket, float, Charge, list[tuple[float, int]]]] = field(
        default_factory=list
    )
    open: list[int] = field(default_factory=list)
    order: list[Ticket] = field(default_factory=list)
    blocked_until: float = -math.inf
    # When the last request committed so far reached the server.
    last_arrival: float = 0.0

    def record(self, ticket: Ticket, charge: Charge) -> None:
        now = self.clock()
        assert now >= self.blocked_until - 1e-9, "admitted during retry-after"
        # The sliding window, with costs as known now.
        total = ticket.tokens
        for _, at, _, hist in self.admitted:
            if now - PERIOD + 1e-9 < at <= now:  # float noise at the boundary
                total += hist[-1][1]
        assert total <= LIMIT
        self.admitted.append((ticket, now, charge, [(now, ticket.tokens)]))
        self.open.append(len(self.admitted) - 1)
        self.order.append(ticket)

    def serve(self) -> None:
        while self.queue:
            head = self.queue[0]
            step = self.backend.poll(head)
            if step.charge is None:
                return
            self.queue.pop(0)
            self.record(head, step.charge)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(0, LIMIT)),
        st.tuples(st.just("advance"), st.floats(0.0, PERIOD / 2) | st.just(PERIOD)),
        st.tuples(
            st.just("commit"),
            st.integers(0, 50),
            st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 1.5),
            st.floats(0.0, 1.0),
            st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("leave"), st.integers(0, 10)),
        st.tuples(st.just("observe"), st.floats(0.0, 1.0)),
        st.tuples(st.just("retry_after"), st.floats(0.0, PERIOD)),
    ),
    max_size=60,
)


SERVERS = st.sampled_from(
    [("keeps", None), ("refunds", None), ("keeps", False), ("refunds", False), ("refunds", True)]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops, lag=st.sampled_from([0.0, 3.0]), server=SERVERS)
# A stale header (written before the second admission) read within the lag.
@example(
    steps=[
        ("acquire", 50),
        ("advance", 1.0),
        ("acquire", 50),
        ("commit", 0, 0.0, 1.0),
        ("acquire", 50),
    ],
    lag=3.0,
    server=("refunds", True),
)
# Two requests in flight: the first one's answer cannot show the second one's charge.
@example(
    steps=[
        ("acquire", 60),
        ("acquire", 40),
        ("commit", 0, 0.0, 1.0),
        ("acquire", 60),
    ],
    lag=0.0,
    server=("keeps", None),
)
# The second admission's answer is written before the first request arrives.
@example(
    steps=[
        ("acquire", 60),
        ("acquire", 30),
        ("commit", 1, 0.0, 1.0, 0.0),
        ("acquire", 40),
        ("commit", 0, 1.0, 0.0, 1.0),
    ],
    lag=0.0,
    server=("keeps", None),
)
def test_any_interleaving_keeps_every_window_and_the_server_bucket(
    steps: list[tuple[object, ...]], lag: float, server: tuple[str, bool | None]
) -> None:
    """A request reaches the server at any time between its admission and its commit;
    its answer is written after that: with ``refunds=True`` no more than ``lag``
    before it is read, by default at any time since (but after the requests
    committed before it arrived). The server charges every estimate, and a refunding
    one gives back what the response did not use before writing it."""
    clock = FakeClock()
    refunding, refunds = server[0] == "refunds", server[1]
    backend = MemoryBackend(
        WindowLimits(tpm=LIMIT, window=PERIOD), clock=clock, header_lag=lag, refunds=refunds
    )
    m = Model(clock, backend, lag)
    for op in steps:
        kind = op[0]
        now = clock()
        if kind == "acquire":
            t = Ticket(int(op[1]), Signal(for_async=False))  # type: ignore[call-overload]
            m.started.append(t)
            step = m.backend.start(t)
            if step.charge is not None:
                assert not m.queue, "admitted past a waiting head"
                m.record(t, step.charge)
            else:
                m.queue.append(t)
        elif kind == "advance":
            clock.now += float(op[1])  # type: ignore[arg-type]
        elif kind in ("commit", "cancel") and m.open:
            idx = m.open.pop(int(op[1]) % len(m.open))  # type: ignore[call-overload]
            ticket, at, charge, hist = m.admitted[idx]
            if kind == "commit":
                actual = int(ticket.tokens * float(op[2]))  # type: ignore[arg-type]
                sent = float(op[4]) if len(op) > 4 else 0.0  # type: ignore[arg-type]
                arrived = at + sent * (now - at)
                m.bucket.give(arrived, -ticket.tokens)
                if refunds is None:
                    # Any time after it arrived, and after every request whose answer
                    # was read before this one arrived (see Window.adopt).
                    lo = max(arrived, m.last_arrival)
                    written = now - float(op[3]) * (now - lo)  # type: ignore[arg-type]
                else:
                    written = max(arrived, now - float(op[3]) * lag)  # type: ignore[arg-type]
                m.last_arrival = max(m.last_arrival, arrived)
                if refunding and actual < ticket.tokens:
                    m.bucket.give(written, ticket.tokens - actual)
                m.backend.settle(charge, actual, m.bucket.header(written))
                hist.append((now, actual))
            else:
                m.backend.settle(charge, None, None)  # never reached the server
                hist.append((now, 0))
        elif kind == "leave" and m.queue:
            t = m.queue.pop(int(op[1]) % len(m.queue))  # type: ignore[call-overload]
            m.backend.leave(t)
            m.started.remove(t)
        elif kind == "observe":
            written = now - float(op[1]) * lag  # type: ignore[arg-type]
            m.backend.observe(m.bucket.header(max(written, 0.0)))
        elif kind == "retry_after":
            ra = float(op[1])  # type: ignore[arg-type]
            m.blocked_until = max(m.blocked_until, now + ra)
            m.backend.observe(ServerView(retry_after=ra))
        m.serve()
        low = m.bucket.lowest()
        assert low >= -1e-6, f"the server would refuse: bucket {low}"
    # Everyone still queued is served, in order, once time passes.
    for _ in range(200):
        if not m.queue:
            break
        clock.now += PERIOD / 4
        m.serve()
    assert not m.queue
    assert m.order == m.started
    for i in m.open:  # requests still in flight reach the server
        ticket, at, _, _ = m.admitted[i]
        m.bucket.give(at, -ticket.tokens)
    low = m.bucket.lowest()
    assert low >= -1e-6, f"the server would refuse: bucket {low}"


@pytest.mark.parametrize("costs", [[100, 1], [50, 50, 50], [1, 100, 1]])
def test_queue_is_served_in_order(costs: list[int]) -> None:
    clock = FakeClock()
    b = MemoryBackend(WindowLimits(tpm=LIMIT, window=PERIOD), clock=clock)
    b.start(Ticket(100, Signal(for_async=False)))
    tickets = [Ticket(c, Signal(for_async=False)) for c in costs]
    for t in tickets:
        assert b.start(t).charge is None
    served: list[Ticket] = []
    while len(served) < len(tickets):
        clock.now += 1.0
        for t in tickets:
            if t not in served and b.poll(t).charge is not None:
                served.append(t)
    assert served == tickets
