"""The limiter's behaviour, one suite for every backend (memory with a fake clock, real Redis)
and for both faces (sync, asyncio). Waits are asserted in the backend's own clock."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from fake_clock import FakeClock
from redis_support import RedisServer, redis_srv, uncollected

import tokenguard as tg


@dataclass
class Harness:
    """Builds limiters on one backend; ``advance`` lets time pass (fake or real)."""

    name: str
    window: float
    # Tolerance on waits measured in the backend's clock (0 with the fake clock).
    slack: float
    _make: Callable[..., tg.Limiter]
    advance: Callable[[float], None]
    made: list[tg.Limiter] = field(default_factory=list)
    algorithm: str = "bucket"

    @property
    def bucket(self) -> bool:
        return self.algorithm == "bucket"

    @property
    def probe(self) -> int:
        """Tokens that show "nothing is free now": 1 on the fake clock; on Redis (real
        time, 100 tokens per 0.6 s in these tests) 10, the refill of 60 ms that a loaded
        machine may let pass between two steps."""
        return 1 if self.name == "memory" else 10

    def limiter(self, **kw: Any) -> tg.Limiter:
        kw.setdefault("window", self.window)
        kw.setdefault("algorithm", self.algorithm)
        lim = self._make(**kw)
        self.made.append(lim)
        return lim


def memory_harness() -> Harness:
    clock = FakeClock()

    def make(**kw: Any) -> tg.Limiter:
        return tg.Limiter(clock=clock, sleep=clock.sleep, **kw)

    return Harness("memory", 10.0, 1e-9, make, clock.sleep)


@contextmanager
def redis_harness(server: RedisServer, window: float = 0.6) -> Iterator[Harness]:
    client = redis.Redis(host=server.host, port=server.port)
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    def make(**kw: Any) -> tg.Limiter:
        kw.setdefault("key", prefix)
        return tg.Limiter(redis=client, **kw)

    try:
        yield Harness("redis", window, 0.5 * window, make, time.sleep)
    finally:
        client.close()


class Api:
    """Calls the limiter through its sync or its async face."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None

    def acquire(self, lim: tg.Limiter, tokens: int, max_wait: float | None = None) -> Any:
        if self.loop is None:
            return lim.acquire(tokens, max_wait=max_wait)
        return self.loop.run_until_complete(lim.acquire_async(tokens, max_wait=max_wait))

    def commit(self, r: tg.Reservation, actual: int, headers: Any = None) -> None:
        if self.loop is None:
            r.commit(actual, headers=headers)
        else:
            self.loop.run_until_complete(r.commit_async(actual, headers=headers))

    def cancel(self, r: tg.Reservation) -> None:
        if self.loop is None:
            r.cancel()
        else:
            self.loop.run_until_complete(r.cancel_async())

    def observe(self, lim: tg.Limiter, headers: Any) -> None:
        if self.loop is None:
            lim.observe(headers)
        else:
            self.loop.run_until_complete(lim.observe_async(headers))

    def close(self, limiters: list[tg.Limiter]) -> None:
        if self.loop is not None:
            for lim in limiters:
                self.loop.run_until_complete(lim.aclose())
            self.loop.close()


__all__ = ["redis_srv"]  # the session fixture, imported so that pytest finds it here

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(
    params=[
        "memory-bucket",
        "memory-window",
        pytest.param("redis-bucket", marks=pytest.mark.redis),
        pytest.param("redis-window", marks=pytest.mark.redis),
    ]
)
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    backend, algorithm = request.param.split("-")
    if backend == "memory":
        harness = memory_harness()
        harness.algorithm = algorithm
        yield harness
        return
    server = request.getfixturevalue("redis_srv")
    with redis_harness(server) as harness:
        harness.algorithm = algorithm
        yield harness


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, h: Harness) -> Iterator[Api]:
    a = Api(request.param)
    yield a
    a.close(h.made)


def test_fills_the_whole_limit_without_waiting(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, rpm=10)
    r1 = api.acquire(lim, 60)
    r2 = api.acquire(lim, 40)
    assert r1.waited == 0
    assert r2.waited == 0
    assert r1.tokens == 60
    assert not r1.settled


