"""What only the Redis backend does: sharing across clients, leases, expiry, outages."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_support import RedisServer, fresh_key, redis_client, redis_server, redis_srv, uncollected
from structlog.testing import capture_logs

import tokenguard as tg
from tokenguard.limiter._backend import Signal, Ticket
from tokenguard.limiter._redis import GRACE

__all__ = ["fresh_key", "redis_client", "redis_srv"]

pytestmark = pytest.mark.redis

WINDOW = 0.6


def test_two_clients_share_one_window(redis_srv: RedisServer, key: str) -> None:
    a = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    b = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    la = tg.Limiter(tpm=100, window=WINDOW, redis=a, key=key)
    lb = tg.Limiter(tpm=100, window=WINDOW, redis=b, key=key)
    r1 = la.acquire(70)
    with pytest.raises(tg.RateLimitTimeout):
        lb.acquire(40, max_wait=0)
    r2 = lb.acquire(40)
    assert r2.at >= r1.at + WINDOW
    a.close()
    b.close()


def test_keys_are_namespaced_and_expire(client: redis.Redis, key: str) -> None:
    lim = tg.Limiter(tpm=100, tpd=1000, window=WINDOW, redis=client, key=key)
    lim.acquire(10).commit(5, headers={"x-ratelimit-remaining-tokens": "0"})
    keys = [k.decode() for k in client.keys("*") if isinstance(k, bytes)]
    ours = [k for k in keys if k.startswith("{" + key + "}:")]
    assert ours
    for k in ours:
        ttl = client.pttl(k)
        assert 0 < ttl <= (1441 * WINDOW + 10.0 + WINDOW) * 1000 + 1


def test_a_crashed_head_does_not_stall_the_queue(client: redis.Redis, key: str) -> None:
    lim = tg.Limiter(tpm=100, window=WINDOW, redis=client, key=key, lease=30.0)
    first = lim.acquire(100)
    # A waiter that enqueues and then dies: it never polls, never leaves.
    ghost = Ticket(60, Signal(for_async=False))
    assert lim._backend.start(ghost).charge is None
    # The next in line polls when the ghost's time comes and serves it on its behalf
    # (its charge then ages out), long before the ghost's lease would run out.
    r = lim.acquire(40)
    assert r.at >= first.at + WINDOW
    assert r.waited <= WINDOW + 2.0


def test_a_crashed_waiter_loses_its_place_when_its_lease_runs_out(
    client: redis.Redis, key: str
) -> None:
    lease = 0.5
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key=key, lease=lease)
    first = lim.acquire(100)
    ghost = Ticket(100, Signal(for_async=False))  # behind `first`: waits ~100 s, then dies
    assert lim._backend.start(ghost).charge is None
    first.cancel()  # room for the ghost: it is served on its behalf, and its charge stays
    with pytest.raises(tg.RateLimitTimeout):
        lim.acquire(10, max_wait=0)
    # A ghost that cannot go holds the head until its lease runs out.
    lim2 = tg.Limiter(tpm=100, window=100.0, redis=client, key=key + "b", lease=lease)
    lim2.acquire(100)
    ghost2 = Ticket(100, Signal(for_async=False))
    assert lim2._backend.start(ghost2).charge is None
    started = time.monotonic()
    with pytest.raises(tg.RateLimitTimeout) as info:
        lim2.acquire(10, max_wait=lease * 4)
    # Behind a head that may still leave (as it does, its lease run out) and a request in
    # flight that may still be refunded, it waits out max_wait, no more; by then it is
    # the head and knows its own time (the charge in flight ages in 100 s)...
    assert lease * 4 - 0.01 <= time.monotonic() - started <= lease * 4 + 0.05
    assert info.value.needed_wait is not None
    assert info.value.needed_wait > 90
    # ...and once the lease is over, the ghost is gone and the queue moves on.
    time.sleep(lease * 1.2)
    assert client.zcard("{" + key + "b}:q") == 0 or lim2._backend.poll(ghost2).lost


@pytest.mark.parametrize(
    ("algorithm", "periods"),
    [
        # The bucket: the forgotten 100 in flight never refill; charged when they age
        # (one window), they leave an empty bucket that refills the 100 in one more.
        ("bucket", 2),
        # The window: the forgotten 100 leave the window after one.
        ("window", 1),
    ],
)
def test_a_reservation_never_settled_ages_out(
    client: redis.Redis, key: str, algorithm: str, periods: int
) -> None:
    lim = tg.Limiter(tpm=100, window=WINDOW, redis=client, key=key, algorithm=algorithm)
    forgotten = lim.acquire(100)
    del forgotten
    r = lim.acquire(100)
    assert WINDOW * periods * 0.9 <= r.waited <= WINDOW * (periods + 1)


def test_threads_of_several_clients_keep_the_window_and_fifo(
    redis_srv: RedisServer, key: str
) -> None:
    admitted: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        c = redis.Redis(host=redis_srv.host, port=redis_srv.port)
        lim = tg.Limiter(tpm=100, rpm=4, window=WINDOW, redis=c, key=key)
        for i in range(3):
            r = lim.acquire(25 + 5 * ((n + i) % 3))
            with lock:
                admitted.append((r.at, r.tokens))
        c.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(admitted) == 12
    for at, _ in admitted:
        in_window = [tok for t2, tok in admitted if at - WINDOW < t2 <= at]
        assert sum(in_window) <= 100
        assert len(in_window) <= 4


def _dead_client() -> redis.Redis:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return redis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def test_unreachable_redis_raises_limiter_unavailable() -> None:
    dead = _dead_client()
    lim = tg.Limiter(tpm=100, redis=dead)
    with pytest.raises(tg.LimiterUnavailable, match="Redis"):
        lim.acquire(10)


def test_fail_open_falls_back_to_a_local_window() -> None:
    dead = _dead_client()
    lim = tg.Limiter(tpm=100, window=1000.0, redis=dead, fail_open=True)
    with capture_logs() as logs:
        r = lim.acquire(60)
        r.commit(60)
        with pytest.raises(tg.RateLimitTimeout):
            lim.acquire(50, max_wait=0)
    assert [e["event"] for e in logs] == ["tokenguard.limiter.fail_open"]


async def test_async_waiters_share_the_queue_with_threads(client: redis.Redis, key: str) -> None:
    lim = tg.Limiter(tpm=100, window=WINDOW, redis=client, key=key)
    first = await lim.acquire_async(100)
    got: list[tg.Reservation] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire(50)))
    t.start()
    await asyncio.sleep(0.05)
    r = await lim.acquire_async(50)
    t.join(10)
    assert got
    assert got[0].at >= first.at + WINDOW
    assert r.at >= got[0].at  # queued behind the thread
    await lim.aclose()


@pytest.mark.parametrize("fail_open", [False, True])
def test_redis_lost_between_acquire_and_commit(fail_open: bool) -> None:
    with redis_server() as srv:
        c = redis.Redis(
            host=srv.host, port=srv.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        lim = tg.Limiter(tpm=100, window=WINDOW, redis=c, fail_open=fail_open)
        r = lim.acquire(10)
    # The server is gone now.
    if fail_open:
        with capture_logs() as logs:
            r.commit(5)
        assert logs[0]["event"] == "tokenguard.limiter.fail_open"
    else:
        with pytest.raises(tg.LimiterUnavailable):
            r.commit(5)
    assert r.settled
    c.close()


# -- a frozen Redis (SIGSTOP: it accepts connections and never answers) -----------------


@pytest.fixture
def box() -> Iterator[RedisServer]:
    """A server of the test's own, to freeze; thawed before it is stopped."""
    with redis_server() as srv:
        try:
            yield srv
        finally:
            srv.process.send_signal(signal.SIGCONT)


