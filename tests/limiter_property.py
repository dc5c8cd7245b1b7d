"""The limiter's interleaving property, for any backend (memory, Redis).

One run drives a backend with a list of operations: acquire, commit (with or without the
headers a token-bucket server would send), cancel, leave, observe, retry-after and
time passing, all on a fake clock, and checks after every step that the ledger
never admits more than a limit in any window (the window model only), that the
server's bucket never goes below zero, and at the end that the queue was served in
order. The server charges
every estimate in full when the request arrives (any time between its admission
and its commit, and at its admission if it is still unanswered a whole window later:
the ledger ages an unsettled estimate out after one window); a refunding one gives the
unused part back before it writes its answer. The memory backend reads the fake
clock directly; the Redis scripts get it as their test-only last argument (see
``now_s`` in ``lua/lib.lua``).

What is allowed, exactly. With ``refunds=True`` (against the refunding server),
``refunds=False`` (against either) and ``refunds=None`` against the refunding server:
the bucket never goes below zero. With ``refunds=None`` (learning) against the server
that keeps unused tokens, requests arrive in order and the server refuses (429, no
charge) one that finds its bucket short; the client then cancels it and hands the
429's headers to ``observe``. Allowed: a refusal of a request admitted while the
limiter had not learned (``backend.refunds`` was None at its admission). Required:
after that 429's headers the limiter has learned (``refunds`` is False), and no
request admitted after learning is ever refused. So the refusals are at most the
requests admitted before the first 429 was read. And learning never concludes that
this server refunds (``refunds`` never True): that lesson comes only from headers
showing less in use than a server keeping every estimate could have, whatever the
arrival times and however stale the headers. Against the refunding server, learning
may conclude True (the bucket model does, from such headers), and the bucket still
never goes below zero, before or after.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fake_clock import FakeClock
from hypothesis import example
from hypothesis import strategies as st

from tokenguard.limiter._backend import Backend, Signal, Ticket
from tokenguard.limiter._headers import ServerView
from tokenguard.limiter._memory import MemoryBackend
from tokenguard.limiter._window import WindowLimits

__all__ = [
    "KEPT_DRAINED",
    "KEPT_LATE_ARRIVAL",
    "KEPT_SLOW_ANSWER",
    "LEARNING",
    "LEARNING_429",
    "LIMIT",
    "OPS",
    "PERIOD",
    "REFUNDS_PROVEN",
    "SERVERS",
    "SERVER_LIMITS",
    "SMALLER_SERVER",
    "TEACHING_OPS",
    "FakeClock",
    "Model",
    "known_examples",
    "memory",
    "run_interleaving",
]

LIMIT = 100
PERIOD = 10.0


@dataclass
class Bucket:
    """The server: a token bucket, capacity ``limit`` (LIMIT, or smaller than the
    limiter's), refilled ``limit`` per PERIOD, which charges every estimate in full when
    the request arrives; a refunding server gives the unused part back before it writes
    its answer. Events may be added in the past (a request that arrived late is only
    known when it is committed)."""

    events: list[tuple[float, int]] = field(default_factory=list)  # (time, -charge | +refund)
    limit: int = LIMIT

    def give(self, at: float, tokens: int) -> None:
        # After the events already known at the same instant: they happened first.
        bisect.insort(self.events, (at, tokens), key=lambda e: e[0])

    def lowest(self) -> float:
        """The lowest level right after any charge: below 0, the server refused it."""
        cap = self.limit
        level, last, low = float(cap), 0.0, float(cap)
        for t, delta in self.events:
            level = min(cap, level + (t - last) * cap / PERIOD) + delta
            level = min(level, cap)
            last = t
            low = min(low, level)
        return low

    def level(self, at: float) -> float:
        """The bucket at time ``at`` (after the events at that instant)."""
        cap = self.limit
        level, last = float(cap), 0.0
        for t, delta in self.events:
            if t > at:
                break
            level = min(cap, level + (t - last) * cap / PERIOD) + delta
            level = min(level, cap)
            last = t
        return min(cap, level + (at - last) * cap / PERIOD)

    def header(self, at: float) -> ServerView:
        return ServerView(
            remaining_tokens=max(0, math.floor(self.level(at))), limit_tokens=self.limit
        )


@dataclass
class Admitted:
    ticket: Ticket
    at: float
    charge: Any
    cost: int  # as known now: the estimate, then what was committed (0 if cancelled)
    learned: bool | None  # the backend's refunds policy when it was admitted
    # When the last request committed before this admission reached the server.
    seen_before: float = 0.0


@dataclass
class Model:
    clock: FakeClock
    backend: Backend
    bucket: Bucket = field(default_factory=Bucket)
    queue: list[Ticket] = field(default_factory=list)
    started: list[Ticket] = field(default_factory=list)
    admitted: list[Admitted] = field(default_factory=list)
    open: list[int] = field(default_factory=list)
    order: list[Ticket] = field(default_factory=list)
    blocked_until: float = -math.inf
    # When the last request committed so far reached the server.
    last_arrival: float = 0.0
    refused: int = 0
    # The sliding-window model also promises no more than LIMIT admitted per window
    # (a bucket model may admit a full bucket and then its refill within one window).
    sliding: bool = True
    # Answers read late: a commit's headers may be written before requests committed
    # after its admission arrived (a response waiting unread while others go round).
    late_answers: bool = False
    # Learning against the server that keeps unused tokens: arrivals in any order (see
    # refuse), to check that the lesson "it refunds" is never drawn.
    any_order: bool = False

    def refuse(self, a: Admitted, arrived: float) -> bool:
        """With refusals modelled: does the server refuse ``a`` arriving at ``arrived``?
        If so it charges nothing, answers 429 at once, and the client cancels the
        reservation and gives the 429's headers to the limiter.

        With ``any_order`` arrivals come in any order, each known only at its commit, so
        one may land before arrivals already served: the server then refuses it if its
        charge would take the bucket below zero at any time (a server may refuse more
        than it must; every header stays exact), and nothing is asserted about the
        lesson."""
        if self.any_order:
            trial = Bucket(list(self.bucket.events), self.bucket.limit)
            trial.give(arrived, -a.ticket.tokens)
            if trial.lowest() >= -1e-9:
                return False
        elif self.bucket.level(arrived) >= a.ticket.tokens - 1e-9:
            return False
        else:
            assert a.learned is None, (
                "refused a request admitted after the limiter learned that the server keeps "
                "unused tokens (or with refunds given)"
            )
        self.refused += 1
        a.cost = 0  # refused: the server charged nothing (known before the queue moves)
        self.backend.settle(a.charge, None, None)
        # The cancel may let the head of the queue in before the 429 is read (Redis
        # admits it within the cancel's script): record it as admitted now.
        self.serve()
        view = self.bucket.header(arrived)
        self.backend.observe(
            ServerView(
                remaining_tokens=view.remaining_tokens,
                limit_tokens=self.bucket.limit,
                retry_after=max(a.ticket.tokens - self.bucket.level(arrived), 0.0)
                * PERIOD
                / self.bucket.limit,
            )
        )
        if not self.any_order:
            assert self.backend.refunds is False, "a 429 after frees did not teach the limiter"
        return True

    def record(self, ticket: Ticket, charge: Any) -> None:
        now = self.clock()
        assert now >= self.blocked_until - 1e-9, "admitted during retry-after"
        if self.sliding:
            # The sliding window, with costs as known now.
            total = ticket.tokens
            for a in self.admitted:
                if now - PERIOD + 1e-9 < a.at <= now:  # float noise at the boundary
                    total += a.cost
            assert total <= LIMIT, f"{total} tokens admitted within one window"
        self.admitted.append(
            Admitted(ticket, now, charge, ticket.tokens, self.backend.refunds, self.last_arrival)
        )
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


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(0, LIMIT)),
        st.tuples(st.just("advance"), st.floats(0.0, PERIOD / 2) | st.just(PERIOD)),
        st.tuples(
            st.just("commit"),
            st.integers(0, 50),
            st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 1.5),
            st.floats(0.0, 1.0),
            st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0),
            st.booleans(),  # with the response's headers (else none, as a decorator sees)
        ),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("leave"), st.integers(0, 10)),
        st.tuples(st.just("observe"), st.floats(0.0, 1.0)),
        st.tuples(st.just("retry_after"), st.floats(0.0, PERIOD)),
    ),
    max_size=60,
)

#: Operations that first teach a learning limiter (commits with headers, for much less
#: than the estimate, little time passing), then go on as :data:`OPS`: against the
#: refunding server they often prove the refunds; against the keeping one they are
#: where a wrong proof would show.
TEACHING_OPS = st.tuples(
    st.lists(
        st.one_of(
            st.tuples(st.just("acquire"), st.integers(10, LIMIT)),
            st.tuples(
                st.just("commit"),
                st.integers(0, 50),
                st.sampled_from([0.0, 0.1, 0.5]),
                st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0),
                st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0),
                st.just(True),
            ),
            st.tuples(st.just("advance"), st.floats(0.0, 2.0) | st.sampled_from([1.0, 5.0])),
        ),
        max_size=24,
    ),
    OPS,
).map(lambda parts: parts[0] + parts[1])

#: Learning, against either server.
LEARNING = st.sampled_from([("keeps", None), ("refunds", None)])

SERVERS = st.sampled_from(
    [("keeps", None), ("refunds", None), ("keeps", False), ("refunds", False), ("refunds", True)]
)

#: The server's capacity: as the limiter was told, or smaller (its headers say so).
SERVER_LIMITS = st.sampled_from([LIMIT, 60])

F = TypeVar("F", bound=Callable[..., Any])


def known_examples(test: F) -> F:
    """The interleavings that once broke a backend, kept as examples of every run."""
    for ex in reversed(_EXAMPLES):
        test = example(**ex)(test)
    return test


# Learning against a server that keeps unused tokens, commits without headers: A's
# free lets C in, and the server refuses C. Its 429 teaches the limiter.
LEARNING_429: list[tuple[object, ...]] = [
    ("acquire", 50),
    ("acquire", 50),
    ("commit", 0, 0.0, 0.0, 0.0, False),
    ("acquire", 50),
    ("commit", 0, 0.0, 0.0, 0.0, False),
    ("commit", 0, 0.0, 0.0, 0.0, False),
]

# Learning with headers against the refunding server: the second answer shows less in
# use than a server keeping the first estimate could have, so the limiter learns that
# it refunds; then requests race with answers read late.
REFUNDS_PROVEN: list[tuple[object, ...]] = [
    ("acquire", 60),
    ("commit", 0, 0.0, 0.0, 0.0, True),
    ("acquire", 60),
    ("commit", 0, 0.0, 0.0, 0.0, True),
    ("acquire", 90),
    ("acquire", 50),
    ("advance", 1.0),
    ("commit", 0, 0.5, 1.0, 1.0, True),
    ("acquire", 40),
    ("commit", 0, 0.1, 1.0, 0.0, True),
    ("acquire", 60),
]

# Learning with headers against the keeping server, each catching a wrong proof of
# refunds. A request that reached the server at once and is answered 5 s later: its
# charge may have refilled meanwhile, which the floor allows for (its lag).
KEPT_SLOW_ANSWER: list[tuple[object, ...]] = [
    ("acquire", 50),
    ("advance", 5.0),
    ("commit", 0, 0.0, 0.0, 0.0, True),
    ("acquire", 10),
    ("commit", 0, 0.0, 0.0, 0.0, True),
]
# The 10 is admitted with 50 on the floor and answered 5 s later, when a keeping
# server may have refilled all of it: the floor is drained to the answer.
KEPT_DRAINED: list[tuple[object, ...]] = [
    ("acquire", 50),
    ("commit", 0, 0.0, 0.0, 0.0, True),
    ("acquire", 10),
    ("advance", 5.0),
    ("commit", 0, 0.0, 0.0, 0.0, True),
]
# The 37 reaches the server after the 10's answer was written (arrivals in any order):
# the floor read at the 10's commit, rather than at its admission, counts it.
KEPT_LATE_ARRIVAL: list[tuple[object, ...]] = [
    ("acquire", 10),
    ("advance", 1.0),
    ("acquire", 37),
    ("commit", 1, 0.0, 0.0, 0.0, True),
    ("commit", 0, 0.0, 1.0, 0.0, True),
]

# A server whose bucket is smaller than the limiter was told (60 of 100): a limiter
# that took the level from its first header but refilled at its own rate (10/s, up to
# 100) admitted 60 and then 40 more at 10 s, where the server's bucket held 60.
SMALLER_SERVER: list[tuple[object, ...]] = [("advance", PERIOD), ("acquire", 60), ("acquire", 40)]

_EXAMPLES: list[dict[str, Any]] = [
    # A reservation unsettled a whole window (charged when it aged, at 10 s) is then
    # cancelled: giving its 70 back in full forgot that the server, which never had
    # it, sat at its cap from 10 s to 11 s and lost that refill (the bucket model).
    {
        "steps": [
            ("acquire", 70),
            ("advance", 1.0),
            ("acquire", 31),
            ("advance", PERIOD),
            ("commit", 1, 0.0, 0.0, 0.0, False),
            ("cancel", 0),
            ("acquire", 75),
        ],
        "lag": 0.0,
        "server": ("keeps", False),
    },
    # Answers read late: the first request's answer, written before the second one
    # arrived, is read after the second one was committed; freeing by it would forget
    # the second charge (the bucket's settled mark; with late_answers).
    {
        "steps": [
            ("acquire", 40),
            ("acquire", 40),
            ("advance", 1.0),
            ("commit", 1, 0.0, 0.0, 0.5, True),
            ("commit", 0, 0.0, 1.0, 0.0, True),
            ("acquire", 60),
        ],
        "lag": 0.0,
        "server": ("keeps", False),
    },
    {"steps": LEARNING_429, "lag": 0.0, "server": ("keeps", None)},
    # Learning against the keeping server: the 100 the first free let in is refused,
    # and its cancel lets the last 1 in at once; the model must count the refused 100
    # as charged nothing by then (it had counted 101 within the window).
    {
        "steps": [
            ("acquire", 1),
            ("acquire", 100),
            ("acquire", 1),
            ("commit", 0, 0.0, 0.0, 0.0, False),
            ("commit", 0, 0.0, 0.0, 0.0, False),
        ],
        "lag": 0.0,
        "server": ("keeps", None),
    },
    # A stale header (written before the second admission) read within the lag.
    {
        "steps": [
            ("acquire", 50),
            ("advance", 1.0),
            ("acquire", 50),
            ("commit", 0, 0.0, 1.0),
            ("acquire", 50),
        ],
        "lag": 3.0,
        "server": ("refunds", True),
    },
    # Two requests in flight: the first one's answer cannot show the second one's charge.
    {
        "steps": [("acquire", 60), ("acquire", 40), ("commit", 0, 0.0, 1.0), ("acquire", 60)],
        "lag": 0.0,
        "server": ("keeps", None),
    },
    # Committed a whole window after its admission (the Lua port rounded a retry-after
    # to microseconds, and a request in flight that long is charged from its admission).
    {
        "steps": [
            ("retry_after", 1.192092896e-07),
            ("acquire", 1),
            ("acquire", 100),
            ("advance", 10.0),
            ("commit", 0, 0.0, 0.0, 1.0),
        ],
        "lag": 0.0,
        "server": ("keeps", None),
    },
    # The second admission's answer is written before the first request arrives.
    {
        "steps": [
            ("acquire", 60),
            ("acquire", 30),
            ("commit", 1, 0.0, 1.0, 0.0),
            ("acquire", 40),
            ("commit", 0, 1.0, 0.0, 1.0),
        ],
        "lag": 0.0,
        "server": ("keeps", None),
    },
]


def memory(algorithm: str) -> Callable[[FakeClock, float, bool | None], MemoryBackend]:
    """Makes the in-memory backend of ``algorithm`` ("window" or "bucket") at LIMIT
    tokens per PERIOD, for :func:`run_interleaving`."""

    def make(clock: FakeClock, lag: float, refunds: bool | None) -> MemoryBackend:
        return MemoryBackend(
            WindowLimits(tpm=LIMIT, window=PERIOD),
            clock=clock,
            header_lag=lag,
            refunds=refunds,
            algorithm=algorithm,
        )

    return make


def run_interleaving(
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
    make_backend: Callable[[FakeClock, float, bool | None], Backend],
    clock: FakeClock,
    *,
    sliding: bool = True,
    late_answers: bool = False,
    server_limit: int = LIMIT,
    any_order: bool = False,
) -> Model:
    """Run ``steps`` against a fresh backend and check the property (see the module);
    ``sliding``: also check that no window admits more than LIMIT (window model only);
    ``late_answers``: a commit's headers may be written before the arrival of requests
    committed after its own admission (see ``Model.late_answers``; bucket model only).
    ``server_limit`` below LIMIT: the server's bucket is smaller than the limiter was
    told (and refills slower, ``server_limit`` per PERIOD); the limiter first reads the
    headers of one response (its ``x-ratelimit-limit-tokens``), and no request asks
    for more than the server's whole bucket (it would get a 413, which charges nothing).

    ``any_order`` (learning against the keeping server only): arrivals in any order,
    not in the order of commits (see ``Model.refuse``); what is checked then is that
    learning never concludes that the server refunds, and the bucket.

    A request reaches the server at any time between its admission and its commit;
    its answer is written after that: with ``refunds=True`` no more than ``lag``
    before it is read, otherwise at any time since (but after the requests committed
    before it arrived).
    """
    refunding, refunds = server[0] == "refunds", server[1]
    # Learning against a server that keeps unused tokens: requests admitted before the
    # limiter learns may be refused (see `Model.refuse`); then arrivals are in order,
    # since a refusal is decided when the request arrives.
    learning = refunds is None and not refunding
    m = Model(
        clock,
        make_backend(clock, lag, refunds),
        Bucket(limit=server_limit),
        sliding=sliding,
        late_answers=late_answers,
        any_order=any_order and learning,
    )
    if server_limit < LIMIT:
        m.backend.observe(m.bucket.header(0.0))
    for op in steps:
        kind = op[0]
        now = clock()
        if kind == "acquire":
            tokens = min(int(op[1]), server_limit)  # type: ignore[call-overload]
            t = Ticket(tokens, Signal(for_async=False))
            m.started.append(t)
            step = m.backend.start(t)
            if step.charge is not None:
                assert not m.queue, "admitted past a waiting head"
                m.record(t, step.charge)
            else:
                m.queue.append(t)
        elif kind == "advance":
            clock.now = now + float(op[1])  # type: ignore[arg-type]
        elif kind in ("commit", "cancel") and m.open:
            a = m.admitted[m.open.pop(int(op[1]) % len(m.open))]  # type: ignore[call-overload]
            if kind == "commit":
                actual = int(a.ticket.tokens * float(op[2]))  # type: ignore[arg-type]
                sent = float(op[4]) if len(op) > 4 else 0.0  # type: ignore[arg-type]
                # min: in floats, a.at + (now - a.at) may come out above now.
                arrived = min(now, a.at + sent * (now - a.at))
                if now - a.at >= PERIOD:
                    # The ledger counts an unsettled estimate for one window (then it
                    # ages out, as a reservation never settled does): a request still
                    # unanswered a whole window after its admission is only covered if
                    # the server charged it at once. Later arrivals are out of scope.
                    arrived = a.at
                if learning and any_order:
                    if m.refuse(a, arrived):
                        m.serve()
                        continue
                elif learning:
                    if arrived < m.last_arrival and now - a.at >= PERIOD:
                        # Cannot arrive in order and be covered: it was lost on its way.
                        m.backend.settle(a.charge, None, None)
                        a.cost = 0
                        m.serve()
                        continue
                    arrived = max(arrived, m.last_arrival)
                    m.last_arrival = arrived
                    if m.refuse(a, arrived):
                        m.serve()
                        continue
                m.bucket.give(arrived, -a.ticket.tokens)
                if refunds is not True:
                    # Any time after it arrived, and after every request whose answer
                    # was read before this one arrived (see Window.adopt).
                    lo = max(arrived, a.seen_before if m.late_answers else m.last_arrival)
                    # max: in floats, now - (now - lo) may come out below lo.
                    written = max(lo, now - float(op[3]) * (now - lo))  # type: ignore[arg-type]
                else:
                    written = max(arrived, now - float(op[3]) * lag)  # type: ignore[arg-type]
                m.last_arrival = max(m.last_arrival, arrived)
                if refunding and actual < a.ticket.tokens:
                    m.bucket.give(written, a.ticket.tokens - actual)
                with_headers = bool(op[5]) if len(op) > 5 else True
                view = m.bucket.header(written) if with_headers else None
                m.backend.settle(a.charge, actual, view)
                a.cost = actual
            else:
                m.backend.settle(a.charge, None, None)  # never reached the server
                a.cost = 0
        elif kind == "leave" and m.queue:
            t = m.queue.pop(int(op[1]) % len(m.queue))  # type: ignore[call-overload]
            m.backend.leave(t)
            m.started.remove(t)
        elif kind == "observe":
            written = max(now - float(op[1]) * lag, 0.0)  # type: ignore[arg-type]
            if refunds is not True:
                # A response just read: written after the requests settled before it
                # arrived (the headers free deferred tokens; see Window.adopt).
                written = max(written, m.last_arrival)
            m.backend.observe(m.bucket.header(written))
        elif kind == "retry_after":
            ra = float(op[1])  # type: ignore[arg-type]
            m.blocked_until = max(m.blocked_until, now + ra)
            m.backend.observe(ServerView(retry_after=ra))
        m.serve()
        low = m.bucket.lowest()
        assert low >= -1e-6, f"the server would refuse: bucket {low}"
        if refunds is None and not refunding:
            assert m.backend.refunds is not True, "learned refunds from a server that keeps"
    # Everyone still queued is served, in order, once time passes.
    for _ in range(200):
        if not m.queue:
            break
        clock.now = clock() + PERIOD / 4
        m.serve()
    assert not m.queue
    assert m.order == m.started
    for i in m.open:  # requests still in flight reach the server
        a = m.admitted[i]
        if learning and any_order:
            if not m.refuse(a, a.at):
                m.bucket.give(a.at, -a.ticket.tokens)
        elif learning:
            arrived = max(a.at, m.last_arrival)
            m.last_arrival = arrived
            if arrived - a.at >= PERIOD or m.refuse(a, arrived):
                continue
            m.bucket.give(arrived, -a.ticket.tokens)
        else:
            m.bucket.give(a.at, -a.ticket.tokens)
    low = m.bucket.lowest()
    assert low >= -1e-6, f"the server would refuse: bucket {low}"
    return m
