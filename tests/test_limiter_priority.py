"""Priorities on one quota: waiting interactive calls go before waiting batch calls, FIFO
within each class, and batch gets ``batch_share`` of the tokens admitted while both
wait, so it never starves. Checked on the pure queue, on both backends' decisions (the
Lua scripts on a real redis-server, on a fake clock), and end to end through the
openai SDK against the emulator, a second limiter on the same Redis key standing in
for another process."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
from emulator_support import client_for
from fake_clock import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_support import RedisServer, redis_srv

import tokenguard as tg
from tokenguard.emulator import Emulator, running
from tokenguard.limiter._backend import Backend, Ticket
from tokenguard.limiter._memory import MemoryBackend
from tokenguard.limiter._queue import WaitQueue
from tokenguard.limiter._redis import RedisBackend
from tokenguard.limiter._window import WindowLimits

__all__ = ["redis_srv"]

MODEL = "llama-3.1-8b-instant"
SHARE = 0.25

# -- the pure queue ---------------------------------------------------------------------

QUEUE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.booleans(), st.integers(1, 100)),
        st.tuples(st.just("serve")),
        st.tuples(st.just("leave"), st.integers(0, 50)),
        # The bucket could serve the head when a later caller came: it stays head.
        st.tuples(st.just("pin")),
    ),
    max_size=80,
)


class Ledger:
    """What the property needs to know of the admissions made from a queue: the order
    within each class, and the tokens admitted while both classes waited."""

    def __init__(self, largest: int) -> None:
        self.largest = largest
        self.both = 0  # tokens admitted while the other class waited
        self.batch = 0  # of which batch's
        self.alone = 0  # batch tokens admitted while no interactive call waited
        self.pins = 1e-9  # (float rounding) + one request per head pinned ahead of its turn
        self.arrival: dict[int, int] = {}
        self.kept: list[Ticket] = []  # alive: their ids stay theirs

    def came(self, ticket: Ticket) -> Ticket:
        self.arrival[id(ticket)] = len(self.kept)
        self.kept.append(ticket)
        return ticket

    def served(self, ticket: Ticket, waiting: list[Ticket]) -> None:
        """``ticket`` admitted while ``waiting`` (arrival order, without it) still wait."""
        same = [t for t in waiting if t.batch == ticket.batch]
        n = self.arrival[id(ticket)]
        assert all(self.arrival[id(t)] > n for t in same), "FIFO within a class"
        if any(t.batch != ticket.batch for t in waiting):
            self.both += ticket.tokens
            self.batch += ticket.tokens if ticket.batch else 0
        elif ticket.batch:
            self.alone += ticket.tokens
        # Interactive first except for batch's share, give or take one request: batch
        # never takes more than its share while both wait, nor gets less, counting what
        # it was served while no interactive call waited.
        owed = SHARE * self.both - self.batch
        assert owed >= -self.largest * self.pins, (owed, self.both, self.batch)
        assert owed - self.alone <= self.largest, (owed, self.alone)


@settings(max_examples=300, deadline=None)
@given(ops=QUEUE_OPS)
def test_the_queue_serves_interactive_first_but_for_batchs_share(
    ops: list[tuple[Any, ...]],
) -> None:
    q = WaitQueue(SHARE)
    waiting: list[Ticket] = []
    ledger = Ledger(100)
    for op in ops:
        if op[0] == "add":
            t = ledger.came(Ticket(op[2], batch=op[1]))
            q.add(t)
            waiting.append(t)
        elif waiting and op[0] == "leave":
            t = waiting.pop(op[1] % len(waiting))
            q.remove(t)
        elif waiting and op[0] == "pin":
            q.pinned = q.head()
        elif waiting:
            _serve(q, waiting, ledger)
        assert len(q) == len(waiting)
        assert (q.head() is None) == (not waiting)
    while waiting:  # nobody starves: the queue drains whatever waits
        _serve(q, waiting, ledger)


def _serve(q: WaitQueue, waiting: list[Ticket], ledger: Ledger) -> None:
    head = q.head()
    assert head is not None
    if head is q.pinned:
        ledger.pins += 1  # served before its turn may have come: one request off
    waiting.remove(head)
    q.served(head)
    ledger.served(head, waiting)


# -- both backends' decisions, on a fake clock ---------------------------------------

LIMIT, PERIOD = 100, 10.0
# Every request takes more than half the bucket: at most one is admitted at any
# instant, so the order the test sees is the order of admission.
BACKEND_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.booleans(), st.integers(51, 100)),
        st.tuples(st.just("wait"), st.sampled_from([0.5, 1.0, 3.0, 6.0])),
        st.tuples(st.just("leave"), st.integers(0, 50)),
    ),
    max_size=40,
)


@pytest.fixture(scope="module")
def rclient(redis_srv: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    yield c
    c.close()


def _backend(
    kind: str,
    clock: FakeClock,
    rclient: redis.Redis | None,
    backfill: float = 0.0,
    reserve: int = 0,
) -> Backend:
    limits = WindowLimits(tpm=LIMIT, window=PERIOD)
    if kind == "memory":
        return MemoryBackend(
            limits,
            clock=clock,
            algorithm="bucket",
            batch_share=SHARE,
            backfill=backfill,
            reserve=reserve,
        )
    assert rclient is not None
    backend = RedisBackend(
        limits,
        rclient,
        key=f"prio-{uuid.uuid4().hex[:12]}",
        lease=1e6,  # a fake clock's jumps are no crash: nobody loses a place
        waiter_lease=1e6,
        algorithm="bucket",
        batch_share=SHARE,
        backfill=backfill,
        reserve=reserve,
    )
    backend._test_clock = clock
    return backend


def _free(backend: Backend, now: float) -> float:
    """The tokens free in the backend's bucket at ``now`` (nothing in flight): the
    memory model's level, or the one the Lua scripts keep on the key, refilled to now."""
    if isinstance(backend, MemoryBackend):
        state: Any = backend._state
        state.expire(now)
        assert state.open_tokens == 0
        return float(state.tpm.level)
    assert isinstance(backend, RedisBackend)
    level, at, flight = backend._client.hmget(backend._prefix + ":s", "bl1", "ba1", "bot")
    assert float(flight or 0) == 0
    assert level is not None
    assert at is not None
    return min(LIMIT, float(level) + LIMIT / PERIOD * (now - float(at)))