def test_waits_until_the_oldest_charge_ages_out(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 60)
    api.acquire(lim, 40)
    r3 = api.acquire(lim, 30)
    # Window: the first charge ages out. Bucket: estimates in flight never refill; once
    # unsettled a whole window they are charged, then 30 tokens refill in 0.3 window.
    wait = 1.3 * h.window if h.bucket else h.window
    assert r3.at >= r1.at + wait - 1e-6
    assert r3.at <= r1.at + wait + h.slack


def test_requests_per_window(h: Harness, api: Api) -> None:
    lim = h.limiter(rpm=2)
    r1 = api.acquire(lim, 0)
    api.acquire(lim, 0)
    r3 = api.acquire(lim, 0)
    assert r3.at >= r1.at + h.window


def test_commit_for_less_frees_the_difference_at_once(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, refunds=True)
    r1 = api.acquire(lim, 60)
    api.acquire(lim, 40)
    api.commit(r1, 10)
    r3 = api.acquire(lim, 50)
    assert r3.waited <= h.slack


def test_commit_for_more_records_the_extra(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 50)
    api.commit(r1, 90)
    with pytest.raises(tg.RateLimitTimeout) as info:
        api.acquire(lim, 20, max_wait=0)
    assert info.value.needed_wait is not None
    assert 0 < info.value.needed_wait <= h.window + h.slack


def test_cancel_refunds_everything(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, rpm=1)
    r1 = api.acquire(lim, 100)
    api.cancel(r1)
    r2 = api.acquire(lim, 100)
    assert r2.waited <= h.slack


def test_second_settle_is_a_no_op(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, refunds=True)
    r1 = api.acquire(lim, 100)
    api.commit(r1, 30)
    api.cancel(r1)  # ignored: the commit stands
    api.commit(r1, 0)  # ignored too
    assert r1.settled
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, 80, max_wait=0)
    assert api.acquire(lim, 70).waited <= h.slack


@pytest.mark.parametrize(("kw", "name"), [({"tpm": 100}, "tpm"), ({"tpd": 100}, "tpd")])
def test_a_request_larger_than_a_limit_fails_at_once(
    h: Harness, api: Api, kw: dict[str, int], name: str
) -> None:
    lim = h.limiter(**kw)
    with pytest.raises(tg.RequestTooLarge) as info:
        api.acquire(lim, 101)
    assert (info.value.limit_name, info.value.cost, info.value.limit) == (name, 101, 100)
    assert "101" in str(info.value)
    assert "100" in str(info.value)


