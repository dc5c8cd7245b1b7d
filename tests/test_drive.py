"""The plan runners: one generator, the same outcome whether a thread or a task runs it.

Every test runs the same plan through ``run_sync`` and ``run_async``; the effects are
real calls and awaits on a small in-memory store (no sleeps, no mocks of the runners).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from fake_clock import FakeClock
from hypothesis import given
from hypothesis import strategies as st

from tokenguard._drive import Call, Plan, Sleep, run_async, run_sync

T = TypeVar("T")


class Boom(Exception):
    """Raised by an effect on purpose."""


@dataclass
class Store:
    """A tiny key-value store with a sync and an async face, logging what it performs."""

    data: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, ...]] = field(default_factory=list)

    def get(self, key: str) -> int:
        self.log.append(("get", key))
        if key.startswith("bad"):
            raise Boom(key)
        return self.data.get(key, 0)

    async def aget(self, key: str) -> int:
        await asyncio.sleep(0)  # a real suspension: other tasks may run here
        return self.get(key)

    def put(self, key: str, value: int) -> None:
        self.log.append(("put", key, str(value)))
        self.data[key] = value

    async def aput(self, key: str, value: int) -> None:
        await asyncio.sleep(0)
        self.put(key, value)


def run(kind: str, plan: Plan[T]) -> T:
    if kind == "sync":
        return run_sync(plan)
    return asyncio.run(run_async(plan))


def outcome(fn: Callable[[], T]) -> tuple[str, Any]:
    try:
        return ("value", fn())
    except Exception as exc:
        return ("error", (type(exc).__name__, str(exc)))


# -- the same plan, the same result ---------------------------------------------------


def add_up(store: Store, keys: list[str], *, handle: bool) -> Plan[int]:
    """Sum the keys' values; a failing read is skipped (``handle``) or ends the plan,
    and either way the partial sum is written back (``finally`` with an effect)."""
    total = 0
    try:
        for key in keys:
            try:
                total += yield from read(store, key)
            except Boom:
                if not handle:
                    raise
                total -= 1
    finally:
        yield Call(store.put, store.aput, "total", total)
    return total


def read(store: Store, key: str) -> Plan[int]:
    value: int = yield Call(store.get, store.aget, key)
    return value * 2


keys = st.lists(st.sampled_from(["a", "b", "c", "bad1", "bad2"]), max_size=8)


@given(keys=keys, handle=st.booleans(), data=st.dictionaries(st.sampled_from("abc"), st.integers()))
def test_both_runners_give_the_same_outcome_and_effects(
    keys: list[str], handle: bool, data: dict[str, int]
) -> None:
    results = {}
    for kind in ("sync", "async"):
        store = Store(dict(data))
        plan = add_up(store, keys, handle=handle)
        got = outcome(lambda plan=plan, kind=kind: run(kind, plan))  # type: ignore[misc]
        results[kind] = (got, store.log, store.data)
    assert results["sync"] == results["async"]
    # and the outcome is the straight-line one
    (kind_, value), log, final = results["sync"]
    expected = 0
    failed = None
    for key in keys:
        if key.startswith("bad"):
            if not handle:
                failed = key
                break
            expected -= 1
        else:
            expected += 2 * data.get(key, 0)
    assert final["total"] == expected
    assert log[-1] == ("put", "total", str(expected))
    assert (kind_, value) == (("error", ("Boom", failed)) if failed else ("value", expected))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_plan_without_effects_returns_its_value(kind: str) -> None:
    def plan() -> Plan[str]:
        yield from ()
        return "done"

    assert run(kind, plan()) == "done"


# -- exceptions reach the plan ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_effect_error_reaches_the_plan_which_cleans_up_and_lets_it_go(kind: str) -> None:
    store = Store()
    raised = Boom("lost the connection")
    seen: list[BaseException] = []

    def fail() -> None:
        raise raised

    async def afail() -> None:
        raise raised

    def plan() -> Plan[None]:
        yield Call(store.put, store.aput, "queue", 1)
        try:
            yield Call(fail, afail)
        except BaseException as exc:
            seen.append(exc)
            yield Call(store.put, store.aput, "queue", 0)  # leave the queue
            raise

    with pytest.raises(Boom) as info:
        run(kind, plan())
    assert info.value is raised  # unchanged, not wrapped
    assert seen == [raised]
    assert store.data == {"queue": 0}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_plan_may_handle_an_effect_error_and_go_on(kind: str) -> None:
    store = Store({"good": 5})

    def plan() -> Plan[int]:
        with contextlib.suppress(Boom):
            yield Call(store.get, store.aget, "bad")
        value: int = yield Call(store.get, store.aget, "good")
        return value

    assert run(kind, plan()) == 5
    assert store.log == [("get", "bad"), ("get", "good")]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_error_in_a_nested_plan_reaches_the_outer_plan(kind: str) -> None:
    store = Store()

    def outer() -> Plan[str]:
        try:
            yield from read(store, "bad-inner")
        except Boom as exc:
            return f"outer saw {exc}"
        return "not reached"

    assert run(kind, outer()) == "outer saw bad-inner"


def test_keyboard_interrupt_in_a_sync_effect_runs_the_plans_finally() -> None:
    store = Store()

    def interrupt() -> None:
        raise KeyboardInterrupt

    def plan() -> Plan[None]:
        try:
            yield Call(interrupt)
        finally:
            yield Call(store.put, store.aput, "released", 1)

    with pytest.raises(KeyboardInterrupt):
        run_sync(plan())
    assert store.data == {"released": 1}


async def test_a_cancelled_async_run_performs_its_cleanup_effect() -> None:
    entered = asyncio.Event()
    log: list[str] = []

    def never() -> None:
        raise AssertionError("the sync face is not used by run_async")

    async def block_forever() -> None:
        entered.set()
        await asyncio.Event().wait()

    async def release() -> None:
        await asyncio.sleep(0)  # the cleanup itself awaits, after the cancellation
        log.append("released")

    def plan() -> Plan[None]:
        try:
            yield Call(never, block_forever)
        except BaseException as exc:
            log.append(type(exc).__name__)
            yield Call(never, release)
            raise

    task = asyncio.create_task(run_async(plan()))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["CancelledError", "released"]


# -- the stock effects -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sleep_uses_the_injected_sleep(kind: str) -> None:
    clock = FakeClock(0.0)

    def plan() -> Plan[float]:
        yield Sleep(2.5, clock.sleep)
        yield Sleep(0.5, clock.sleep)
        return clock.now

    assert run(kind, plan()) == 3.0


def test_async_sleep_awaits_an_injected_coroutine_sleep() -> None:
    clock = FakeClock(0.0)

    def plan() -> Plan[float]:
        yield Sleep(1.5, clock.asleep)
        return clock.now

    assert asyncio.run(run_async(plan())) == 1.5


async def test_async_sleep_with_a_sync_fake_still_lets_other_tasks_run() -> None:
    clock = FakeClock(0.0)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    def plan() -> Plan[None]:
        yield Sleep(1.0, clock.sleep)

    task = asyncio.create_task(other())
    await run_async(plan())
    assert ran == ["other"]  # the plan's sleep gave the loop a turn
    await task


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("make", ["plain", "coroutine"])
def test_call_without_an_async_face_awaits_what_needs_awaiting(kind: str, make: str) -> None:
    async def coro(x: int) -> int:
        return x + 1

    def plain(x: int) -> int:
        return x + 1

    fn: Callable[[int], int | Awaitable[int]] = plain if make == "plain" else coro

    def plan() -> Plan[Any]:
        result = yield Call(fn, None, 41)
        return result

    got = run(kind, plan())
    if kind == "sync" and make == "coroutine":
        assert asyncio.iscoroutine(got)  # a thread cannot await: it gets the coroutine
        assert asyncio.run(got) == 42
    else:
        assert got == 42


def test_effects_are_values() -> None:
    store = Store()
    assert Call(store.get, store.aget, "k") == Call(store.get, store.aget, "k")
    assert Call(store.get, store.aget, "k").args == ("k",)
    assert Sleep(1.0) == Sleep(1.0)
    with pytest.raises(AttributeError):
        Sleep(1.0).seconds = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_call_subclass_is_performed_by_its_own_methods(kind: str) -> None:
    """The runners perform a plain Call themselves (the common effect, without a frame of
    its own); a subclass that performs differently is still asked to perform."""

    class Twice(Call):
        __slots__ = ()

        def perform(self) -> Any:
            return 2 * self.fn(*self.args)

        async def perform_async(self) -> Any:
            return 2 * self.fn(*self.args)

    async def alen(text: str) -> int:
        return len(text)

    def plan() -> Plan[tuple[int, int, int]]:
        plain = yield Call(len, alen, "abc")
        sync_only = yield Call(len, None, "abcd")
        doubled = yield Twice(len, alen, "abc")
        return plain, sync_only, doubled

    assert run(kind, plan()) == (3, 4, 6)
