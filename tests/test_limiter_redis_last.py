"""The polls at their deadlines, batched: waiters of one process whose deadlines come
together share one round trip, and each still gets its own answer (against a real
redis-server)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis_support import RedisServer, fresh_key, redis_client, redis_server, redis_srv

import tokenguard as tg
from tokenguard._drive import run_async
from tokenguard.limiter._backend import Step, Ticket
from tokenguard.limiter._redis import RedisBackend

__all__ = ["fresh_key", "redis_client", "redis_srv"]

pytestmark = pytest.mark.redis

# The sliding window: exact room at exact times (the bucket refills all along).
WINDOW = 2.0


def _backend(lim: tg.Limiter) -> RedisBackend:
    backend = lim._backend
    assert isinstance(backend, RedisBackend)
    return backend


def _scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


def _queue_is_clean(client: redis.Redis, key: str) -> None:
    p = "{" + key + "}"
    assert client.zcard(f"{p}:q") == 0
    assert client.zcard(f"{p}:ql") == 0
    assert client.hlen(f"{p}:qt") == 0
    assert client.hlen(f"{p}:res") == 0  # no admission left for a waiter to fetch


def _queued(backend: RedisBackend, sizes: list[int]) -> list[Ticket]:
    """Tickets queued in this order (their starts one after another), each due now."""
    tickets = []
    for tokens in sizes:
        t = Ticket(tokens, max_wait=30.0)
        assert backend.start(t).charge is None
        tickets.append(t)
    for t in tickets:
        t.deadline = backend._now()  # the poll is the last one
    return tickets


def _half_free(lim: tg.Limiter) -> float:
    """Spend the window's 400 tokens, half now and half half a window later (committed:
    nothing in flight); when (monotonic) the first half is free again."""
    lim.acquire(200).commit(200)
    free_at = time.monotonic() + WINDOW
    time.sleep(WINDOW / 2)
    lim.acquire(200).commit(200)
    return free_at


def _until(at: float) -> None:
    """Sleep until ``at`` (monotonic) and a little more."""
    time.sleep(max(at - time.monotonic(), 0.0) + 0.15)


async def _last_polls(backend: RedisBackend, tickets: list[Ticket]) -> list[Any]:
    """Every ticket's last poll from its own task, all due in the same turn of the loop."""
    try:
        plans = [run_async(backend.poll_plan(t)) for t in tickets]
        return list(await asyncio.gather(*plans, return_exceptions=True))
    finally:
        await backend.aclose()


def _admitted(step: Step, ticket: Ticket) -> bool:
    if step.charge is not None:
        assert step.charge.rid == ticket.id
        assert step.charge.tokens == ticket.tokens
        return True
    assert step.left
    assert not step.lost
    assert ticket.id == ""
    return False


def test_tasks_due_together_get_their_own_answers_from_one_round_trip(
    client: redis.Redis, key: str
) -> None:
    # The window frees 200 tokens: the head (300) cannot go, so it leaves, and the
    # two behind it (100 each) fit; the last one (200) finds none left. The tasks come
    # due in reverse queue order: decided in queue order, the head's leaving lets the
    # next two in, as polls one after another would.
    lim = tg.Limiter(tpm=400, window=WINDOW, redis=client, key=key, algorithm="window")
    backend = _backend(lim)
    free_at = _half_free(lim)
    tickets = _queued(backend, [300, 100, 100, 200])
    _until(free_at)
    before = _scripts_run(client)
    steps = asyncio.run(_last_polls(backend, tickets[::-1]))[::-1]
    assert _scripts_run(client) - before == 1
    assert [_admitted(s, t) for s, t in zip(steps, tickets, strict=True)] == [
        False,
        True,
        True,
        False,
    ]
    # The refused ones still know the limit that held them, for their messages.
    assert steps[0].soonest is not None
    assert steps[0].soonest.limit == "tpm"
    _queue_is_clean(client, key)


