"""Decisions written once, performed by a thread or by an asyncio task.

A *plan* is a generator that yields an *effect* (a :class:`Call`, a :class:`Sleep`) each
time it needs what a thread and a task do differently, gets the result back at that
``yield``, and returns its outcome; :func:`run_sync` calls the effects, :func:`run_async`
awaits them. Invariant: this is the only place where sync and async code differ; an
error raised by an effect is thrown into the plan at its ``yield``. An example and the
rules are in docs/internals.md ("Plans and effects").
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["Call", "Effect", "Plan", "Sleep", "run_async", "run_sync"]

T = TypeVar("T")


class Effect(Protocol):
    """What a plan asks its runner to do: performed by a call or by an await."""

    def perform(self) -> Any:
        """Do it in the calling thread (may block); return the result for the plan."""

    def perform_async(self) -> Awaitable[Any]:
        """Do it without blocking the event loop; the awaited result goes to the plan."""


#: A generator of effects that returns ``T``: one decision loop for both runners.
Plan = Generator[Effect, Any, T]


class Call(tuple[Callable[..., Any], "Callable[..., Awaitable[Any]] | None", tuple[Any, ...]]):
    """Call ``fn(*args)`` when run in a thread, ``await afn(*args)`` in a coroutine.

    With ``afn=None`` both runners call ``fn``, and the async runner awaits its
    result if it is awaitable (a function that is sync or async depending on
    what the user gave).

    An immutable value, equal to another with the same parts. A tuple underneath:
    plans build several per request, and a tuple is made in one step where a frozen
    dataclass sets each field through ``object.__setattr__``.

    Example::

        reply = yield Call(redis.blpop, aredis.blpop, [key], 0.5)
    """

    __slots__ = ()

    def __new__(
        cls,
        fn: Callable[..., Any],
        afn: Callable[..., Awaitable[Any]] | None = None,
        *args: Any,
    ) -> Call:
        return tuple.__new__(cls, (fn, afn, args))

    @property
    def fn(self) -> Callable[..., Any]:
        return self[0]

    @property
    def afn(self) -> Callable[..., Awaitable[Any]] | None:
        return self[1]

    @property
    def args(self) -> tuple[Any, ...]:
        return self[2]

    def __repr__(self) -> str:
        return f"Call(fn={self[0]!r}, afn={self[1]!r}, args={self[2]!r})"

    def perform(self) -> Any:
        return self[0](*self[2])

    async def perform_async(self) -> Any:
        fn, afn, args = self
        if afn is not None:
            return await afn(*args)
        result = fn(*args)
        if inspect.isawaitable(result):
            return await result
        return result


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause for ``seconds``: ``time.sleep`` in a thread, ``asyncio.sleep`` in a coroutine.

    ``sleep`` replaces both (a fake clock's ``sleep`` that advances it, in tests); the
    async runner awaits its result when it is awaitable, and otherwise still yields
    to the event loop once, so other tasks run as they would during a real sleep.
    """

    seconds: float
    sleep: Callable[[float], Any] | None = None

    def perform(self) -> None:
        (time.sleep if self.sleep is None else self.sleep)(self.seconds)

    async def perform_async(self) -> None:
        if self.sleep is None:
            await asyncio.sleep(self.seconds)
            return
        result = self.sleep(self.seconds)
        await (result if inspect.isawaitable(result) else asyncio.sleep(0))


def run_sync(plan: Plan[T]) -> T:
    """Run ``plan`` in this thread, performing each effect by calling it; return its outcome.

    Example::

        step = run_sync(backend.start_plan(ticket))
    """
    try:
        effect = next(plan)
        while True:
            try:
                # A Call (most effects) performed here, without a frame of its own.
                result = effect[0](*effect[2]) if type(effect) is Call else effect.perform()
            except BaseException as exc:  # the plan's own except/finally decide
                effect = plan.throw(exc)
            else:
                effect = plan.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(plan: Plan[T]) -> T:
    """Run ``plan`` in this task, performing each effect by awaiting it; return its outcome.

    A cancellation of the task while an effect is awaited is thrown into the plan
    like any other exception, so its cleanup effects are still performed.

    Example::

        step = await run_async(backend.start_plan(ticket))
    """
    try:
        effect = next(plan)
        while True:
            try:
                if type(effect) is Call and effect[1] is not None:
                    # Call.perform_async, without a coroutine of its own (most effects).
                    result = await effect[1](*effect[2])
                else:
                    result = await effect.perform_async()
            except BaseException as exc:  # cancellation included: the plan cleans up
                effect = plan.throw(exc)
            else:
                effect = plan.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
