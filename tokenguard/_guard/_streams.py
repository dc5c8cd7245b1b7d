"""Guarded streams: the caller iterates as before; the usage of the last chunk settles.

Groq puts a stream's usage in its final chunk (``x_groq.usage``, or ``usage`` with
``stream_options.include_usage``). A wrapper passes every chunk through unchanged and
remembers the last usage it saw; when the stream ends, fails or is closed, the request
is settled once (:func:`~._pipeline.settle_plan`): at the usage when the stream ran to
its end, at the reservation's estimate when it was closed or abandoned early. The sync
and async wrappers differ only in how they iterate and run that one plan.
"""

from __future__ import annotations

import inspect
from typing import Any

import wrapt

from .._adapters import Usage, usage_of
from .._drive import run_async, run_sync
from ._pipeline import Settlement, settle_plan

__all__ = ["GuardedAsyncStream", "GuardedStream", "present_stream"]


class _Tally:
    """The chunks' usage, model and id so far, and whether the stream ran to its end."""

    __slots__ = ("done", "model", "response_id", "settlement", "usage")

    def __init__(self, settlement: Settlement) -> None:
        self.settlement = settlement
        self.usage: Usage | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.done = False

    def see(self, chunk: Any) -> None:
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
        if self.model is None:
            self.model = getattr(chunk, "model", None)
            self.response_id = getattr(chunk, "id", None)

    def plan(self, *, ended: bool) -> Any:
        self.done = True
        usage = self.usage if ended else None
        response = {"model": self.model, "id": self.response_id}
        return settle_plan(self.settlement, usage, response, closed_early=not ended)

    def abandon(self) -> None:
        """Garbage-collected unsettled: charge the budgets at the estimate; the limiter's
        reservation keeps its estimate and ages out with the window (no I/O in GC)."""
        s = self.settlement
        if not s.settled and not self.done:
            s.settled = True
            s.hold.commit(s.estimate)


class GuardedStream(wrapt.ObjectProxy[Any]):
    """A sync SDK stream that settles its request when it ends or is closed."""

    def __init__(self, stream: Any, tally: _Tally) -> None:
        super().__init__(stream)
        self._self_tally = tally

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> Any:
        tally = self._self_tally
        try:
            chunk = next(self.__wrapped__)
        except StopIteration:
            if not tally.done:
                run_sync(tally.plan(ended=True))
            raise
        except BaseException:
            if not tally.done:
                run_sync(tally.plan(ended=False))
            raise
        tally.see(chunk)
        return chunk

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            if not self._self_tally.done:
                run_sync(self._self_tally.plan(ended=False))

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self._self_tally.abandon()


class GuardedAsyncStream(wrapt.ObjectProxy[Any]):
    """An async SDK stream that settles its request when it ends or is closed."""

    def __init__(self, stream: Any, tally: _Tally) -> None:
        super().__init__(stream)
        self._self_tally = tally

    def __aiter__(self) -> GuardedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        tally = self._self_tally
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            if not tally.done:
                await run_async(tally.plan(ended=True))
            raise
        except BaseException:
            if not tally.done:
                await run_async(tally.plan(ended=False))
            raise
        tally.see(chunk)
        return chunk

    async def close(self) -> None:
        try:
            closing = getattr(self.__wrapped__, "close", None) or getattr(
                self.__wrapped__, "aclose", None
            )
            if closing is not None:
                await closing()
        finally:
            if not self._self_tally.done:
                await run_async(self._self_tally.plan(ended=False))

    async def __aenter__(self) -> GuardedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        self._self_tally.abandon()


class _RawWithStream(wrapt.ObjectProxy[Any]):
    """A raw response (``with_raw_response``) whose ``parse()`` gives the guarded stream."""

    def __init__(self, raw: Any, stream: Any) -> None:
        super().__init__(raw)
        self._self_stream = stream

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return self.__wrapped__.parse(*args, **kwargs)
        if inspect.iscoroutinefunction(self.__wrapped__.parse):
            return _ready(self._self_stream)  # the async SDKs' parse is awaited
        return self._self_stream


async def _ready(value: Any) -> Any:
    return value


def present_stream(s: Settlement, result: Any, body: Any, caller_wants_raw: bool) -> Any:
    """Wrap ``body`` (a sync or async stream) so its end settles ``s``; hand back the
    raw response around it when that is what the caller asked for."""
    tally = _Tally(s)
    stream: Any
    if hasattr(body, "__anext__"):
        stream = GuardedAsyncStream(body, tally)
    else:
        stream = GuardedStream(body, tally)
    return _RawWithStream(result, stream) if caller_wants_raw else stream