def _admitted(
    backend: Backend, t: Ticket, step: Any, waiting: list[Ticket], ledger: Ledger, reserve: int
) -> None:
    """``t`` admitted: checked against the ledger, committed in full at once (the bucket
    charges it then), and, for a batch call, the interactive reserve left in the bucket
    unless the request is too large to go with it beside (then it took a full bucket)."""
    ledger.served(t, waiting)
    backend.settle(step.charge, t.tokens, None)
    if t.batch:
        left = _free(backend, step.now if step.at is None else step.at)
        assert left >= min(reserve, LIMIT - t.tokens) - 1e-6, (left, t.tokens, reserve)


def _round(backend: Backend, waiting: list[Ticket], ledger: Ledger, reserve: int = 0) -> None:
    """Every waiter looks (arrival order), as long as someone is admitted."""
    admitted = True
    while admitted:
        admitted = False
        for t in list(waiting):
            step = backend.poll(t)
            if step.charge is not None:
                waiting.remove(t)
                _admitted(backend, t, step, waiting, ledger, reserve)
                admitted = True


def _run(backend: Backend, clock: FakeClock, ops: list[tuple[Any, ...]], reserve: int = 0) -> None:
    waiting: list[Ticket] = []
    ledger = Ledger(100)
    for op in ops:
        if op[0] == "arrive":
            # Asking for its soonest: the reply of a ticket admitted on arrival has none.
            t = ledger.came(Ticket(op[2], batch=op[1], estimate=True))
            step = backend.start(t)
            if step.charge is None:
                waiting.append(t)
            else:
                _admitted(backend, t, step, waiting, ledger, reserve)
        elif op[0] == "wait":
            clock.advance(op[1])
        elif waiting:
            backend.leave(waiting.pop(op[1] % len(waiting)))
        _round(backend, waiting, ledger, reserve)
    # Nobody starves: each waiter needs at most a whole bucket's refill.
    # (a batch request with the reserve beside it: at most a whole bucket too).
    for _ in range(2 * len(waiting) + 1):
        clock.advance(PERIOD)
        _round(backend, waiting, ledger, reserve)
    assert not waiting


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=BACKEND_OPS, reserve=st.sampled_from([0, 30, 100]))
def test_backends_serve_interactive_first_fifo_and_batchs_share(
    request: pytest.FixtureRequest, kind: str, ops: list[tuple[Any, ...]], reserve: int
) -> None:
    # The Lua port (lib.lua's q_head, q_served and q_need) under the memory queue's
    # property; with a reserve, batch never takes the bucket below it unless its
    # request could not go beside it (more than 70 of 100 tokens, or any with a reserve
    # of the whole bucket), and still never starves.
    rclient = request.getfixturevalue("rclient") if kind == "redis" else None
    clock = FakeClock(0.0)
    backend = _backend(kind, clock, rclient, reserve=reserve)
    try:
        _run(backend, clock, ops, reserve)
    finally:
        if rclient is not None:
            assert isinstance(backend, RedisBackend)
            keys = rclient.keys(backend._prefix + ":*")
            if keys:
                rclient.delete(*keys)