def test_max_wait_shorter_than_the_wait_fails_at_once_without_trace(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    api.commit(api.acquire(lim, 90), 90)  # charged for good: no refund can shorten the wait
    with pytest.raises(tg.RateLimitTimeout) as info:
        api.acquire(lim, 50, max_wait=h.window / 4)
    assert info.value.max_wait == h.window / 4
    assert info.value.limit_name == "tpm"
    assert info.value.needed_wait is not None
    # The bucket refills the 40 missing tokens at 100 per window; the window frees all 90
    # a window after they were charged.
    wait = 0.4 * h.window if h.bucket else h.window
    assert wait - h.slack <= info.value.needed_wait <= wait + h.slack
    # Nothing charged, no queue place kept: a request that fits goes at once.
    assert api.acquire(lim, 10).waited <= h.slack


def test_try_acquire_admits_at_once_in_memory_and_never_waits(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, rpm=10)
    r = lim.try_acquire(60)
    if h.name != "memory":
        # Redis decides with a script and a queue: the caller acquires (and may wait).
        assert r is None
        return
    assert r is not None
    assert r.in_place
    assert (r.tokens, r.waited, r.settled) == (60, 0.0, False)
    assert lim.try_acquire(41) is None  # no room now: nothing charged, nobody queued
    r2 = api.acquire(lim, 40)  # what the refused one left is all still there
    assert r2.waited == 0
    api.commit(r, 60)
    with pytest.raises(tg.RequestTooLarge):
        lim.try_acquire(101)
    with pytest.raises(tg.ConfigurationError, match="tokens"):
        lim.try_acquire(-1)


def test_try_acquire_never_passes_a_waiting_call() -> None:
    clock = FakeClock()
    waiting, go = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        waiting.set()
        go.wait(10)
        clock.sleep(seconds)

    lim = tg.Limiter(tpm=100, window=10.0, clock=clock, sleep=sleep)
    lim.acquire(90)
    got: list[tg.Reservation] = []
    waiter = threading.Thread(target=lambda: got.append(lim.acquire(50)))
    waiter.start()
    try:
        assert waiting.wait(10)  # the 50 wait at the head of the queue
        assert lim.try_acquire(5) is None  # 10 tokens are free, but the head goes first
    finally:
        go.set()
        waiter.join(timeout=10)
    assert [r.tokens for r in got] == [50]


def test_max_wait_long_enough_waits(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 90)
    r2 = api.acquire(lim, 50, max_wait=h.window * 2)
    assert r2.at >= r1.at + h.window


def test_day_limits_use_1440_windows(h: Harness, api: Api) -> None:
    lim = h.limiter(tpd=100, rpd=1000)
    api.acquire(lim, 100)
    with pytest.raises(tg.RateLimitTimeout) as info:
        api.acquire(lim, 1, max_wait=0)
    assert info.value.needed_wait is not None
    if h.bucket:
        # Charged when it ages (one window), then one token refills in a 100th of a day.
        wait = h.window + 14.4 * h.window
        assert wait - h.slack <= info.value.needed_wait <= wait + h.slack
    else:
        # Day charges are kept in one-window buckets, stamped at the bucket's end.
        assert 1439 * h.window <= info.value.needed_wait <= 1441 * h.window


def test_header_tighter_than_the_ledger_is_adopted(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 10)
    # Somebody else spent the rest; the server refills in one window.
    reset = f"{h.window}s"
    api.observe(lim, {"X-RateLimit-Remaining-Tokens": "0", "x-ratelimit-reset-tokens": reset})
    with pytest.raises(tg.RateLimitTimeout) as info:
        api.acquire(lim, 50, max_wait=0)
    assert info.value.needed_wait is not None
    # The server's bucket holds 50 again after half a window (linear refill); 0.4 of
    # one at the soonest, if the 10 tokens in flight were refunded.
    assert 0.4 * h.window - h.slack <= info.value.needed_wait <= h.window + h.slack
    r2 = api.acquire(lim, 50)
    assert r2.at >= r1.at + h.window / 2 - 1e-6


def test_header_looser_than_the_ledger_never_loosens(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    api.acquire(lim, 90)
    api.observe(lim, {"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "0s"})
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, 50, max_wait=0)


def test_commit_with_headers_of_a_server_that_did_not_refund(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 80)
    # The server charged all 80 (prompt + max_tokens) though only 30 were used.
    api.commit(r1, 30, {"x-ratelimit-remaining-tokens": "20", "x-ratelimit-limit-tokens": "100"})
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, 60, max_wait=0)
    assert api.acquire(lim, 20).waited <= h.slack


def test_stale_header_does_not_double_count_later_admissions(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 30)
    api.acquire(lim, 30)  # admitted after r1's response was written
    # r1's response: the server had seen only r1.
    api.commit(r1, 30, {"x-ratelimit-remaining-tokens": "70", "x-ratelimit-reset-tokens": "1ms"})
    assert api.acquire(lim, 40).waited <= h.slack


@pytest.mark.parametrize("lagged", [False, True])
def test_header_lag_counts_recent_admissions_as_unseen(h: Harness, api: Api, lagged: bool) -> None:
    lim = h.limiter(tpm=100, header_lag=10 * h.window if lagged else 0.0, refunds=True)
    r1 = api.acquire(lim, 50)
    api.acquire(lim, 50)
    # r1's response says 50 are left. With a lag it may predate the second admission,
    # which the server will still charge; without one it is current (the server saw
    # both and refunded r1).
    api.commit(r1, 0, {"x-ratelimit-remaining-tokens": "50", "x-ratelimit-limit-tokens": "100"})
    if lagged:
        with pytest.raises(tg.RateLimitTimeout):
            api.acquire(lim, 50, max_wait=0)
    else:
        assert api.acquire(lim, 50).waited <= h.slack


def test_refunds_false_keeps_the_estimate_of_a_commit_without_headers(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, refunds=False)
    r1 = api.acquire(lim, 60)
    api.acquire(lim, 40)
    api.commit(r1, 10)  # the server may have charged all 60
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, 50, max_wait=0)


def test_refunds_false_headers_free_what_the_server_refunded(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, refunds=False)
    r1 = api.acquire(lim, 60)
    # The server refunded 50 of the 60: it has 90 left (and refills in a window).
    api.commit(r1, 10, {"x-ratelimit-remaining-tokens": "90", "x-ratelimit-limit-tokens": "100"})
    assert api.acquire(lim, 90).waited <= h.slack


def test_refunds_false_headers_free_only_what_the_server_confirms(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, refunds=False)
    r1 = api.acquire(lim, 60)
    r2 = api.acquire(lim, 40)
    # r1's response: the server kept all 60, and r2 may not have reached it yet.
    api.commit(r1, 10, {"x-ratelimit-remaining-tokens": "40", "x-ratelimit-limit-tokens": "100"})
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, h.probe, max_wait=0)
    # r2's response: the server refunded r1 after all (and r2's 30 unused).
    api.commit(r2, 10, {"x-ratelimit-remaining-tokens": "80", "x-ratelimit-limit-tokens": "100"})
    if h.bucket:
        # The bucket does not trust r1, settled after r2 left, as seen by r2's answer:
        # it may have reached the server later. It frees 80 less r1's 60 kept.
        assert api.acquire(lim, 20).waited <= h.slack
        with pytest.raises(tg.RateLimitTimeout):
            api.acquire(lim, h.probe, max_wait=0)
    else:
        assert api.acquire(lim, 80).waited <= h.slack


