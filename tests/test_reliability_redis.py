"""Redis faults, tried as a new user would, against a real redis-server: its clock
jumping back and forth, a restart that forgets everything, an outage with fail_open
on several processes, and a waiter's process SIGKILLed at the head of the queue.

Redis's clock is made to lie through the backend's skew (``RedisBackend._skew``, added
to Redis ``TIME`` inside every script, the same code path a stepped host clock takes);
processes are real (``python -c`` workers on the same key)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from fake_clock import FakeClock
from reliability_support import RestartableRedis

import tokenguard as tg
from tokenguard.limiter._redis import GRACE, WAITER_LEASE

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

# A worker process on the key: acquires TOKENS (blocking), says so, then idles.
WORKER = """
import sys, time, redis, tokenguard as tg
port, key, tpm, window, tokens = sys.argv[1:6]
lim = tg.Limiter(tpm=int(tpm), window=float(window), redis=redis.Redis(port=int(port)), key=key)
print("ready", flush=True)
lim.acquire(int(tokens))
print("admitted", flush=True)
time.sleep(60)
"""


@pytest.fixture
def box() -> Iterator[RestartableRedis]:
    b = RestartableRedis()
    yield b
    b.close()


def limiter(box: RestartableRedis, key: str, **options: object) -> tg.Limiter:
    return tg.Limiter(redis=box.client(), key=key, **options)  # type: ignore[arg-type]


def skew(lim: tg.Limiter, seconds: float) -> None:
    lim._backend._skew = seconds  # type: ignore[attr-defined]


def drain_count(lim: tg.Limiter, step: int, budget: float) -> int:
    """Tokens admitted at once (max_wait=0) in ``budget`` seconds, ``step`` at a time."""
    got = 0
    end = time.monotonic() + budget
    while time.monotonic() < end:
        try:
            lim.acquire(step, max_wait=0)
        except tg.RateLimitTimeout:
            time.sleep(0.05)
            continue
        got += step
    return got


# -- Redis's clock jumps ---------------------------------------------------------------


def test_a_redis_clock_stepping_back_neither_holds_past_max_wait_nor_stalls(
    box: RestartableRedis,
) -> None:
    """60 s back while two callers wait for a drained bucket (refill 2 s): the one with
    max_wait=1 is refused by its own clock; the other is admitted when the refill is
    due, not 60 s later."""
    lim = limiter(box, "back", tpm=100, window=2.0)
    lim.acquire(100).commit(100)
    results: dict[str, tuple[str, float]] = {}

    def wait(name: str, max_wait: float | None) -> None:
        started = time.monotonic()
        try:
            lim.acquire(100, max_wait=max_wait)
            results[name] = ("admitted", time.monotonic() - started)
        except tg.RateLimitTimeout:
            results[name] = ("refused", time.monotonic() - started)

    first = threading.Thread(target=wait, args=("unbounded", None))
    first.start()
    time.sleep(0.2)
    skew(lim, -60.0)
    second = threading.Thread(target=wait, args=("bounded", 1.0))
    second.start()
    first.join(70)
    second.join(70)
    print(f"FIGURES redis-clock-back: {results}")
    assert results["bounded"][0] == "refused"
    assert results["bounded"][1] <= 1.0 + GRACE + 0.5
    assert results["unbounded"][0] == "admitted"
    assert 1.5 <= results["unbounded"][1] <= 4.0


def test_a_redis_clock_stepping_forward_refills_only_what_time_earned(
    box: RestartableRedis,
) -> None:
    """60 s forward right after the bucket was drained (limit 100 per 10 s): the next
    second admits about one second's refill (10) plus the clock's slack, not the full
    bucket; a full limit more comes only as time really passes."""
    lim = limiter(box, "fwd", tpm=100, window=10.0)
    lim.acquire(100).commit(100)
    skew(lim, 60.0)
    got = drain_count(lim, 5, 1.0)
    print(f"FIGURES redis-clock-forward: {got} tokens admitted in the second after (limit 100)")
    # One second of refill (10), the slack a round trip may take (0.25 s), and rounding.
    assert got <= 30


def test_a_jump_back_then_forward_keeps_the_rate(box: RestartableRedis) -> None:
    """The time Redis scripts use never goes back and never outruns this process's own
    clock: over 3 s of jumps (-30 s, +45 s) the limit's rate holds (100 per 2 s)."""
    lim = limiter(box, "both", tpm=100, window=2.0)
    lim.acquire(100).commit(100)
    started = time.monotonic()
    got = drain_count(lim, 10, 1.0)
    skew(lim, -30.0)
    got += drain_count(lim, 10, 1.0)
    skew(lim, 15.0)
    got += drain_count(lim, 10, 1.0)
    elapsed = time.monotonic() - started
    print(f"FIGURES redis-clock-both: {got} tokens in {elapsed:.2f}s (rate 50/s)")
    assert got <= 50 * elapsed + 50 + 10
    assert got >= 50 * (elapsed - 1.5)  # no stall after the step back


# -- a restart without persistence -----------------------------------------------------


def test_a_restarted_redis_starts_the_bucket_empty_not_full(box: RestartableRedis) -> None:
    """Drained, then Redis restarts with nothing: the next window admits what refills
    (the server still counts what went before), not a fresh full bucket."""
    lim = limiter(box, "restart", tpm=100, window=5.0)
    lim.acquire(100).commit(100)
    box.kill()
    box.start()
    restarted = time.monotonic()
    got = drain_count(lim, 10, 1.0)
    elapsed = time.monotonic() - restarted
    print(f"FIGURES redis-restart-empty: {got} tokens in {elapsed:.2f}s after the restart")
    assert got <= 20 * elapsed + 20  # the refill (20/s) and one step of slack
    r = lim.acquire(60, max_wait=5.0)
    assert r.waited > 1.0  # still refilling


