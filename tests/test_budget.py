"""Budgets: nesting, all-or-nothing holds, settling, contextvars across tasks and threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard._budget import open_budgets, reserve, room


def test_a_hold_that_fits_is_charged_the_reported_usage() -> None:
    with tg.budget(tokens=1000) as b:
        h = reserve(300)
        assert (b.used, b.reserved, b.remaining) == (0, 300, 700)
        h.commit(120)
        assert (b.used, b.reserved, b.remaining) == (120, 0, 880)
        assert b.requests_used == 1


def test_a_call_that_does_not_fit_raises_before_anything_is_held() -> None:
    with tg.budget(tokens=500, name="batch") as b:
        reserve(400)
        with pytest.raises(tg.BudgetExceeded, match="'batch'") as exc:
            reserve(101)
        assert (exc.value.needed, exc.value.remaining, exc.value.unit) == (101, 100, "tokens")
        assert b.reserved == 400
        assert "nothing was sent" in str(exc.value)


def test_request_caps_count_calls_in_flight() -> None:
    with tg.budget(requests=2) as b:
        a = reserve(10)
        reserve(10)
        with pytest.raises(tg.BudgetExceeded) as exc:
            reserve(0)
        assert exc.value.unit == "requests"
        a.cancel()
        assert b.remaining_requests == 1
        reserve(0)


def test_nested_budgets_are_all_charged_or_none() -> None:
    with tg.budget(tokens=1000) as outer:
        with tg.budget(tokens=100) as inner:
            assert room() == 100
            with pytest.raises(tg.BudgetExceeded):
                reserve(150)
            assert outer.reserved == 0  # the outer budget was not charged either
            reserve(60).commit(50)
        assert (outer.used, inner.used) == (50, 50)
        assert room() == 950


def test_cancel_gives_everything_back_and_settling_twice_is_a_no_op() -> None:
    with tg.budget(tokens=100) as b:
        h = reserve(80)
        h.cancel()
        h.commit(80)
        assert (b.used, b.reserved, b.requests_used) == (0, 0, 0)


def test_entering_the_same_budget_twice_does_not_charge_twice() -> None:
    b = tg.budget(tokens=100)
    with b, b:
        assert open_budgets() == (b,)
        reserve(10).commit(10)
    assert b.used == 10
    assert open_budgets() == ()


def test_no_budget_means_no_room_limit_and_a_settled_hold() -> None:
    assert room() is None
    h = reserve(10**9)
    assert h.settled


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_caps_are_configuration_errors(bad: object) -> None:
    with pytest.raises(tg.ConfigurationError, match="tokens"):
        tg.budget(tokens=bad)  # type: ignore[arg-type]


async def test_async_with_and_tasks_inherit_the_budget() -> None:
    async with tg.budget(tokens=1000) as b:

        async def call(n: int) -> None:
            h = reserve(n)
            await asyncio.sleep(0)
            h.commit(n // 2)

        await asyncio.gather(*(call(100) for _ in range(10)))
    assert (b.used, b.reserved, b.requests_used) == (500, 0, 10)


def test_threads_need_carry_and_then_share_the_budget() -> None:
    seen: list[int] = []
    with tg.budget(tokens=10_000) as b, ThreadPoolExecutor(4) as pool:
        seen.extend(pool.map(lambda _: len(open_budgets()), range(4)))

        def call(n: int) -> None:
            reserve(n).commit(n)

        list(pool.map(tg.carry(call), [100] * 20))
    assert seen == [0, 0, 0, 0]
    assert b.used == 2000


def test_parallel_holds_never_overshoot() -> None:
    admitted: list[int] = []
    lock = threading.Lock()
    with tg.budget(tokens=1000) as b:

        def worker() -> None:
            for _ in range(50):
                try:
                    reserve(30)
                except tg.BudgetExceeded:
                    return
                with lock:
                    admitted.append(30)

        threads = [threading.Thread(target=tg.carry(worker)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(admitted) == b.reserved == 990


@settings(max_examples=200, deadline=None)
@given(
    caps=st.lists(st.integers(0, 500), min_size=1, max_size=3),
    ops=st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["commit", "cancel", "open"]))),
)
def test_every_budget_stays_within_its_cap(caps: list[int], ops: list[tuple[int, str]]) -> None:
    budgets = [tg.budget(tokens=c) for c in caps]
    opened = [b.__enter__() for b in budgets]
    try:
        for n, action in ops:
            try:
                h = reserve(n)
            except tg.BudgetExceeded:
                continue
            if action == "commit":
                h.commit(n)  # usage equal to the estimate: caps are never passed
            elif action == "cancel":
                h.cancel()
            for b in budgets:
                assert b.tokens is not None
                assert b.used + b.reserved <= b.tokens
    finally:
        for b in reversed(opened):
            b.__exit__(None, None, None)