def test_refunds_false_counts_a_request_still_in_flight_as_unseen(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100, refunds=False)
    r1 = api.acquire(lim, 60)
    r2 = api.acquire(lim, 40)
    # r2's response shows 90 left (it refunded r2's 30), but r1 is still in flight:
    # it may yet arrive and take 60, so only 30 are proven.
    api.commit(r2, 10, {"x-ratelimit-remaining-tokens": "90", "x-ratelimit-limit-tokens": "100"})
    assert api.acquire(lim, 30).waited <= h.slack
    with pytest.raises(tg.RateLimitTimeout):
        api.acquire(lim, h.probe, max_wait=0)
    assert not r1.settled


def test_retry_after_blocks_every_admission(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    r1 = api.acquire(lim, 1)
    api.observe(lim, {"retry-after": str(h.window / 2)})
    r2 = api.acquire(lim, 1)
    assert r2.at >= r1.at + h.window / 2


def test_bad_headers_are_ignored(h: Harness, api: Api) -> None:
    lim = h.limiter(tpm=100)
    api.observe(
        lim,
        {
            "x-ratelimit-remaining-tokens": "lots",
            "x-ratelimit-reset-tokens": "soon",
            "retry-after": "x",
        },
    )
    assert api.acquire(lim, 100).waited <= h.slack


def test_fifo_a_large_request_is_not_overtaken(h: Harness) -> None:
    lim = h.limiter(tpm=100)
    first = lim.acquire(90)

    async def main() -> list[tuple[str, float]]:
        done: list[tuple[str, float]] = []

        async def go(name: str, tokens: int) -> None:
            r = await lim.acquire_async(tokens)
            done.append((name, r.at))

        big = asyncio.create_task(go("big", 100))
        await asyncio.sleep(0.05 if h.name == "redis" else 0)
        small = asyncio.create_task(go("small", 10))  # would fit now, but queues behind
        await asyncio.gather(big, small)
        await lim.aclose()
        return done

    done = asyncio.run(main())
    assert [name for name, _ in done] == ["big", "small"]
    assert done[0][1] >= first.at + h.window
    assert done[1][1] >= done[0][1] + h.window  # the big one fills the window


def test_a_cancelled_waiting_task_leaves_no_trace(h: Harness) -> None:
    lim = h.limiter(tpm=100)
    lim.acquire(90)

    async def main() -> tg.Reservation:
        task = asyncio.create_task(lim.acquire_async(50))
        await asyncio.sleep(0.05 if h.name == "redis" else 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        r = await lim.acquire_async(10)  # fits now; nobody ahead, nothing charged
        await lim.aclose()
        return r

    assert asyncio.run(main()).waited <= h.slack


@pytest.mark.parametrize(
    ("kind", "algorithm", "first_wait"),
    [
        # The bucket: the 90 in flight never refill; they age at 10 s, leaving 10 of the
        # 100, and the 40 missing refill at 10/s: 14 s.
        ("sync", "bucket", 14.0),
        ("async", "bucket", 14.0),
        # The window: the 90 leave the window at 10 s.
        ("sync", "window", 10.0),
        ("async", "window", 10.0),
    ],
)
def test_an_error_while_waiting_leaves_the_queue(
    kind: str, algorithm: str, first_wait: float
) -> None:
    class Interrupted(Exception):
        pass

    clock = FakeClock()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            raise Interrupted("the first wait is interrupted")
        clock.sleep(seconds)

    lim = tg.Limiter(tpm=100, window=10.0, clock=clock, sleep=sleep, algorithm=algorithm)
    api = Api(kind)
    try:
        first = lim.acquire(90)
        with pytest.raises(Interrupted):
            api.acquire(lim, 50)  # the head of the queue: it waits for `first` to age out
        assert waits == [first_wait]
        # Nobody is left in the queue: 10 tokens still fit, and go at once.
        r = api.acquire(lim, 10)
        assert r.waited == 0
        api.cancel(r)
        first.cancel()
        assert api.acquire(lim, 100).waited == 0  # and nothing of the 50 was charged
    finally:
        api.close([lim])


def test_a_thread_waiting_is_woken_by_a_cancel(h: Harness) -> None:
    # A long window and the real clock: the waiter only goes early if the cancel wakes it.
    lim = (
        tg.Limiter(tpm=100, window=1000.0)
        if h.name == "memory"
        else h.limiter(tpm=100, window=1000.0)
    )
    r1 = lim.acquire(90)
    got: list[tg.Reservation] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire(50)), daemon=True)
    t.start()
    time.sleep(0.05)
    r1.cancel()
    t.join(10)
    assert got
    assert got[0].waited < 10