def test_a_head_the_bucket_can_serve_is_not_passed(clock: FakeClock) -> None:
    # A batch head whose tokens have refilled goes before an interactive caller that
    # arrives before it looked again: nobody passes a head the bucket can serve.
    backend = MemoryBackend(WindowLimits(tpm=LIMIT, window=PERIOD), clock=clock, algorithm="bucket")
    first = backend.start(Ticket(100))
    assert first.charge is not None
    backend.settle(first.charge, 100, None)
    batch = Ticket(60, batch=True, id="b")
    assert backend.start(batch).charge is None
    clock.advance(6.0)  # 60 tokens refilled: the batch head may go
    late = Ticket(10, id="i")
    assert backend.start(late).charge is None
    assert backend.poll(late).charge is None
    assert backend.poll(batch).charge is not None
    clock.advance(1.0)
    assert backend.poll(late).charge is not None


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1, True, "0.1", float("nan")])
def test_a_batch_share_outside_0_1_is_refused(share: Any) -> None:
    with pytest.raises(tg.ConfigurationError, match=r"batch_share must be a fraction in \(0, 1\)"):
        tg.Limiter(tpm=100, batch_share=share)


def test_an_unknown_priority_is_refused_with_nothing_admitted() -> None:
    lim = tg.Limiter(tpm=100)
    with pytest.raises(tg.ConfigurationError, match='priority must be "interactive" or "batch"'):
        lim.acquire(10, priority="urgent")  # type: ignore[arg-type]
    with pytest.raises(tg.ConfigurationError, match="priority must be"):
        tg.instrument(openai.OpenAI(api_key="x"), priority="low")  # type: ignore[arg-type]
    with pytest.raises(tg.ConfigurationError, match="priority must be"), tg.priority("x"):  # type: ignore[arg-type]
        pass
    assert lim.acquire(100).tokens == 100  # the refused calls held nothing


