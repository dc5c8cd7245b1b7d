"""Budgets shared through Redis: one budget per key for every process, per calendar day
or month (UTC) or rolling window, with leased holds, against a real ``redis-server``
and, through the guard, the emulator and the real openai SDK (sync and async)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import openai
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis_support import redis_client, redis_server, redis_srv

import tokenguard as tg
from tokenguard._drive import run_sync
from tokenguard._spend._prices import from_pico
from tokenguard._spend._shared import SharedStore
from tokenguard.emulator import Emulator, running

__all__ = ["redis_client", "redis_srv"]

pytestmark = pytest.mark.redis

MODEL = "llama-3.1-8b-instant"
NONE = (-1, -1, -1)


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(model=MODEL, tpm=1_000_000, rpm=10_000, window=1.0) as server:
        yield server


def fresh() -> str:
    return f"tenant-{uuid.uuid4().hex[:12]}"


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def store(client: redis.Redis, key: str, per: str, now: float, lease: float = 300.0) -> SharedStore:
    s = SharedStore(client, key, per, lease)
    s.test_now = now
    return s


def hold(s: SharedStore, caps: tuple[int, int, int], tokens: int, pico: int = 0) -> str:
    hid = uuid.uuid4().hex
    run_sync(s.hold_plan(caps, hid, tokens, pico, "'t'"))
    return hid


def status(s: SharedStore) -> tg.BudgetStatus:
    return run_sync(s.read_plan())


def sent(em: Emulator) -> int:
    return sum(1 for r in em.log if r.endpoint == "chat")


def question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}: what is {i} times {i + 3}?"}]


# -- periods and leases ---------------------------------------------------------------------


def test_a_day_is_a_calendar_day_in_utc(client: redis.Redis) -> None:
    key = fresh()
    s = store(client, key, "day", at("2027-03-09T23:59:59"))
    run_sync(s.settle_plan(hold(s, (1_000, -1, -1), 400), 350, 0))
    st_ = status(s)
    assert (st_.per, st_.tokens, st_.used_tokens, st_.used_requests) == ("day", 1_000, 350, 1)
    assert st_.resets_in == pytest.approx(1.0)
    s.test_now = at("2027-03-10T00:00:00")
    st_ = status(s)
    assert (st_.used_tokens, st_.remaining_tokens, st_.resets_in) == (0, 1_000, 86_400)


@pytest.mark.parametrize(
    ("last_second", "next_month", "days"),
    [
        ("2027-01-31T23:59:59", "2027-02-01T00:00:00", 28),
        ("2028-01-31T23:59:59", "2028-02-01T00:00:00", 29),  # a leap year
        ("2027-12-31T23:59:59", "2028-01-01T00:00:00", 31),  # the year turns
    ],
)
def test_a_month_is_a_calendar_month_in_utc(
    client: redis.Redis, last_second: str, next_month: str, days: int
) -> None:
    s = store(client, fresh(), "month", at(last_second))
    run_sync(s.settle_plan(hold(s, (-1, 10, -1), 5), 5, 0))
    assert status(s).used_requests == 1
    s.test_now = at(next_month)
    st_ = status(s)
    assert (st_.used_requests, st_.remaining_requests) == (0, 10)
    assert st_.resets_in == days * 86_400


def test_a_rolling_window_ages_each_charge_out_after_its_seconds(client: redis.Redis) -> None:
    s = store(client, fresh(), repr(60.0), 1_000.0)
    run_sync(s.settle_plan(hold(s, (100, -1, -1), 60), 60, 0))
    s.test_now = 1_030.0
    run_sync(s.settle_plan(hold(s, (100, -1, -1), 40), 40, 0))
    with pytest.raises(tg.BudgetExceeded) as exc:
        hold(s, (100, -1, -1), 1)
    assert (exc.value.needed, exc.value.remaining) == (1, 0)
    s.test_now = 1_059.0
    assert status(s).resets_in == pytest.approx(1.0)
    s.test_now = 1_060.0  # the first charge is 60 s old: out of the window
    assert status(s).used_tokens == 40
    hold(s, (100, -1, -1), 60)


def test_a_crashed_processs_hold_is_charged_its_estimate_when_its_lease_runs_out(
    client: redis.Redis,
) -> None:
    s = store(client, fresh(), "day", at("2027-05-01T10:00:00"), lease=120)
    crashed = hold(s, (1_000, -1, -1), 300, pico=7_000)
    assert (status(s).reserved_tokens, status(s).used_tokens) == (300, 0)
    s.test_now = at("2027-05-01T10:02:00")
    st_ = status(s)
    assert (st_.reserved_tokens, st_.used_tokens, st_.used_requests) == (0, 300, 1)
    assert st_.spent_usd == from_pico(7_000)
    # A settle that still comes corrects the charge to the usage...
    run_sync(s.settle_plan(crashed, 120, 2_000))
    assert (status(s).used_tokens, status(s).spent_usd) == (120, from_pico(2_000))
    # ... and a release (it never reached the server) takes the estimate back.
    late = hold(s, (1_000, -1, -1), 200)
    s.test_now = at("2027-05-01T10:04:01")
    assert status(s).used_tokens == 320
    run_sync(s.release_plan(late))
    assert (status(s).used_tokens, status(s).used_requests) == (120, 1)


def test_status_of_an_unused_key_is_empty_and_reading_spends_nothing(client: redis.Redis) -> None:
    st_ = tg.budget_status(fresh(), redis=client)
    assert st_.per is None
    assert st_.resets_in is None
    assert (st_.used_tokens, st_.spent_usd) == (0, Decimal(0))
    key = fresh()
    with tg.budget(requests=3, key=key, per="day", redis=client):
        pass
    for _ in range(5):
        tg.budget_status(key, redis=client)
    assert tg.budget_status(key, redis=client).used_requests == 0


# -- the property: no interleaving lets holds together pass a cap -------------------------

TOKENS, REQUESTS, PICO = 1_000, 6, 50_000_000  # $0.00005
CAPS = (TOKENS, REQUESTS, PICO)
LEASE = 300.0


@dataclass
class Ledger:
    """The budget as it must be: usage, holds in flight, holds whose lease ran out."""

    now: float
    tokens: int = 0
    requests: int = 0
    pico: int = 0
    holds: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    late: dict[str, tuple[int, int]] = field(default_factory=dict)

    def expire(self) -> None:
        for hid, (t, p, until) in list(self.holds.items()):
            if until <= self.now:
                del self.holds[hid]
                self.tokens, self.requests, self.pico = (
                    self.tokens + t,
                    self.requests + 1,
                    self.pico + p,
                )
                self.late[hid] = (t, p)

    def reserved(self) -> tuple[int, int, int]:
        return (
            sum(t for t, _, _ in self.holds.values()),
            len(self.holds),
            sum(p for _, p, _ in self.holds.values()),
        )

    def fits(self, tokens: int, pico: int) -> bool:
        rt, rr, rp = self.reserved()
        return (
            self.requests + rr + 1 <= REQUESTS
            and self.tokens + rt + tokens <= TOKENS
            and self.pico + rp + pico <= PICO
        )


HOLD = st.tuples(
    st.just("hold"),
    st.integers(0, 2),
    # Sizes near the caps' halves and edges: uniform small integers rarely pass a cap.
    st.one_of(st.sampled_from([0, 1, 333, 499, 500, 501, 600, 1_000]), st.integers(0, 1_001)),
    st.sampled_from([25_000, 50_000, 80_000]),
)
STEP = st.one_of(
    HOLD,
    HOLD,  # twice as likely: holds in flight together are what the property is about
    st.tuples(st.just("settle"), st.integers(0, 5), st.fractions(0, 1)),
    st.tuples(st.just("release"), st.integers(0, 5)),
    st.tuples(st.just("tick"), st.floats(0, 200)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=30))
@example(steps=[("hold", 0, 600, 25_000), ("hold", 1, 600, 25_000)])  # tokens in flight
@example(steps=[("hold", 0, 1, 25_000)] * 7)  # requests in flight
@example(steps=[("hold", 0, 400, 80_000), ("hold", 2, 400, 80_000)])  # dollars in flight
def test_holds_that_together_exceed_the_budget_never_both_pass(
    client: redis.Redis, steps: list[tuple[Any, ...]]
) -> None:
    key, start = fresh(), at("2027-06-01T00:10:00")
    procs = [store(client, key, "day", start, LEASE) for _ in range(3)]
    ledger = Ledger(start)
    open_: list[tuple[SharedStore, str, int, int]] = []
    for step in steps:
        ledger.expire()
        if step[0] == "tick":
            ledger.now += step[1]
            for p in procs:
                p.test_now = ledger.now
            continue
        if step[0] == "hold":
            proc, tokens, rate = procs[step[1]], step[2], step[3]
            pico = tokens * rate
            expected = ledger.fits(tokens, pico)
            try:
                hid = hold(proc, CAPS, tokens, pico)
            except tg.BudgetExceeded:
                assert not expected
                continue
            assert expected
            ledger.holds[hid] = (tokens, pico, ledger.now + LEASE)
            open_.append((proc, hid, tokens, pico))
        elif open_:
            proc, hid, tokens, pico = open_.pop(step[1] % len(open_))
            if step[0] == "settle":
                actual, actual_pico = int(tokens * step[2]), int(pico * step[2])
                run_sync(proc.settle_plan(hid, actual, actual_pico))
                if hid in ledger.holds:
                    del ledger.holds[hid]
                    ledger.tokens += actual
                    ledger.requests += 1
                    ledger.pico += actual_pico
                elif hid in ledger.late:  # charged its estimate: corrected to the usage
                    est_tokens, est_pico = ledger.late.pop(hid)
                    ledger.tokens += actual - est_tokens
                    ledger.pico += actual_pico - est_pico
            else:
                run_sync(proc.release_plan(hid))
                if ledger.holds.pop(hid, None) is None and hid in ledger.late:
                    est_tokens, est_pico = ledger.late.pop(hid)
                    ledger.tokens -= est_tokens
                    ledger.requests -= 1
                    ledger.pico -= est_pico
        ledger.expire()
        got = status(procs[0])
        rt, rr, rp = ledger.reserved()
        assert (got.used_tokens, got.used_requests, got.spent_usd) == (
            ledger.tokens,
            ledger.requests,
            from_pico(ledger.pico),
        )
        assert (got.reserved_tokens, got.reserved_requests, got.reserved_usd) == (
            rt,
            rr,
            from_pico(rp),
        )
        # Usage is never above its estimate here, so no cap is ever passed.
        assert got.used_tokens + got.reserved_tokens <= TOKENS
        assert got.used_requests + got.reserved_requests <= REQUESTS
        assert got.spent_usd + got.reserved_usd <= from_pico(PICO)


# -- through the guard ----------------------------------------------------------------------


def test_two_processes_share_one_money_budget_through_the_guard(
    client: redis.Redis, em: Emulator
) -> None:
    oa = openai.OpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 50) -> Any:
        return oa.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    key, cap = fresh(), Decimal("0.0001")
    # Two Budget objects on one key stand for two processes: the cap is in Redis.
    a = tg.budget(usd=cap, key=key, per="day", redis=client)
    b = tg.budget(usd=cap, key=key, per="day", redis=client)
    refusals: list[tg.BudgetExceeded] = []
    served = 0
    for i in range(60):
        try:
            with a if i % 2 else b:
                ask(question(i))
            served += 1
        except tg.BudgetExceeded as exc:
            refusals.append(exc)
    assert refusals
    assert all(e.unit == "usd" and "nothing was sent" in str(e) for e in refusals)
    got = tg.budget_status(key, redis=client)
    assert served == sent(em) == got.used_requests
    assert got.spent_usd == a.spent_usd + b.spent_usd <= cap
    assert got.usd == cap
    assert got.reserved_usd == 0


def test_threads_under_one_shared_budget_never_pass_it(client: redis.Redis, em: Emulator) -> None:
    oa = openai.OpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 40) -> Any:
        return oa.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    key = fresh()

    def one(i: int) -> bool:
        with tg.budget(tokens=2_000, key=key, per="day", redis=client):
            try:
                ask(question(i))
            except tg.BudgetExceeded:
                return False
            return True

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(80)))
    got = tg.budget_status(key, redis=client)
    assert got.used_tokens <= 2_000
    assert got.used_requests == sum(results) == sent(em)
    assert not all(results)


async def test_async_calls_share_the_budget_through_the_same_plans(
    client: redis.Redis, em: Emulator
) -> None:
    oa = openai.AsyncOpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    async def ask(messages: Any, model: str = MODEL, max_tokens: int = 40) -> Any:
        return await oa.chat.completions.create(
            messages=messages, model=model, max_tokens=max_tokens
        )

    key = fresh()

    async def one(i: int) -> bool:
        try:
            await ask(question(i))
        except tg.BudgetExceeded:
            return False
        return True

    async with tg.budget(tokens=1_500, requests=20, key=key, per=3_600, redis=client) as b:
        results = await asyncio.gather(*(one(i) for i in range(40)))
    got = tg.budget_status(key, redis=client)
    assert got.per == repr(3_600.0)
    assert got.used_requests == sum(results) == sent(em) == b.requests_used
    assert got.used_tokens == b.used <= 1_500
    assert got.reserved_tokens == 0


def test_redis_down_is_a_clear_error_and_nothing_is_sent(em: Emulator) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    oa = openai.OpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 10) -> Any:
        return oa.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    with (
        tg.budget(tokens=1_000, key=fresh(), per="day", redis=dead) as b,
        pytest.raises(tg.BudgetUnavailable, match="Redis could not be reached"),
    ):
        ask(question(1))
    assert sent(em) == 0
    assert b.reserved == 0
    with pytest.raises(tg.BudgetUnavailable):
        tg.budget_status("anyone", redis=dead)
    assert issubclass(tg.BudgetUnavailable, tg.LimiterUnavailable)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": "t"}, "needs key="),
        ({"key": "t", "per": "day"}, "needs key="),
        ({"key": "", "per": "day", "redis": object()}, "needs key="),
        ({"key": "t", "per": "week", "redis": object()}, "per must be"),
        ({"key": "t", "per": -5, "redis": object()}, "per must be"),
        ({"key": "t", "per": "day", "redis": object(), "lease": 0}, "lease must be"),
    ],
)
def test_a_malformed_shared_budget_is_refused_when_made(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(tg.ConfigurationError, match=match):
        tg.budget(tokens=10, **kwargs)


def test_redis_dying_during_a_call_still_returns_the_answer_and_reports_it(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    oa = openai.OpenAI(base_url=em.base_url, api_key="x")
    with redis_server() as doomed:
        r = redis.Redis(host=doomed.host, port=doomed.port, socket_timeout=1)

        @tg.guard
        def ask(messages: Any, model: str = MODEL, max_tokens: int = 10) -> Any:
            reply = oa.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )
            doomed.process.kill()  # after the hold, before the settle
            doomed.process.wait()
            return reply

        with tg.budget(tokens=1_000, key=fresh(), per="day", redis=r) as b:
            reply = ask(question(1))
    assert reply.usage.total_tokens == b.used  # this block still counted it
    [failed] = [e for e in events if isinstance(e, tg.events.GuardSettleFailed)]
    assert (failed.during, failed.served) == ("budget", True)
    assert "Redis could not be reached" in failed.error


def test_a_months_state_can_be_read_all_month_after_its_last_call(client: redis.Redis) -> None:
    key = fresh()
    s = store(client, key, "month", at("2027-07-02T08:00:00"))
    run_sync(s.settle_plan(hold(s, (5_000, -1, -1), 100), 90, 0))
    ttl = client.ttl(f"{{tokenguard:budget:{key}}}:conf")
    assert ttl >= (at("2027-08-01T00:00:00") - at("2027-07-02T08:00:00"))
    s.test_now = at("2027-07-31T23:00:00")
    assert (status(s).per, status(s).used_tokens) == ("month", 90)


def test_without_the_redis_extra_a_shared_budget_says_how_to_get_it() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import tokenguard as tg\n"
        "tg.budget(tokens=1, key='t', per='day', redis=object())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "ConfigurationError" in done.stderr
    assert "pip install 'groq-tokenguard[redis]'" in done.stderr