def test_threads_never_exceed_the_limit_in_any_window(h: Harness) -> None:
    lim = (
        h.limiter(tpm=100, rpm=5)
        if h.name == "redis"
        else tg.Limiter(tpm=100, rpm=5, window=0.3)  # real clock: threads wait for real
    )
    window = lim.limits.window
    admitted: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(3):
            r = lim.acquire(20 + 10 * ((n + i) % 3))
            with lock:
                admitted.append((r.at, r.tokens))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(admitted) == 12
    for at, _ in admitted:
        in_window = [tok for t2, tok in admitted if at - window < t2 <= at]
        assert sum(in_window) <= 100
        assert len(in_window) <= 5


def test_bad_arguments_are_named() -> None:
    with pytest.raises(tg.ConfigurationError, match="at least one"):
        tg.Limiter()
    with pytest.raises(tg.ConfigurationError, match="tpm"):
        tg.Limiter(tpm=0)
    with pytest.raises(tg.ConfigurationError, match="window"):
        tg.Limiter(tpm=10, window=0)
    lim = tg.Limiter(tpm=10)
    with pytest.raises(tg.ConfigurationError, match="tokens"):
        lim.acquire(-1)
    with pytest.raises(tg.ConfigurationError, match="max_wait"):
        lim.acquire(1, max_wait=-1)
    r = lim.acquire(1)
    with pytest.raises(tg.ConfigurationError, match="actual_tokens"):
        r.commit(-5)
    assert not r.settled


def test_a_queued_request_waits_out_max_wait_while_those_ahead_may_still_leave(
    h: Harness,
) -> None:
    lim = h.limiter(tpm=100)
    lim.acquire(100)  # in flight: its cancel (or a short commit) would give the room back

    async def main() -> None:
        head = asyncio.create_task(lim.acquire_async(100))  # goes after one window
        await asyncio.sleep(0.05 if h.name == "redis" else 0)
        started = time.monotonic()
        with pytest.raises(tg.RateLimitTimeout) as info:
            await lim.acquire_async(50, max_wait=h.window / 2)
        # Not refused at once: the head and the request in flight could still have left.
        if h.name == "redis":
            assert time.monotonic() - started >= h.window / 2 - 0.01
        assert info.value.max_wait == h.window / 2
        (await head).cancel()
        await lim.aclose()

    asyncio.run(main())


