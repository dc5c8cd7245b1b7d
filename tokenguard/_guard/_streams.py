"""Guarded streams: the caller iterates as before; the usage of the last chunk settles.

Groq puts a stream's usage in its final chunk (``x_groq.usage``, or ``usage`` with
``stream_options.include_usage``). A wrapper passes every chunk through unchanged and
remembers the last usage it saw; when the stream ends, fails or is closed, the request
is settled once (:func:`~._settle.settle_plan`): at the usage when the stream ran to
its end, at the reservation's estimate when it was closed or abandoned early. The sync
and async wrappers differ only in how they iterate and run that one plan.

A caller of ``with_streaming_response`` may read the raw SSE lines or bytes instead of
the parsed chunks: the raw response then reads the usage out of the ``data:`` lines as
they pass (what the caller reads is unchanged) and settles the same way.
"""

from __future__ import annotations

import codecs
import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import wrapt

from .._adapters import Failure, FailureKind, Usage, classify, usage_of
from .._drive import run_async, run_sync
from ._settle import Settlement, call_cost, doubt, settle_plan

__all__ = ["GuardedAsyncStream", "GuardedStream", "present_stream"]


class _Tally:
    """The chunks' usage, model and id so far, whether a choice finished (a complete
    stream's last chunk has a ``finish_reason``), and whether it was settled."""

    __slots__ = ("done", "finished", "model", "response_id", "settlement", "usage")

    def __init__(self, settlement: Settlement) -> None:
        self.settlement = settlement
        self.usage: Usage | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.finished = False
        self.done = False

    def see(self, chunk: Any) -> None:
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage  # the last one is the bill: believed (or not) when settled
        if not self.finished:
            self.finished = _finishes(chunk)
        if self.model is None:
            if isinstance(chunk, dict):  # a chunk read from the raw SSE lines
                self.model = chunk.get("model")
                self.response_id = chunk.get("id")
            else:
                self.model = getattr(chunk, "model", None)
                self.response_id = getattr(chunk, "id", None)

    def plan(self, *, ended: bool, error: BaseException | None = None) -> Any:
        """Settle the stream; ``error``: what broke it midway (named in the event)."""
        self.done = True
        # The final chunk's usage is what the server billed, even when the caller stops
        # reading after it (before the end of the stream); without it, the estimate.
        usage = self.usage
        response = {"model": self.model, "id": self.response_id}
        return settle_plan(
            self.settlement,
            usage,
            response,
            # Without usage, a stream whose connection ended before any finish_reason
            # was cut short, as one the caller stopped reading is.
            closed_early=usage is None and not (ended and self.finished),
            failure=_stream_failure(error),
        )

    def abandon(self) -> None:
        """Garbage-collected unsettled: charge the budgets the final usage if it was seen,
        else the estimate; the limiter's reservation keeps its estimate and ages out with
        the window (no I/O in GC)."""
        s = self.settlement
        if not s.settled and not self.done:
            s.settled = True
            usage = self.usage
            if usage is None or doubt(s, usage) is not None:  # no event from a collector
                s.hold.abandon(s.estimate)
            else:
                s.hold.abandon(usage.total_tokens, call_cost(s, usage))