def test_a_priority_block_is_per_thread_and_wins_over_the_option() -> None:
    from tokenguard.limiter._priority import current_priority

    seen: dict[str, str] = {}

    def other() -> None:
        seen["other"] = current_priority("interactive")

    with tg.priority("batch"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        seen["inside"] = current_priority("interactive")
    seen["after"] = current_priority("batch")
    assert seen == {"other": "interactive", "inside": "batch", "after": "batch"}


@pytest.mark.parametrize("reserve", [-1, 1.5, True, "10"])
def test_an_interactive_reserve_that_is_not_tokens_is_refused(reserve: Any) -> None:
    with pytest.raises(tg.ConfigurationError, match=r"interactive_reserve must be tokens"):
        tg.Limiter(tpm=100, interactive_reserve=reserve)


def test_the_default_reserve_is_a_tenth_of_the_smallest_token_limit() -> None:
    assert tg.Limiter(tpm=6000).interactive_reserve == 600
    assert tg.Limiter(tpm=6000, tpd=500).interactive_reserve == 50
    assert tg.Limiter(rpm=30).interactive_reserve == 0  # no token limit: nothing to keep
    assert tg.Limiter(tpm=6000, interactive_reserve=0).interactive_reserve == 0


@pytest.mark.parametrize("algorithm", ["bucket", "window"])
@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_batch_leaves_the_reserve_on_both_algorithms(
    request: pytest.FixtureRequest, kind: str, algorithm: str
) -> None:
    # 100 tokens per 100 s (nothing refills within the test), 30 kept for interactive.
    options: dict[str, Any] = {"tpm": 100, "window": 100.0, "algorithm": algorithm}
    if kind == "redis":
        srv: RedisServer = request.getfixturevalue("redis_srv")
        options["redis"] = redis.Redis(host=srv.host, port=srv.port)
        options["key"] = f"prio-rsv-{uuid.uuid4().hex[:8]}"
    # A batch request larger than the capacity less the reserve still goes on a full
    # bucket (the reserve is capped for it): never starved.
    whole = tg.Limiter(**{**options, "key": options.get("key", "") + "w"}, interactive_reserve=30)
    assert whole.acquire(100, max_wait=0.05, priority="batch").tokens == 100
    lim = tg.Limiter(**options, interactive_reserve=30)
    first = lim.acquire(70, max_wait=0.05, priority="batch")
    with pytest.raises(tg.RateLimitTimeout):
        lim.acquire(1, max_wait=0.05, priority="batch")  # only the reserve is left
    inter = lim.acquire(30, max_wait=0.05)  # interactive finds it waiting
    assert (first.tokens, inter.tokens) == (70, 30)


# -- end to end: the emulator, the openai SDK, memory and a real redis-server ------------


@pytest.fixture
def em() -> Iterator[Emulator]:
    # A compressed minute: 600 tokens a second (the limiters learn the server's limits
    # from its headers, so theirs are the same); each batch call holds about 220.
    with running(model=MODEL, tpm=600, rpm=10_000, tpd=0, rpd=0, window=1.0) as server:
        yield server


BATCH_MAX, INTERACTIVE_MAX = 180, 20


def _limiters(
    kind: str, request: pytest.FixtureRequest, **more: Any
) -> tuple[tg.Limiter, tg.Limiter]:
    options: dict[str, Any] = {"tpm": 600, "window": 1.0, **more}
    if kind == "memory":
        lim = tg.Limiter(**options)
        return lim, lim
    srv: RedisServer = request.getfixturevalue("redis_srv")
    key = f"prio-e2e-{uuid.uuid4().hex[:8]}"
    # Two limiters on one key: two processes.
    return tuple(  # type: ignore[return-value]
        tg.Limiter(**options, redis=redis.Redis(host=srv.host, port=srv.port), key=key)
        for _ in range(2)
    )


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_an_interactive_call_passes_waiting_batch_calls_through_the_sdk(
    em: Emulator, request: pytest.FixtureRequest, kind: str
) -> None:
    batch_lim, inter_lim = _limiters(kind, request)
    batch_client = tg.instrument(client_for(em), limiter=batch_lim, priority="batch")
    inter_client = tg.instrument(client_for(em), limiter=inter_lim)
    hello: Any = [{"role": "user", "content": "Summarize this."}]
    tg.count_tokens(hello, model=MODEL)  # the tokenizer loaded before the clock matters

    def batch_job() -> None:
        for _ in range(2):
            batch_client.chat.completions.create(model=MODEL, messages=hello, max_tokens=BATCH_MAX)

    workers = [threading.Thread(target=batch_job) for _ in range(5)]
    for w in workers:
        w.start()
    time.sleep(0.4)  # the batch queue has formed: ten calls of ~200 at 600 a second
    inter_client.chat.completions.create(model=MODEL, messages=hello, max_tokens=INTERACTIVE_MAX)
    for w in workers:
        w.join()
    chats = [r for r in em.log if r.endpoint == "chat" and r.status == 200]
    assert len(chats) == 11
    small = min(r.requested_tokens for r in chats)
    position = next(i for i, r in enumerate(chats) if r.requested_tokens == small)
    # Strict FIFO would send it last; it goes as soon as the bucket has its tokens,
    # ahead of the batch calls still waiting.
    assert position <= 6, [r.requested_tokens for r in chats]
    assert len(chats) - 1 - position >= 4


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_interactive_calls_find_the_reserve_waiting_through_the_sdk(
    em: Emulator, request: pytest.FixtureRequest, kind: str, events: list[tg.events.Event]
) -> None:
    # Batch saturates the limit (a queue of fifteen ~200-token calls at 600 tokens a
    # second); a reserve of 240 holds two interactive calls of ~115 tokens, so each
    # interactive call, even two sent together, is admitted as it arrives instead of
    # waiting for its refill (~190 ms; two: ~380 ms) behind the batch admissions.
    batch_lim, inter_lim = _limiters(kind, request, interactive_reserve=240)
    batch_client = tg.instrument(client_for(em), limiter=batch_lim, priority="batch")
    inter_client = tg.instrument(client_for(em), limiter=inter_lim)
    hello: Any = [{"role": "user", "content": "Summarize this."}]
    tg.count_tokens(hello, model=MODEL)

    def batch_job() -> None:
        for _ in range(3):
            batch_client.chat.completions.create(model=MODEL, messages=hello, max_tokens=BATCH_MAX)

    def ask() -> None:
        inter_client.chat.completions.create(model=MODEL, messages=hello, max_tokens=100)

    workers = [threading.Thread(target=batch_job) for _ in range(5)]
    for w in workers:
        w.start()
    time.sleep(0.4)  # the batch queue has formed and the bucket is spent to the reserve
    for _ in range(3):
        ask()  # one alone, then two at once
        time.sleep(0.3)
    pair = [threading.Thread(target=ask) for _ in range(2)]
    for p in pair:
        p.start()
    for p in pair + workers:
        p.join()
    waits = [
        e.wait_s
        for e in events
        if isinstance(e, tg.events.GuardRequest) and e.completion_reserve == 100
    ]
    assert len(waits) == 5
    assert max(waits) < 0.08, waits
    assert sum(1 for r in em.log if r.endpoint == "chat" and r.status == 200) == 20


# -- bounded-delay backfill --------------------------------------------------------------

BACKFILL_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.integers(1, 100)),
        st.tuples(st.just("wait"), st.sampled_from([0.5, 1.0, 3.0, 6.0])),
        st.tuples(st.just("leave"), st.integers(0, 50)),
    ),
    max_size=40,
)