def test_a_new_key_still_starts_full(box: RestartableRedis) -> None:
    lim = limiter(box, "fresh", tpm=100, window=60.0)
    assert drain_count(lim, 50, 0.2) == 100


# -- fail_open shares the limit ----------------------------------------------------------


def _workers(
    box: RestartableRedis, key: str, n: int, tpm: int, window: float, tokens: int
) -> list[subprocess.Popen[str]]:
    procs = []
    for _ in range(n):
        p = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(box.port), key, str(tpm), str(window), str(tokens)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
    return procs


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.parametrize("share", [None, 0.5])
def test_fail_open_shares_the_limit_among_the_processes_seen(
    box: RestartableRedis, share: float | None
) -> None:
    """Three other processes used the key; Redis dies: this process goes on alone with a
    quarter of the limit (or the share it was given), not the whole limit."""
    key = f"share-{share}"
    procs = _workers(box, key, 3, 400, 60.0, 1)
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
            assert p.stdout.readline().strip() == "admitted"
        lim = limiter(box, key, tpm=400, window=60.0, fail_open=True, fail_open_share=share)
        lim.acquire(1).commit(1)
        assert lim._backend.peers == 4  # type: ignore[attr-defined]
        box.kill()
        got = drain_count(lim, 10, 0.5)
    finally:
        _stop(procs)
    print(f"FIGURES fail-open-share share={share}: {got} tokens admitted alone (limit 400)")
    assert got == (100 if share is None else 200)


def test_a_request_above_the_share_still_goes_when_the_share_is_full(
    box: RestartableRedis,
) -> None:
    lim = limiter(box, "big", tpm=400, window=60.0, fail_open=True, fail_open_share=0.25)
    lim.acquire(1).commit(1)
    box.kill()
    r = lim.acquire(300, max_wait=1.0)  # waits for the whole share (100): free now
    assert r.waited < 1.0


def _fake_drain(lim: tg.Limiter, clock: FakeClock, seconds: float, step: int) -> int:
    """Tokens admitted over ``seconds`` of the fake clock, ``step`` at a time, each call
    waiting as long as the limiter holds it (the fake sleep advances the clock)."""
    got = 0
    end = clock.now + seconds
    while clock.now < end:
        lim.acquire(step).commit(step)
        got += step
    return got


@pytest.mark.parametrize("lease", [1.0, 10.0])
def test_fail_open_keeps_one_local_bucket_while_redis_stays_down(
    box: RestartableRedis, clock: FakeClock, lease: float
) -> None:
    """Redis killed for good (6,000 per 60 s, share 1.0): over 35 s, several leases, the
    local bucket admits its fill and then the limit's rate (6,000 + 35 s x 100), not a
    fresh full bucket at every failed retry of Redis (before: 28,000)."""
    lim = limiter(
        box,
        f"outage-{lease}",
        tpm=6000,
        window=60.0,
        fail_open=True,
        fail_open_share=1.0,
        lease=lease,
        clock=clock,
        sleep=clock.sleep,
    )
    box.kill()
    got = _fake_drain(lim, clock, 35.0, 1000)
    print(f"FIGURES fail-open-outage lease={lease}: {got} tokens in 35 s (limit 6000 per 60 s)")
    assert got <= 6000 + 35 * 100 + 1000  # one step of rounding


def test_fail_open_starts_a_fresh_share_only_after_redis_came_back(
    box: RestartableRedis, clock: FakeClock
) -> None:
    """An outage drains the local bucket; Redis comes back and answers; a second outage
    starts with a fresh, full share (the fallback of the first is gone with it)."""
    lim = limiter(
        box,
        "again",
        tpm=1000,
        window=60.0,
        fail_open=True,
        fail_open_share=1.0,
        lease=1.0,
        clock=clock,
        sleep=clock.sleep,
    )
    box.kill()
    for _ in range(10):  # the share, full at the switch
        lim.acquire(100, max_wait=0).commit(100)
    clock.advance(2.0)  # past the lease: the next call tries Redis again, and fails
    with pytest.raises(tg.RateLimitTimeout):
        lim.acquire(500, max_wait=0)  # the same bucket: 33 tokens refilled, not 1000
    box.start()
    clock.advance(2.0)
    lim.acquire(10).commit(10)  # served by Redis: the outage is over
    box.kill()
    clock.advance(2.0)
    lim.acquire(1000, max_wait=0).commit(1000)  # a new outage: a fresh, full share


# -- a waiter's process SIGKILLed at the head of the queue -----------------------------


def test_a_killed_waiter_leaves_the_head_of_the_queue_within_its_lease(
    box: RestartableRedis,
) -> None:
    """A worker process waits at the head (100 tokens: 10 s of refill) and is SIGKILLed;
    the caller behind it (10 tokens) goes within WAITER_LEASE, not after the ghost's
    10 s or the limiter's 10 s lease."""
    key = "ghost"
    lim = limiter(box, key, tpm=100, window=10.0)
    lim.acquire(100).commit(100)
    (worker,) = _workers(box, key, 1, 100, 10.0, 100)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        client = box.client()
        deadline = time.monotonic() + 20
        while client.zcard("{ghost}:q") == 0:
            assert time.monotonic() < deadline, "the worker never queued"
            time.sleep(0.02)
        got: list[float] = []
        behind = threading.Thread(target=lambda: got.append(lim.acquire(10).waited))
        behind.start()
        time.sleep(0.3)
        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        behind.join(30)
        recovered = time.monotonic() - killed
    finally:
        _stop([worker])
    print(f"FIGURES dead-waiter: the caller behind went {recovered:.2f}s after the kill")
    assert got
    assert recovered <= WAITER_LEASE + 1.0