def test_threads_due_together_get_their_own_answers(client: redis.Redis, key: str) -> None:
    lim = tg.Limiter(tpm=400, window=WINDOW, redis=client, key=key, algorithm="window")
    backend = _backend(lim)
    free_at = _half_free(lim)
    tickets = _queued(backend, [300] + [100] * 7)
    _until(free_at)
    steps: dict[int, Step] = {}
    go = threading.Barrier(len(tickets))

    def poll(i: int) -> None:
        go.wait()
        steps[i] = backend.poll(tickets[i])

    before = _scripts_run(client)
    threads = [threading.Thread(target=poll, args=(i,)) for i in range(len(tickets))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert _scripts_run(client) - before <= len(tickets)
    # Each thread got its own answer (``_admitted`` checks the charge is its ticket's).
    # Which threads share a batch depends on the scheduler: a ticket whose last poll
    # runs while the head (300, which cannot go) is still queued leaves, as it must
    # behind a head. So the queue's order bounds the outcome: never the head, and never
    # more than the 200 tokens freed.
    admitted = [_admitted(steps[i], t) for i, t in enumerate(tickets)]
    assert not admitted[0]
    assert sum(t.tokens for a, t in zip(admitted, tickets, strict=True) if a) <= 200
    assert backend._lasts._due == []
    assert not backend._lasts._busy
    _queue_is_clean(client, key)


def test_a_ticket_whose_lease_ran_out_is_answered_lost_in_its_batch(
    client: redis.Redis, key: str
) -> None:
    lim = tg.Limiter(tpm=400, window=WINDOW, redis=client, key=key, algorithm="window")
    backend = _backend(lim)
    free_at = _half_free(lim)
    tickets = _queued(backend, [100, 100, 100])
    # The first waiter stopped renewing its place (a process paused): it is gone by the
    # batch, whose other two tickets move up and fit.
    client.zadd("{" + key + "}:ql", {tickets[0].id: 0})
    _until(free_at)
    before = _scripts_run(client)
    steps = asyncio.run(_last_polls(backend, tickets))
    assert _scripts_run(client) - before == 1
    assert [_admitted(s, t) for s, t in zip(steps, tickets, strict=True)] == [False, True, True]
    _queue_is_clean(client, key)


@pytest.mark.parametrize("face", ["thread", "asyncio"])
def test_many_waiters_with_one_max_wait_each_get_their_own_timeout(
    client: redis.Redis, key: str, face: str
) -> None:
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key=key)
    held = lim.acquire(100)
    n, max_wait = 24, 0.3
    outcomes: list[Any] = []
    started = time.monotonic()
    if face == "asyncio":

        async def one(tokens: int) -> Any:
            try:
                return await lim.acquire_async(tokens, max_wait=max_wait)
            except tg.RateLimitTimeout as exc:
                return exc

        async def all_of_them() -> None:
            try:
                outcomes.extend(await asyncio.gather(*(one(10 + i) for i in range(n))))
            finally:
                await lim.aclose()

        asyncio.run(all_of_them())
    else:

        def run(tokens: int) -> None:
            try:
                outcomes.append(lim.acquire(tokens, max_wait=max_wait))
            except tg.RateLimitTimeout as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=run, args=(10 + i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    took = time.monotonic() - started
    assert len(outcomes) == n
    assert all(isinstance(o, tg.RateLimitTimeout) for o in outcomes)
    # Each its own message: its own size, the wait it was given.
    assert sorted(str(o).split(" tokens ")[0] for o in outcomes) == sorted(
        f"a request of {10 + i:,}" for i in range(n)
    )
    assert all("waited max_wait=" in str(o) for o in outcomes)
    assert len({id(o) for o in outcomes}) == n
    assert took < max_wait + 1.0
    _queue_is_clean(client, key)
    held.cancel()


@pytest.fixture
def box() -> Iterator[RedisServer]:
    """A server of the test's own, to freeze; thawed before it is stopped."""
    with redis_server() as srv:
        try:
            yield srv
        finally:
            srv.process.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("face", ["thread", "asyncio"])
def test_redis_down_mid_batch_fails_every_waiter_and_leaks_nothing(
    box: RedisServer, face: str
) -> None:
    client = redis.Redis(host=box.host, port=box.port)
    key = "frozen-batch"
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key=key)
    backend = _backend(lim)
    held = lim.acquire(100)
    tickets = _queued(backend, [10] * 6)
    for t in tickets:
        t.deadline = backend._now() + 0.05  # due in 50 ms; Redis gone by then
    outcomes: list[Any] = []

    async def polls() -> None:
        # Connections of this loop first: the frozen server still accepts, and answers none.
        await run_async(backend.poll_plan(Ticket(1)))
        box.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.06)
        outcomes.extend(await _last_polls(backend, tickets))

    def poll(t: Ticket) -> None:
        try:
            outcomes.append(backend.poll(t))
        except tg.LimiterUnavailable as exc:
            outcomes.append(exc)

    try:
        if face == "asyncio":
            asyncio.run(polls())
        else:
            box.process.send_signal(signal.SIGSTOP)
            time.sleep(0.06)
            threads = [threading.Thread(target=poll, args=(t,)) for t in tickets]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
    finally:
        box.process.send_signal(signal.SIGCONT)
    assert len(outcomes) == len(tickets)
    assert all(isinstance(o, tg.LimiterUnavailable) for o in outcomes), outcomes
    assert len({id(o) for o in outcomes}) == len(tickets)
    # Every ticket is remembered, to be left (and any admission cancelled) by the next
    # decision; the batches are idle.
    assert set(backend._orphans) == {t.id for t in tickets}
    assert backend._lasts._due == []
    assert not backend._lasts._busy
    held.cancel()
    lim.acquire(1).cancel()
    assert backend._orphans == {}
    _queue_is_clean(client, key)
    client.close()


# Keeps Redis busy for ARGV[1] microseconds: every command sent meanwhile waits.
_BUSY = (
    "local s = redis.call('TIME') local t0 = s[1] * 1e6 + s[2] "
    "while true do local n = redis.call('TIME') "
    "if n[1] * 1e6 + n[2] - t0 > tonumber(ARGV[1]) then break end end return 1"
)


def test_a_waiter_cancelled_while_its_batch_is_under_way_leaks_no_admission(
    redis_srv: RedisServer, client: redis.Redis, key: str
) -> None:
    window = 1.0
    lim = tg.Limiter(tpm=100, window=window, redis=client, key=key, algorithm="window")
    backend = _backend(lim)
    lim.acquire(100).commit(100)
    free_at = time.monotonic() + window
    tickets = _queued(backend, [10, 10])
    _until(free_at)
    other = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    busy = threading.Thread(target=lambda: other.eval(_BUSY, 0, 300_000))

    async def polls() -> Any:
        try:
            tasks = [asyncio.ensure_future(run_async(backend.poll_plan(t))) for t in tickets]
            await asyncio.sleep(0.1)  # the batch is sent, and waits behind the busy script
            tasks[0].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await backend.aclose()

    busy.start()
    time.sleep(0.02)  # the busy script is running
    outcomes = asyncio.run(polls())
    busy.join()
    other.close()
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert _admitted(outcomes[1], tickets[1])
    # Both were admitted in the batch; the cancelled one's admission is cancelled by
    # the next decision, which then finds the room its 10 tokens took.
    assert set(backend._orphans) == {tickets[0].id}
    lim.acquire(89, max_wait=0).cancel()
    assert backend._orphans == {}
    _queue_is_clean(client, key)