def _freeze(srv: RedisServer) -> None:
    srv.process.send_signal(signal.SIGSTOP)


def _thaw(srv: RedisServer) -> None:
    srv.process.send_signal(signal.SIGCONT)


def _frozen_call(
    lim: tg.Limiter, srv: RedisServer, tokens: int, max_wait: float | None, face: str
) -> tuple[Any, float]:
    """Warm one connection of ``face`` (a thread, or an asyncio task), freeze ``srv``,
    then time ``acquire(tokens, max_wait)``: what it returned or raised, and when."""
    if face == "asyncio":

        async def go() -> tuple[Any, float]:
            try:
                await (await lim.acquire_async(10)).cancel_async()
                _freeze(srv)
                t0 = time.monotonic()
                try:
                    result: Any = await lim.acquire_async(tokens, max_wait=max_wait)
                except tg.TokenGuardError as exc:
                    result = exc
                return result, time.monotonic() - t0
            finally:
                _thaw(srv)
                await lim.aclose()

        return asyncio.run(go())
    lim.acquire(10).cancel()
    _freeze(srv)
    t0 = time.monotonic()
    try:
        result: Any = lim.acquire(tokens, max_wait=max_wait)
    except tg.TokenGuardError as exc:
        result = exc
    finally:
        took = time.monotonic() - t0
        _thaw(srv)
    return result, took


# redis-py's own default socket timeout (5 s in redis-py 8, none before), none at all,
# and one far longer than the caller's max_wait: none of them may hold the caller.
CLIENT_TIMEOUTS = [{}, {"socket_timeout": None}, {"socket_timeout": 30.0}]