class HeadTimes:
    """Each head's turn as it saw it: never later than its turn when it first saw
    itself head (its strict-FIFO time, or later) plus the bound."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self.first: dict[int, float] = {}
        self.kept: list[Ticket] = []

    def saw(self, head: Ticket, until: float | None) -> None:
        if until is None:
            return
        first = self.first.setdefault(id(head), until)
        if first == until:
            self.kept.append(head)
        assert until <= first + self.bound + 1e-6, (until, first, self.bound)


def _backfill_round(backend: Backend, waiting: list[Ticket], heads: HeadTimes) -> int:
    """Every waiter looks, in arrival order (the head first), while someone is admitted;
    how many were admitted ahead of an older waiter."""
    passed, admitted = 0, True
    while admitted:
        admitted = False
        for t in list(waiting):
            step = backend.poll(t)
            if step.charge is None:
                if t is waiting[0]:
                    heads.saw(t, step.until)
                continue
            passed += t is not waiting[0]
            waiting.remove(t)
            backend.settle(step.charge, t.tokens, None)
            admitted = True
    return passed


def _run_backfill(
    backend: Backend, clock: FakeClock, ops: list[tuple[Any, ...]], bound: float
) -> int:
    waiting: list[Ticket] = []
    heads = HeadTimes(bound)
    passed = 0
    for op in ops:
        if op[0] == "arrive":
            t = Ticket(op[1], estimate=True)
            step = backend.start(t)
            if step.charge is None:
                waiting.append(t)
            else:
                passed += bool(waiting)
                backend.settle(step.charge, t.tokens, None)
        elif op[0] == "wait":
            clock.advance(op[1])
        elif waiting:
            backend.leave(waiting.pop(op[1] % len(waiting)))
        passed += _backfill_round(backend, waiting, heads)
    for _ in range(2 * len(waiting) + 1):  # nobody starves, the head included
        clock.advance(PERIOD)
        passed += _backfill_round(backend, waiting, heads)
    assert not waiting
    return passed


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=BACKFILL_OPS, bound=st.sampled_from([0.0, 0.5, 2.0, 5.0]))
def test_backfill_delays_the_head_by_at_most_the_bound(
    request: pytest.FixtureRequest, kind: str, ops: list[tuple[Any, ...]], bound: float
) -> None:
    # The head's turn never moves past its first turn plus the bound, whoever passed it;
    # without a bound nobody passes (strict FIFO); the queue always drains.
    rclient = request.getfixturevalue("rclient") if kind == "redis" else None
    clock = FakeClock(0.0)
    backend = _backend(kind, clock, rclient, backfill=bound)
    try:
        passed = _run_backfill(backend, clock, ops, bound)
        if bound == 0.0:
            assert passed == 0
    finally:
        if rclient is not None:
            assert isinstance(backend, RedisBackend)
            keys = rclient.keys(backend._prefix + ":*")
            if keys:
                rclient.delete(*keys)


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_backfill_lets_a_short_call_pass_a_long_head(
    request: pytest.FixtureRequest, kind: str
) -> None:
    rclient = request.getfixturevalue("rclient") if kind == "redis" else None
    clock = FakeClock(0.0)
    backend = _backend(kind, clock, rclient, backfill=1.0)  # 100 tokens per 10 s
    first = backend.start(Ticket(100))
    assert first.charge is not None
    backend.settle(first.charge, 100, None)  # the bucket is empty: 10 tokens a second
    head = Ticket(60)
    assert backend.start(head).charge is None  # waits 6 s
    clock.advance(3.0)  # 30 tokens back
    short = backend.start(Ticket(10))
    assert short.charge is not None  # delays the head 1 s, however long it is in flight
    assert backend.start(Ticket(10)).charge is None  # a second second would not be
    assert backend.poll(head).until == pytest.approx(7.0)
    batch_behind = Ticket(5, batch=True)
    assert backend.start(batch_behind).charge is None  # never ahead of interactive


def test_backfill_is_checked() -> None:
    with pytest.raises(tg.ConfigurationError, match='backfill needs algorithm="bucket"'):
        tg.Limiter(tpm=100, backfill=1.0, algorithm="window")
    with pytest.raises(tg.ConfigurationError, match="backfill must be seconds >= 0"):
        tg.Limiter(tpm=100, backfill=-1)


def test_nobody_passes_a_head_that_the_passers_flight_could_hold_past_the_bound() -> None:
    # The head needs the whole bucket: a passer in flight would hold it until the
    # passer's answer came, however long that takes, so the bound cannot be promised.
    clock = FakeClock(0.0)
    backend = _backend("memory", clock, None, backfill=5.0)
    first = backend.start(Ticket(100))
    assert first.charge is not None
    backend.settle(first.charge, 100, None)
    assert backend.start(Ticket(100)).charge is None
    clock.advance(5.0)
    assert backend.start(Ticket(10)).charge is None


async def test_async_tasks_each_keep_their_priority_and_interactive_goes_first() -> None:
    # A compressed second: 100 tokens; each call takes 40. Three batch tasks queue
    # (one in a tg.priority block, two by argument), then an interactive one.
    lim = tg.Limiter(tpm=100, window=1.0)
    lim.acquire(100).commit(100)
    order: list[str] = []

    async def call(name: str, priority: tg.Priority | None = None) -> None:
        r = await lim.acquire_async(40, priority=priority)
        order.append(name)
        await r.commit_async(40)

    async def in_block(name: str) -> None:
        with tg.priority("batch"):
            await call(name)

    batch = [asyncio.create_task(in_block("b0"))]
    await asyncio.sleep(0.01)
    batch += [asyncio.create_task(call(f"b{i}", "batch")) for i in (1, 2)]
    await asyncio.sleep(0.01)
    await call("i")
    await asyncio.gather(*batch)
    assert order == ["i", "b0", "b1", "b2"]
