"""Reliability under faults, tried as a new user would: the emulator restarted mid-run,
Redis killed and restarted mid-run, a server slower than the window, a server that bills
more than any client can count, and the wall clock jumping. Every test captures every
event and structlog line and checks that none carries the planted content or key."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from reliability_support import (
    PLANTED_CONTENT,
    PLANTED_KEY,
    Outcome,
    RestartableEmulator,
    RestartableRedis,
    TrackingLimiter,
    hammer,
    secret_trap,
)

import tokenguard as tg
from tokenguard.emulator import EmulatorConfig, builtin_model, running

pytestmark = pytest.mark.reliability

MODEL = "llama-3.1-8b-instant"
TPM = 3_000
WINDOW = 1.0
# Plenty of requests: the token limit is the one under test.
RPM = 100_000
# For the restarts: traffic must keep flowing through the outage rather than queue in the
# limiter, so the limit is high and each answer takes a few ms.
BUSY_TPM = 20_000
BUSY_LATENCY = 0.02


def ask(n: int = 0) -> Any:
    return [
        {"role": "system", "content": f"Answer briefly. {PLANTED_CONTENT}"},
        {"role": "user", "content": f"Question {n}: what is {PLANTED_CONTENT} about?"},
    ]


def errors(outcomes: list[Outcome]) -> list[BaseException]:
    return [o.error for o in outcomes if o.error is not None]


def served(outcomes: list[Outcome]) -> int:
    return sum(o.error is None for o in outcomes)


def statuses(log: list[Any]) -> list[int]:
    return [r.status for r in log if r.endpoint == "chat"]


# -- the emulator restarted mid-run -----------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 3])
def test_an_emulator_restarted_mid_run(max_retries: int) -> None:
    """Callers see the SDK's own connection error unchanged (max_retries=0), or nothing at
    all when the client may retry (the guard retries with the SDK's backoff); nothing is
    leaked and the restarted server never refuses a request."""
    spec = builtin_model(MODEL).replace(tpm=BUSY_TPM, rpm=RPM)
    config = EmulatorConfig(models=(spec,), window=WINDOW, refund_unused=True, latency=BUSY_LATENCY)
    server = RestartableEmulator(config)
    lim = TrackingLimiter(tpm=BUSY_TPM, rpm=RPM, window=WINDOW)
    client = tg.instrument(
        openai.OpenAI(base_url=server.base_url, api_key=PLANTED_KEY, max_retries=max_retries),
        limiter=lim,
        max_wait=10.0,
    )

    def call() -> None:
        reply: Any = client.chat.completions.create(model=MODEL, messages=ask(), max_tokens=40)
        assert reply.usage.total_tokens > 0

    def faults() -> None:
        time.sleep(0.4)
        server.stop()
        time.sleep(0.3)
        server.start()
        time.sleep(0.6)

    try:
        with secret_trap() as trap:
            outcomes = hammer(call, threads=6, script=faults)
    finally:
        server.close()
    errs = errors(outcomes)
    if max_retries == 0:
        assert errs, "the restart was not seen by any caller"
        assert {type(e) for e in errs} == {openai.APIConnectionError}
    else:
        assert errs == []
        assert "tokenguard.guard.retry" in trap.names()
    print(
        f"FIGURES emulator-restart max_retries={max_retries}: {len(statuses(server.log()))} "
        f"requests, {served(outcomes)} served, {len(errs)} connection errors to callers, "
        f"{len(lim.reservations)} reservations, {len(lim.leaked())} leaked"
    )
    assert served(outcomes) > 20
    assert lim.leaked() == []
    assert 429 not in statuses(server.log())  # no over-admission, before or after
    assert server.restarts == 1


# -- Redis killed and restarted mid-run -------------------------------------------------


@pytest.fixture
def redis_box() -> Iterator[RestartableRedis]:
    box = RestartableRedis()
    yield box
    box.close()


@pytest.mark.redis
@pytest.mark.parametrize("fail_open", [False, True])
def test_redis_killed_and_restarted_mid_run(redis_box: RestartableRedis, fail_open: bool) -> None:
    """Without fail_open the callers get LimiterUnavailable (promptly, nothing sent); with
    it they keep working on a local window; after the restart every call goes through the
    shared limiter again; nothing is leaked, nothing hangs."""
    lim = TrackingLimiter(
        tpm=BUSY_TPM,
        rpm=RPM,
        window=WINDOW,
        redis=redis_box.client(),
        key=f"rel-{fail_open}",
        fail_open=fail_open,
        lease=0.5,
    )
    with running(
        model=MODEL,
        tpm=BUSY_TPM,
        rpm=RPM,
        window=WINDOW,
        refund_unused=True,
        latency=BUSY_LATENCY,
    ) as em:
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0),
            limiter=lim,
            max_wait=3.0,
        )
        restarted = [float("inf")]

        def call() -> None:
            client.chat.completions.create(model=MODEL, messages=ask(), max_tokens=40)

        def faults() -> None:
            time.sleep(0.4)
            redis_box.kill()
            time.sleep(0.6)
            redis_box.start()
            restarted[0] = time.monotonic()
            time.sleep(1.2)

        with secret_trap() as trap:
            outcomes = hammer(call, threads=6, script=faults)
        log = em.log
    errs = errors(outcomes)
    print(
        f"FIGURES redis-restart fail_open={fail_open}: {len(statuses(log))} requests "
        f"({statuses(log).count(429)} 429s), {served(outcomes)} served, {len(errs)} "
        f"LimiterUnavailable, {len(lim.reservations)} reservations, {len(lim.leaked())} leaked, "
        f"{trap.names().count('tokenguard.guard.settle_failed')} settled without Redis"
    )
    if fail_open:
        assert errs == []
        assert "tokenguard.limiter.fail_open" in trap.names()
    else:
        assert errs, "the outage was not seen by any caller"
        assert {type(e) for e in errs} == {tg.LimiterUnavailable}
        # Refused callers were refused promptly, not after their max_wait.
        assert max(o.ended - o.started for o in outcomes if o.error is not None) < 3.0
    after = [o for o in outcomes if o.started > restarted[0] + 0.6]
    assert after, "no call after the restart"
    assert errors(after) == []  # recovered: every later call served through Redis
    assert lim.leaked() == []
    ok_at_server = len([r for r in log if r.endpoint == "chat" and r.status == 200])
    # A request whose response came back while Redis was down was served but its commit
    # could not reach Redis: its caller still got the response (a settle_failed warning
    # says so). Every refusal happened before anything was sent: no answer was lost.
    assert ok_at_server == served(outcomes)
    if not fail_open:
        assert all(e.served for e in trap.events if isinstance(e, tg.events.GuardSettleFailed))


@pytest.mark.redis
@pytest.mark.parametrize("fail_open", [False, True])
def test_after_a_redis_restart_the_limit_holds_again_within_one_window(
    redis_box: RestartableRedis, fail_open: bool
) -> None:
    """A tight limit that binds before and after the outage, with no headers (a decorated
    function: only the limiter protects the server). The restarted Redis has forgotten
    the window (and a fail-open local window starts empty), so the server may refuse
    requests in the first window after either switch (the guard waits them out); from one
    window after the restart on, nothing is refused."""
    tpm = 1_500
    lim = TrackingLimiter(
        tpm=tpm,
        rpm=RPM,
        window=WINDOW,
        redis=redis_box.client(),
        key=f"rel-tight-{fail_open}",
        fail_open=fail_open,
        lease=0.5,
    )
    with running(model=MODEL, tpm=tpm, rpm=RPM, window=WINDOW, refund_unused=True) as em:
        raw = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)

        @tg.guard(limiter=lim, max_wait=5.0)
        def guarded(messages: Any, model: str = MODEL, max_tokens: int = 40) -> Any:
            return raw.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        restarted = [float("inf")]

        def faults() -> None:
            time.sleep(0.8)
            redis_box.kill()
            time.sleep(0.3)
            redis_box.start()
            restarted[0] = time.monotonic()
            time.sleep(2.5)

        with secret_trap():
            outcomes = hammer(lambda: guarded(ask()), threads=4, script=faults)
        log = [r for r in em.log if r.endpoint == "chat"]
    # Failing open, the limiter goes back to Redis up to a lease after the restart (it
    # stays local for a lease after each failure): the first window after that switch
    # may see refusals too (the restarted Redis holds a full bucket).
    settled_at = restarted[0] + WINDOW + (0.5 if fail_open else 0.0)
    refused = len([r for r in log if r.status == 429])
    print(f"FIGURES redis-restart-tight fail_open={fail_open}: {len(log)} requests, {refused} 429s")
    later = [r for r in log if r.t > settled_at]
    assert len([r for r in later if r.status == 200]) > 10  # the limit was binding
    assert [r for r in later if r.status == 429] == []
    allowed: set[type] = set() if fail_open else {tg.LimiterUnavailable}
    assert {type(e) for e in errors(outcomes)} <= allowed
    assert errors([o for o in outcomes if o.started > restarted[0]]) == []
    assert lim.leaked() == []


@pytest.mark.redis
async def test_async_callers_get_limiter_unavailable_while_redis_is_down(
    redis_box: RestartableRedis,
) -> None:
    lim = TrackingLimiter(tpm=TPM, rpm=RPM, window=WINDOW, redis=redis_box.client(), key="rel-a")
    with running(model=MODEL, tpm=TPM, rpm=RPM, window=WINDOW, refund_unused=True) as em:
        client = tg.instrument(
            openai.AsyncOpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0),
            limiter=lim,
            max_wait=3.0,
        )

        async def call() -> Any:
            return await client.chat.completions.create(model=MODEL, messages=ask(), max_tokens=40)

        with secret_trap():
            first = await asyncio.gather(*(call() for _ in range(20)), return_exceptions=True)
            redis_box.kill()
            t0 = time.monotonic()
            down = await asyncio.gather(*(call() for _ in range(20)), return_exceptions=True)
            down_s = time.monotonic() - t0
            redis_box.start()
            await lim.aclose()  # the loop's connections to the dead server
            after = await asyncio.gather(*(call() for _ in range(20)), return_exceptions=True)
        sent = len([r for r in em.log if r.endpoint == "chat"])
        await client.close()
    assert not [x for x in first if isinstance(x, BaseException)]
    assert all(isinstance(x, tg.LimiterUnavailable) for x in down)
    assert down_s < 3.0  # refused at once, not after max_wait
    assert not [x for x in after if isinstance(x, BaseException)]
    assert sent == 40  # nothing was sent while the limiter was unreachable
    assert lim.leaked() == []


# -- a slow server ---------------------------------------------------------------------


def test_a_server_slower_than_the_window_serves_every_caller() -> None:
    window, latency = 0.3, 0.5
    with running(
        model=MODEL, tpm=1_500, rpm=RPM, window=window, latency=latency, refund_unused=True
    ) as em:
        lim = TrackingLimiter(tpm=1_500, rpm=RPM, window=window)
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0),
            limiter=lim,
        )
        done: list[Any] = []

        def worker(i: int) -> None:
            for j in range(3):
                done.append(
                    client.chat.completions.create(model=MODEL, messages=ask(i + j), max_tokens=30)
                )

        with secret_trap():
            pool = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
            for t in pool:
                t.start()
            for t in pool:
                t.join(60)
        log = em.log
    assert len(done) == 36
    assert 429 not in statuses(log)
    assert lim.leaked() == []


def test_a_client_timeout_shorter_than_the_server_reaches_the_caller_unchanged() -> None:
    with running(model=MODEL, tpm=TPM, rpm=RPM, window=WINDOW, latency=0.6) as em:
        lim = TrackingLimiter(tpm=TPM, rpm=RPM, window=WINDOW)
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0, timeout=0.2),
            limiter=lim,
            max_wait=5.0,
        )
        with secret_trap() as trap, pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model=MODEL, messages=ask(), max_tokens=30)
    assert lim.leaked() == []
    (event,) = [e.fields() for e in trap.events if e.name == "tokenguard.guard.request"]
    assert event["error.type"] == "timeout"
    # It may have reached the server: the limiter keeps the estimate (not refunded).
    assert [r.settled for _, r in lim.reservations] == [True]


# -- a server that bills more than estimated --------------------------------------------


@pytest.mark.parametrize("mode", ["instrument", "decorator"])
def test_a_server_billing_more_than_counted_costs_callers_nothing(mode: str) -> None:
    """The server adds 150 prompt tokens no client can count: the first estimates are
    short, the guard reconciles to the billed usage, absorbs any 429 it causes, and every
    caller is served."""
    hidden = 150
    with running(
        model=MODEL,
        tpm=TPM,
        rpm=RPM,
        window=WINDOW,
        refund_unused=True,
        hidden_prompt_tokens=hidden,
    ) as em:
        lim = TrackingLimiter(tpm=TPM, rpm=RPM, window=WINDOW)
        raw = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)
        if mode == "instrument":
            client = tg.instrument(raw, limiter=lim)

            def send(i: int) -> Any:
                return client.chat.completions.create(model=MODEL, messages=ask(i), max_tokens=40)
        else:

            @tg.guard(limiter=lim)
            def guarded(messages: Any, model: str = MODEL, max_tokens: int = 40) -> Any:
                return raw.chat.completions.create(
                    messages=messages, model=model, max_tokens=max_tokens
                )

            def send(i: int) -> Any:
                return guarded(ask(i))

        replies: list[Any] = []

        def worker(i: int) -> None:
            for j in range(6):
                replies.append(send(i * 10 + j))

        with secret_trap() as trap:
            pool = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            for t in pool:
                t.start()
            for t in pool:
                t.join(60)
        log = [r for r in em.log if r.endpoint == "chat"]
    assert len(replies) == 48  # every caller served, no error reached anyone
    counted = tg.count_tokens(ask(0), model=MODEL)
    assert replies[0].usage.prompt_tokens >= counted + hidden - 5
    requests = [e.fields() for e in trap.events if e.name == "tokenguard.guard.request"]
    assert len(requests) == 48
    # The limiter was charged what the server billed, not the short estimate.
    for e in requests:
        assert e["tokenguard.limit_tokens"] == (
            e["gen_ai.usage.input_tokens"] + e["gen_ai.usage.output_tokens"]
        )
        assert e["tokenguard.limit_tokens"] > e["tokenguard.estimated_tokens"] - 40
    assert lim.leaked() == []
    refused = [r for r in log if r.status == 429]
    print(f"FIGURES overbilling {mode}: {len(log)} requests, {len(refused)} 429s absorbed")
    # Each admission is short by 150 tokens until its commit, so some 429s come back
    # (about a fifth of the requests here); the guard absorbs them, and they stay few:
    # no retry storm.
    assert len(refused) <= len(log) // 3


# -- the wall clock jumps ---------------------------------------------------------------


class JumpingWallClock:
    """A ``time.time`` that jumps an hour forward, then a day back, on alternate reads."""

    def __init__(self) -> None:
        self.real = time.time
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        offset = 3600.0 if self.reads % 2 else -86_400.0
        return self.real() + offset


def test_wall_clock_jumps_do_not_move_the_in_process_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jumping = JumpingWallClock()
    monkeypatch.setattr(time, "time", jumping)
    lim = tg.Limiter(tpm=100, window=3600.0)
    r = lim.acquire(60, max_wait=0)
    r.commit(60)
    time.time()  # an hour forward: a wall-clock window would have expired
    with pytest.raises(tg.RateLimitTimeout):
        lim.acquire(50, max_wait=0)
    time.time()  # a day back: a wall-clock window would hold the charge for a day more
    r2 = lim.acquire(40, max_wait=0)  # what is left of the window is still admitted
    assert 0 <= r2.waited < 1.0
    r2.cancel()


def test_the_guard_through_jumping_wall_clock_serves_every_call_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running(model=MODEL, tpm=TPM, rpm=RPM, window=60.0, refund_unused=True) as em:
        lim = TrackingLimiter(tpm=TPM, rpm=RPM, window=60.0)
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0),
            limiter=lim,
            max_wait=2.0,
        )
        jumping = JumpingWallClock()
        monkeypatch.setattr(time, "time", jumping)
        with secret_trap() as trap:
            for i in range(20):
                client.chat.completions.create(model=MODEL, messages=ask(i), max_tokens=20)
        log = em.log
    assert jumping.reads > 0  # the wall clock was read (by the SDK and the server)
    requests = [e.fields() for e in trap.events if e.name == "tokenguard.guard.request"]
    assert len(requests) == 20
    assert all(0 <= e["tokenguard.wait_s"] < 1.0 for e in requests)
    assert all(0 <= e["tokenguard.duration_s"] < 5.0 for e in requests)
    assert 429 not in statuses(log)
    assert lim.leaked() == []


# -- Redis frozen (accepts connections, never answers) ----------------------------------


def _acquire_in_thread(lim: tg.Limiter, max_wait: float) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        t0 = time.monotonic()
        try:
            lim.acquire(10, max_wait=max_wait).cancel()
            out.append(("admitted", time.monotonic() - t0))
        except Exception as exc:
            out.append((exc, time.monotonic() - t0))

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.redis
def test_a_frozen_redis_gives_limiter_unavailable_within_the_clients_socket_timeout(
    redis_box: RestartableRedis,
) -> None:
    client = redis_box.client()  # socket_timeout=2.0
    lim = tg.Limiter(tpm=TPM, window=WINDOW, redis=client, key="frozen")
    lim.acquire(10).commit(10)
    redis_box.freeze()
    try:
        thread, out = _acquire_in_thread(lim, max_wait=0.5)
        thread.join(10)
    finally:
        redis_box.thaw()
    ((result, took),) = out
    assert isinstance(result, tg.LimiterUnavailable)
    assert took < 5.0


@pytest.mark.redis
@pytest.mark.parametrize("face", ["thread", "asyncio"])
def test_a_frozen_redis_does_not_hold_a_caller_past_max_wait(
    redis_box: RestartableRedis, face: str
) -> None:
    """A ``redis.Redis()`` at its defaults (no socket timeout before redis-py 8, 5 s
    since): the caller with ``max_wait=1`` gets LimiterUnavailable once its wait and the
    grace are over; after SIGCONT the limiter works again and nothing is left charged."""
    import redis

    from tokenguard.limiter._redis import GRACE

    client = redis.Redis(port=redis_box.port)
    lim = TrackingLimiter(tpm=TPM, window=60.0, redis=client, key=f"frz-{face}")
    max_wait = 1.0

    async def in_a_task() -> tuple[Any, float]:
        try:
            (await lim.acquire_async(10)).cancel()
            redis_box.freeze()
            t0 = time.monotonic()
            try:
                (await lim.acquire_async(10, max_wait=max_wait)).cancel()
                return "admitted", time.monotonic() - t0
            except Exception as exc:
                return exc, time.monotonic() - t0
        finally:
            redis_box.thaw()
            await lim.aclose()

    if face == "asyncio":
        result, took = asyncio.run(in_a_task())
    else:
        lim.acquire(10).cancel()
        redis_box.freeze()
        try:
            thread, out = _acquire_in_thread(lim, max_wait=max_wait)
            thread.join(max_wait + GRACE + 5.0)
            done = list(out)
        finally:
            redis_box.thaw()
            thread.join(10)
        assert done, "the caller was still blocked long after its max_wait"
        ((result, took),) = done
    assert isinstance(result, tg.LimiterUnavailable)
    assert took < max_wait + GRACE + 1.0
    # Redis ran the unanswered request when it woke; the next admission cancels it
    # first, so the whole limit is there again.
    r = lim.acquire(TPM, max_wait=0)
    r.cancel()
    assert lim.leaked() == []
    print(
        f"FIGURES frozen redis ({face}): max_wait {max_wait}s, LimiterUnavailable after "
        f"{took:.2f}s, whole limit admitted after SIGCONT, leaks 0"
    )
    client.close()