@pytest.mark.parametrize("face", ["thread", "asyncio"])
@pytest.mark.parametrize("options", CLIENT_TIMEOUTS, ids=["default", "none", "30s"])
def test_a_frozen_redis_fails_a_caller_by_its_max_wait_plus_the_grace(
    box: RedisServer, face: str, options: dict[str, Any]
) -> None:
    client = redis.Redis(host=box.host, port=box.port, **options)
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key="frozen")
    result, took = _frozen_call(lim, box, 10, 0.3, face)
    assert isinstance(result, tg.LimiterUnavailable)
    assert "did not answer within" in str(result)
    # Given up once max_wait and the grace are over (0.8 s), not after a socket timeout.
    assert 0.3 <= took < 0.3 + GRACE + 1.0
    client.close()


@pytest.mark.parametrize("face", ["thread", "asyncio"])
def test_a_first_connection_to_a_frozen_redis_is_bounded_too(box: RedisServer, face: str) -> None:
    # The kernel still completes the TCP handshake; the client's own handshake (and
    # everything after it) is what never gets an answer.
    client = redis.Redis(host=box.host, port=box.port, socket_timeout=None)
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key="first")
    _freeze(box)
    try:
        t0 = time.monotonic()
        acquiring: Callable[[], Any] = (
            (lambda: asyncio.run(lim.acquire_async(10, max_wait=0.2)))
            if face == "asyncio"
            else (lambda: lim.acquire(10, max_wait=0.2))
        )
        with pytest.raises(tg.LimiterUnavailable):
            acquiring()
        took = time.monotonic() - t0
    finally:
        _thaw(box)
    assert took < 0.2 + GRACE + 1.0
    r = lim.acquire(100, max_wait=0)  # the script never ran: nothing to cancel
    r.cancel()
    client.close()


@pytest.mark.parametrize("face", ["thread", "asyncio"])
@pytest.mark.parametrize("algorithm", ["window", "bucket"])
def test_after_a_thaw_the_request_that_went_unanswered_is_left_and_cancelled(
    box: RedisServer, face: str, algorithm: str
) -> None:
    client = redis.Redis(host=box.host, port=box.port)
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key="k", algorithm=algorithm)
    result, _ = _frozen_call(lim, box, 60, 0.2, face)
    assert isinstance(result, tg.LimiterUnavailable)
    # The script was waiting in the closed connection's buffer: Redis ran it when it
    # woke, and admitted 60 tokens to a caller who had already given up.
    deadline = time.monotonic() + 5
    while int(client.hget("{k}:s", "adm") or 0) < 70 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert int(client.hget("{k}:s", "adm") or 0) == 70
    # The next admission first cancels it: the whole limit is free again, and each
    # reply is read by the request it answers (none is left over in a connection).
    r = lim.acquire(100, max_wait=0)
    assert r.tokens == 100
    r.commit(100)
    with pytest.raises(tg.RateLimitTimeout):
        lim.acquire(1, max_wait=0)
    assert client.zcard("{k}:q") == 0
    client.close()


def test_commit_cancel_observe_and_a_wait_without_max_wait_are_bounded_too(
    box: RedisServer,
) -> None:
    # Without a caller's max_wait a round trip may take the client's socket_timeout (or
    # 5 s when it has none): a frozen Redis still never holds a call for ever.
    client = redis.Redis(host=box.host, port=box.port, socket_timeout=0.4)
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key="settle")
    r1, r2 = lim.acquire(10), lim.acquire(10)
    _freeze(box)
    try:
        calls: list[Callable[[], Any]] = [
            lambda: r1.commit(5),
            lambda: r2.cancel(),
            lambda: lim.observe({"x-ratelimit-remaining-tokens": "50"}),
            lambda: lim.acquire(10),
        ]
        for call in calls:
            t0 = time.monotonic()
            with pytest.raises(tg.LimiterUnavailable):
                call()
            assert time.monotonic() - t0 < 0.4 + 1.0
    finally:
        _thaw(box)
    assert r1.settled
    assert r2.settled
    # The lost cancel is tried again (by id) before the next admission; the lost commit
    # stays charged at its estimate (it ages out with the window).
    r = lim.acquire(90, max_wait=0)
    r.cancel()
    client.close()