def test_a_request_is_served_within_max_wait_when_the_one_in_flight_is_refunded(
    h: Harness, api: Api
) -> None:
    # The real clock, a window of 10 s: the request in flight would hold the room for
    # a whole window, unless it is refunded, as it is after 0.2 s.
    if h.name == "memory":
        lim = tg.Limiter(tpm=100, window=10.0, algorithm=h.algorithm)
    else:
        lim = h.limiter(tpm=100, window=10.0)
    first = api.acquire(lim, 100)
    done: list[tg.Reservation | BaseException] = []

    def second() -> None:
        try:
            done.append(lim.acquire(50, max_wait=2.0))
        except BaseException as exc:  # reported below
            done.append(exc)

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.2)
    api.cancel(first)
    t.join()
    assert isinstance(done[0], tg.Reservation), done[0]
    assert 0.15 <= done[0].waited <= 1.0


def test_a_spent_day_limit_fails_fast_without_max_wait(h: Harness, api: Api) -> None:
    lim = h.limiter(tpd=1000)
    api.commit(api.acquire(lim, 1000), 1000)  # the day's tokens, spent for good
    # 500 tokens refill in half a day: 7,200 s here (432 s on Redis's 0.6 s window).
    with pytest.raises(tg.RateLimitTimeout) as info:
        api.acquire(lim, 500)
    assert info.value.limit_name == "tpd"
    assert info.value.needed_wait is not None
    assert info.value.needed_wait > 300  # the default max_day_wait
    assert info.value.resets_in is not None
    # Whole again a day after the spend (the window keeps day charges in one-window
    # buckets, stamped at the bucket's end).
    assert h.window * 1440 - h.slack <= info.value.resets_in <= h.window * 1441 + h.slack
    assert "TPD limit (1,000 tokens per" in str(info.value)
    assert "max_day_wait=5 min" in str(info.value)
    # A short max_wait: refused at once too, naming the same limit.
    with pytest.raises(tg.RateLimitTimeout) as info:
        api.acquire(lim, 500, max_wait=h.window)
    assert info.value.limit_name == "tpd"
    if h.name == "memory":
        # Opting in to wait as long as it takes (the fake clock lets the half day pass).
        r = api.acquire(lim, 500, max_wait=math.inf)
        # The bucket refills 500 in half a day; the window frees the day's charges a day
        # after the end of their one-window bucket.
        assert r.waited == pytest.approx(h.window * (720 if h.bucket else 1441))
    if h.bucket:
        # Short day waits stay waits: 10 tokens refill in 14.4 windows (144 s here,
        # within five minutes).
        lim2 = h.limiter(tpd=1000, key=f"other-{uuid.uuid4().hex[:8]}")
        api.commit(api.acquire(lim2, 1000), 1000)
        if h.name == "memory":  # (8.6 s of real time on Redis)
            assert api.acquire(lim2, 10).waited == pytest.approx(14.4 * h.window)


def test_max_wait_is_never_overrun_by_more_than_50_ms(h: Harness, api: Api) -> None:
    if h.name == "memory":
        lim = tg.Limiter(tpm=100, window=10.0, algorithm=h.algorithm)  # the real clock
    else:
        lim = h.limiter(tpm=100, window=10.0)
    api.acquire(lim, 100)  # in flight: the wait is not certain, so it waits it out
    with uncollected():
        started = time.monotonic()
        with pytest.raises(tg.RateLimitTimeout):
            api.acquire(lim, 50, max_wait=0.3)
        took = time.monotonic() - started
    assert 0.3 - 0.01 <= took <= 0.35, took


def test_from_model_takes_the_table_limits_and_overrides() -> None:
    lim = tg.Limiter.from_model("llama-3.1-8b-instant", window=5.0)
    assert (lim.limits.tpm, lim.limits.rpm, lim.limits.tpd, lim.limits.rpd) == (
        6000,
        30,
        500_000,
        14_400,
    )
    assert lim.limits.window == 5.0
    assert tg.Limiter.from_model(tg.get_model("llama-3.1-8b-instant"), rpm=None).limits.rpm is None
    with pytest.raises(tg.ConfigurationError, match="tier"):
        tg.Limiter.from_model("llama-3.1-8b-instant", tier="platinum")
    unknown = tg.ModelInfo("my-model", context_window=8192, max_completion_tokens=1024)
    with pytest.raises(tg.ConfigurationError, match="no 'free' limits"):
        tg.Limiter.from_model(unknown)