def _finishes(chunk: Any) -> bool:
    """Whether a chunk (an SDK's, or a dict read from the SSE lines, whatever its shape)
    ends a choice."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else getattr(chunk, "choices", None)
    if not isinstance(choices, list):
        return False
    return any(
        (c.get("finish_reason") if isinstance(c, dict) else getattr(c, "finish_reason", None))
        is not None
        for c in choices
    )


def _stream_failure(error: BaseException | None) -> Failure | None:
    """What broke a stream, as its event names it: the SDK error read as any failed
    send is, else the exception's class (a cut connection reaches the caller as an
    ``httpx`` error the SDKs do not wrap); ``None`` for a caller who stopped reading."""
    if error is None or isinstance(error, (GeneratorExit, StopIteration, StopAsyncIteration)):
        return None
    failure = classify(error)
    if failure.kind is FailureKind.OTHER:
        return Failure(FailureKind.OTHER, code=type(error).__name__)
    return failure


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
        except BaseException as exc:
            if not tally.done:
                run_sync(tally.plan(ended=False, error=exc))
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
        except BaseException as exc:
            if not tally.done:
                await run_async(tally.plan(ended=False, error=exc))
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


class _SseTap:
    """Reads a stream's usage (and model and id) out of its SSE text as a caller reads
    the raw response: lines, or text or bytes cut anywhere."""

    __slots__ = ("_decoder", "_tail", "tally")

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self._tail = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, piece: str | bytes) -> None:
        text = self._decoder.decode(piece) if isinstance(piece, bytes) else piece
        if "\n" not in text:
            self._tail += text
            return
        lines = (self._tail + text).split("\n")
        self._tail = lines.pop()
        for line in lines:
            self.line(line)

    def line(self, line: str) -> None:
        """One SSE line (without its end): only ``data:`` lines carry chunks, and after
        the first (model and id) only those that mention a usage or finish a choice are
        decoded."""
        if not line.startswith("data:"):
            return
        if self.tally.model is not None and '"usage"' not in line and not self._finishing(line):
            return
        try:
            chunk = json.loads(line[5:])
        except (ValueError, RecursionError):
            return  # "[DONE]", or not JSON: nothing to learn from it
        self.tally.see(chunk)

    def _finishing(self, line: str) -> bool:
        """Whether a chunk's line may carry a ``finish_reason`` not yet seen (every chunk
        names one, null until a choice ends)."""
        return (
            not self.tally.finished
            and '"finish_reason"' in line
            and '"finish_reason":null' not in line
            and '"finish_reason": null' not in line
        )

    def end(self) -> None:
        """The body ended: its last line may have had no line end."""
        self.feed(self._decoder.decode(b"", final=True))
        if self._tail:
            self.line(self._tail)
            self._tail = ""


class _RawStreamSync(_RawWithStream):
    """A sync raw streaming response (``with_streaming_response``): ``parse()`` gives the
    guarded stream; reading its lines, text or bytes settles at the usage they carry;
    closing it before the end (leaving the ``with`` block) settles as a closed stream."""

    def __init__(self, raw: Any, stream: Any, tally: _Tally) -> None:
        super().__init__(raw, stream)
        self._self_tally = tally
        self._self_tap = _SseTap(tally)

    def _self_settle(self, *, ended: bool, error: BaseException | None = None) -> None:
        if not self._self_tally.done:
            if ended:
                self._self_tap.end()
            run_sync(self._self_tally.plan(ended=ended, error=error))

    def _self_tapped(self, source: Iterator[Any], see: Callable[[Any], None]) -> Iterator[Any]:
        try:
            for piece in source:
                see(piece)
                yield piece
        except GeneratorExit:
            raise  # the caller stopped reading: close() (or the GC) settles
        except BaseException as exc:
            self._self_settle(ended=False, error=exc)
            raise
        self._self_settle(ended=True)

    def iter_lines(self) -> Iterator[str]:
        return self._self_tapped(self.__wrapped__.iter_lines(), self._self_tap.line)

    def iter_text(self, chunk_size: int | None = None) -> Iterator[str]:
        return self._self_tapped(self.__wrapped__.iter_text(chunk_size), self._self_tap.feed)

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        return self._self_tapped(self.__wrapped__.iter_bytes(chunk_size), self._self_tap.feed)

    def read(self) -> bytes:
        data: bytes = self.__wrapped__.read()
        self._self_tap.feed(data)
        self._self_settle(ended=True)
        return data

    def text(self) -> str:
        text: str = self.__wrapped__.text()
        self._self_tap.feed(text)
        self._self_settle(ended=True)
        return text

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_settle(ended=False)

    def __del__(self) -> None:
        self._self_tally.abandon()


class _RawStreamAsync(_RawWithStream):
    """:class:`_RawStreamSync` for the async SDKs (their reads are awaited)."""

    def __init__(self, raw: Any, stream: Any, tally: _Tally) -> None:
        super().__init__(raw, stream)
        self._self_tally = tally
        self._self_tap = _SseTap(tally)

    async def _self_settle(self, *, ended: bool, error: BaseException | None = None) -> None:
        if not self._self_tally.done:
            if ended:
                self._self_tap.end()
            await run_async(self._self_tally.plan(ended=ended, error=error))

    async def _self_tapped(
        self, source: AsyncIterator[Any], see: Callable[[Any], None]
    ) -> AsyncIterator[Any]:
        try:
            async for piece in source:
                see(piece)
                yield piece
        except GeneratorExit:
            raise  # the caller stopped reading: close() (or the GC) settles
        except BaseException as exc:
            await self._self_settle(ended=False, error=exc)
            raise
        await self._self_settle(ended=True)

    def iter_lines(self) -> AsyncIterator[str]:
        return self._self_tapped(self.__wrapped__.iter_lines(), self._self_tap.line)

    def iter_text(self, chunk_size: int | None = None) -> AsyncIterator[str]:
        return self._self_tapped(self.__wrapped__.iter_text(chunk_size), self._self_tap.feed)

    def iter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        return self._self_tapped(self.__wrapped__.iter_bytes(chunk_size), self._self_tap.feed)

    async def read(self) -> bytes:
        data: bytes = await self.__wrapped__.read()
        self._self_tap.feed(data)
        await self._self_settle(ended=True)
        return data

    async def text(self) -> str:
        text: str = await self.__wrapped__.text()
        self._self_tap.feed(text)
        await self._self_settle(ended=True)
        return text

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            await self._self_settle(ended=False)

    def __del__(self) -> None:
        self._self_tally.abandon()


def present_stream(s: Settlement, result: Any, body: Any, caller_wants_raw: bool) -> Any:
    """Wrap ``body`` (a sync or async stream) so its end settles ``s``; hand back the
    raw response around it when that is what the caller asked for (one whose lines can
    be read, as ``with_streaming_response`` gives, is read for the usage as they pass)."""
    tally = _Tally(s)
    is_async = hasattr(body, "__anext__")
    stream: Any = GuardedAsyncStream(body, tally) if is_async else GuardedStream(body, tally)
    if not caller_wants_raw:
        return stream
    if not callable(getattr(type(result), "iter_lines", None)):
        return _RawWithStream(result, stream)  # openai's with_raw_response (no raw reads)
    if is_async:
        return _RawStreamAsync(result, stream, tally)
    return _RawStreamSync(result, stream, tally)