def test_redis_timeout_bounds_a_settle_whatever_the_clients_socket_timeout(
    box: RedisServer,
) -> None:
    # A client with no socket timeout would give a commit 5 s against a frozen Redis;
    # redis_timeout= says how long a round trip without a caller's deadline may take.
    client = redis.Redis(host=box.host, port=box.port)
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key="rt", redis_timeout=0.3)
    r = lim.acquire(10)
    _freeze(box)
    try:
        t0 = time.monotonic()
        with pytest.raises(tg.LimiterUnavailable):
            r.commit(5)
        took = time.monotonic() - t0
    finally:
        _thaw(box)
    assert took < 0.3 + 1.0
    client.close()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_a_bad_redis_timeout_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(tg.ConfigurationError, match="redis_timeout"):
        tg.Limiter(tpm=100, redis_timeout=bad)  # type: ignore[arg-type]


def test_fail_open_covers_a_frozen_redis(box: RedisServer) -> None:
    client = redis.Redis(host=box.host, port=box.port)
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key="fo", fail_open=True)
    with capture_logs() as logs:
        result, took = _frozen_call(lim, box, 10, 0.3, "thread")
    assert isinstance(result, tg.Reservation)  # admitted by the local stand-in
    assert took < 0.3 + GRACE + 1.0
    assert [e["event"] for e in logs] == ["tokenguard.limiter.fail_open"]
    client.close()


@pytest.mark.parametrize("face", ["thread", "asyncio"])
def test_scripts_flushed_from_redis_are_sent_again(
    client: redis.Redis, key: str, face: str
) -> None:
    lim = tg.Limiter(tpm=100, window=WINDOW, redis=client, key=key)

    async def twice() -> list[tg.Reservation]:
        try:
            first = await lim.acquire_async(10)
            client.script_flush()
            return [first, await lim.acquire_async(20)]
        finally:
            await lim.aclose()

    if face == "asyncio":
        got = asyncio.run(twice())
    else:
        first = lim.acquire(10)
        client.script_flush()
        got = [first, lim.acquire(20)]
    assert [r.tokens for r in got] == [10, 20]
    assert all(r.at > 0 for r in got)


def _scripts_run(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


@pytest.mark.parametrize("face", ["thread", "asyncio"])
def test_a_waiter_that_times_out_makes_no_round_trip_after_the_poll_at_its_deadline(
    client: redis.Redis, key: str, face: str
) -> None:
    # A reservation in flight could still free the limit, so the waiter waits out its
    # max_wait. Its start is slow (the scripts are flushed: EVALSHA fails, EVAL
    # compiles) and its last poll fast: the limiter must end the wait when that poll
    # left the queue, not poll again and start over until its own clock agrees.
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key=key)
    held = lim.acquire(100)
    client.script_flush()
    before = _scripts_run(client)
    started = time.monotonic()

    async def wait() -> None:
        try:
            await lim.acquire_async(10, max_wait=0.3)
        finally:
            await lim.aclose()

    with pytest.raises(tg.RateLimitTimeout, match="waited max_wait"):
        asyncio.run(wait()) if face == "asyncio" else lim.acquire(10, max_wait=0.3)
    took = time.monotonic() - started
    # The start (EVALSHA refused, then EVAL), lease renewals on the way, the last poll.
    renewals = int(0.3 / 0.5)
    assert _scripts_run(client) - before <= 3 + renewals
    assert client.zcard("{" + key + "}:q") == 0
    assert took < 0.3 + GRACE
    held.cancel()


# Keeps Redis busy for ARGV[1] microseconds: every command sent meanwhile waits.
_BUSY = (
    "local s = redis.call('TIME') local t0 = s[1] * 1e6 + s[2] "
    "while true do local n = redis.call('TIME') "
    "if n[1] * 1e6 + n[2] - t0 > tonumber(ARGV[1]) then break end end return 1"
)


def test_a_slow_first_round_trip_does_not_move_the_deadline(
    redis_srv: RedisServer, client: redis.Redis, key: str
) -> None:
    # Redis is busy for 200 ms as the waiter starts: max_wait still counts from the
    # call, so the waiter must not sleep toward a deadline taken after that reply.
    lim = tg.Limiter(tpm=100, window=100.0, redis=client, key=key)
    held = lim.acquire(100)
    other = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    busy = threading.Thread(target=lambda: other.eval(_BUSY, 0, 200_000))
    busy.start()
    time.sleep(0.02)  # the busy script is running
    with uncollected():
        started = time.monotonic()
        with pytest.raises(tg.RateLimitTimeout, match="waited max_wait"):
            lim.acquire(10, max_wait=0.5)
        took = time.monotonic() - started
    busy.join()
    # A deadline from the first reply put the last poll about 100 ms late (a BLPOP
    # cut one Redis tick short of the later deadline, past the real one).
    assert 0.5 <= took < 0.5 + 0.06
    held.cancel()
    other.close()
