"""An ``httpx`` transport that guards every chat request a client built on httpx sends.

For frameworks that build their own SDK client (or talk HTTP themselves) where
``tg.instrument`` cannot reach: give them an ``httpx.Client(transport=GuardTransport())``
(``httpx.AsyncClient(transport=AsyncGuardTransport())`` for async code). The same
transports serve ``httpx2`` clients (what the openai SDK builds on since 3.x): they
follow the module of the requests they are given. Every
``POST .../chat/completions`` goes through :func:`tokenguard.guard` (counted, fitted,
held by the limiter, retried on 429, one usage event); every other request passes
through untouched. Invariant: what the caller gets is what the server sent (a refusal
the guard could not absorb reaches the caller as the server's own response), and a
request the guard did not change is sent as the very request it was given.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import openai

from .._guard import guard

__all__ = ["AsyncGuardTransport", "GuardTransport"]

_PATH = "/chat/completions"


def _installed(*names: str) -> tuple[ModuleType, ...]:
    found = []
    for name in names:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return tuple(found)


#: httpx and its successor httpx2 have the same API but their own classes: a response's
#: stream must derive from its own module's byte stream, so ours derive from both.
_MODULES = _installed("httpx", "httpx2")

if TYPE_CHECKING:
    import httpx
    import httpx2

    class _SyncStream(httpx.SyncByteStream, httpx2.SyncByteStream): ...

    class _AsyncStream(httpx.AsyncByteStream, httpx2.AsyncByteStream): ...

    class _SyncTransport(httpx.BaseTransport, httpx2.BaseTransport):
        def handle_request(self, request: Any) -> Any: ...

    class _AsyncTransport(httpx.AsyncBaseTransport, httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any: ...
else:
    _SyncStream = type("_SyncStream", tuple(m.SyncByteStream for m in _MODULES), {})
    _AsyncStream = type("_AsyncStream", tuple(m.AsyncByteStream for m in _MODULES), {})
    _SyncTransport = type("_SyncTransport", tuple(m.BaseTransport for m in _MODULES), {})
    _AsyncTransport = type("_AsyncTransport", tuple(m.AsyncBaseTransport for m in _MODULES), {})


def _module_of(obj: Any) -> Any:
    """The httpx-like module ``obj`` comes from (``httpx`` or ``httpx2``)."""
    return sys.modules[type(obj).__module__.partition(".")[0]]


def _chat_body(request: httpx.Request) -> dict[str, Any] | None:
    """The JSON body of a chat completion request, or ``None`` for any other request."""
    if request.method != "POST" or not request.url.path.endswith(_PATH):
        return None
    try:
        body = json.loads(request.read())
    except ValueError:
        return None  # not JSON: the server answers it, not the guard
    return body if isinstance(body, dict) and "messages" in body else None


def _rebuilt(request: httpx.Request, body: dict[str, Any], sent: dict[str, Any]) -> httpx.Request:
    """``request`` with the guard's ``sent`` fields (the fitted messages, a lowered
    ``max_tokens``): the very same request when the guard changed nothing."""
    changed = {k: v for k, v in sent.items() if v is not None and body.get(k) is not v}
    if not changed:
        return request
    content = json.dumps({**body, **changed}).encode()
    headers = type(request.headers)(request.headers)
    headers["content-length"] = str(len(content))
    return type(request)(
        request.method, request.url, headers=headers, content=content,
        extensions=request.extensions,
    )  # fmt: skip


def _refusal(response: httpx.Response) -> openai.APIStatusError:
    """The server's refusal as the openai SDK raises it, which the guard reads (429,
    413, 400 context_length_exceeded) and recovers from; its response is kept whole."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return openai.APIStatusError(
        str(message or f"HTTP {response.status_code}"), response=cast(Any, response), body=error
    )


class _Answer:
    """A finished response as the guard reads a raw SDK response: headers and a parse."""

    __slots__ = ("http_request", "http_response")

    def __init__(self, request: httpx.Request, response: httpx.Response) -> None:
        self.http_response = response
        self.http_request = request

    @property
    def headers(self) -> httpx.Headers:
        return self.http_response.headers

    def parse(self) -> Any:
        try:
            return self.http_response.json()
        except ValueError:
            return None  # settled at its estimate; the caller still gets the response


class _Chunk(dict[str, Any]):
    """One server-sent event: its JSON (what the guard reads) and its bytes as sent."""

    __slots__ = ("raw",)

    def __init__(self, data: Any, raw: bytes) -> None:
        super().__init__(data if isinstance(data, dict) else {})
        self.raw = raw


def _chunk(event: bytes) -> _Chunk:
    for line in event.splitlines():
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
            try:
                return _Chunk(json.loads(line[5:]), event)
            except ValueError:
                break
    return _Chunk(None, event)


def _events(buffer: bytearray, data: bytes) -> Iterator[_Chunk]:
    """The complete events in ``buffer`` after adding ``data``; the rest stays there."""
    buffer += data
    while (end := buffer.find(b"\n\n")) >= 0:
        event = bytes(buffer[: end + 2])
        del buffer[: end + 2]
        yield _chunk(event)


class _Events:
    """The events of a streamed response, chunk by chunk, for the guard to settle."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._parts = response.iter_raw()
        self._buffer = bytearray()
        self._ready: list[_Chunk] = []

    def __iter__(self) -> _Events:
        return self

    def __next__(self) -> _Chunk:
        while not self._ready:
            part = next(self._parts, None)
            if part is None:
                if not self._buffer:
                    raise StopIteration
                rest, self._buffer = bytes(self._buffer), bytearray()
                return _chunk(rest)
            self._ready.extend(_events(self._buffer, part))
        return self._ready.pop(0)

    def close(self) -> None:
        self.response.close()


class _AsyncEvents:
    """:class:`_Events` of an async response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._parts = response.aiter_raw()
        self._buffer = bytearray()
        self._ready: list[_Chunk] = []

    def __aiter__(self) -> _AsyncEvents:
        return self

    async def __anext__(self) -> _Chunk:
        while not self._ready:
            part = await anext(self._parts, None)
            if part is None:
                if not self._buffer:
                    raise StopAsyncIteration
                rest, self._buffer = bytes(self._buffer), bytearray()
                return _chunk(rest)
            self._ready.extend(_events(self._buffer, part))
        return self._ready.pop(0)

    async def aclose(self) -> None:
        await self.response.aclose()


class _GuardedBytes(_SyncStream):
    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield chunk.raw

    def close(self) -> None:
        self._chunks.close()


class _AsyncGuardedBytes(_AsyncStream):
    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk.raw

    async def aclose(self) -> None:
        await self._chunks.aclose()


def _streamed(request: httpx.Request, head: httpx.Response, stream: Any) -> httpx.Response:
    return type(head)(
        head.status_code, headers=head.headers, stream=stream, request=request,
        extensions=head.extensions,
    )  # fmt: skip


class GuardTransport(_SyncTransport):
    """Guard the chat requests of a sync ``httpx.Client``; pass the rest to ``transport``.

    ``transport`` is the one that really sends (default: the ``HTTPTransport()`` of the
    requests' module, made at the first request);
    ``options`` are :func:`tokenguard.guard`'s (``base_url=`` names the endpoint so the
    limiter is the one shared with clients instrumented for it; Groq's by default).
    Streams (``"stream": true``) are passed through byte for byte and settled with the
    usage of their last chunk; their headers reach the limiter as a plain response's
    do. An error the
    guard raises (``tg.BudgetExceeded``, ``tg.RateLimitTimeout``, ...) leaves the
    transport; an SDK on top wraps it as its connection error (``__cause__`` is
    tokenguard's) and may retry it: give that SDK ``max_retries=0``, as the guard
    retries 429s itself.

    Example::

        from openai import OpenAI
        from tokenguard.integrations.httpx import GuardTransport

        client = OpenAI(base_url=GROQ, api_key=KEY, max_retries=0,
                        http_client=httpx.Client(transport=GuardTransport(max_wait=60)))
    """

    def __init__(self, transport: Any = None, **options: Any) -> None:
        self._transport = transport
        self._send = guard(**options)(self._send_chat)

    def _sender(self, request: httpx.Request) -> Any:
        if self._transport is None:
            self._transport = _module_of(request).HTTPTransport()
        return self._transport

    def handle_request(self, request: Any) -> Any:
        body = _chat_body(request)
        if body is None:
            return cast("httpx.Response", self._sender(request).handle_request(request))
        try:
            answer = self._send(**body, tokenguard_request=(request, body))
        except openai.APIStatusError as refused:
            return cast("httpx.Response", refused.response)
        if isinstance(answer, _Answer):
            return answer.http_response
        return _streamed(request, answer.response, _GuardedBytes(answer))

    def _send_chat(
        self,
        messages: Any,
        max_tokens: Any = None,
        max_completion_tokens: Any = None,
        *,
        tokenguard_request: tuple[httpx.Request, dict[str, Any]],
        **fields: Any,
    ) -> Any:
        # The guard finds the model, stream and prompt keywords (tools, ...) in ``fields``.
        request, body = tokenguard_request
        sent = _rebuilt(
            request,
            body,
            {
                "messages": messages,
                "max_tokens": max_tokens,
                "max_completion_tokens": max_completion_tokens,
            },
        )
        response: httpx.Response = self._sender(sent).handle_request(sent)
        response.request = sent  # what the client sets later; errors read it sooner
        if body.get("stream") is True and response.status_code < 400:
            return _Events(response)
        response.read()
        if response.status_code >= 400:
            raise _refusal(response)
        return _Answer(sent, response)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class AsyncGuardTransport(_AsyncTransport):
    """:class:`GuardTransport` for an ``httpx.AsyncClient`` (e.g. ``AsyncOpenAI``'s).

    Example::

        client = AsyncOpenAI(base_url=GROQ, api_key=KEY, max_retries=0,
                             http_client=httpx.AsyncClient(transport=AsyncGuardTransport()))
    """

    def __init__(self, transport: Any = None, **options: Any) -> None:
        self._transport = transport
        self._send = guard(**options)(self._send_chat)

    def _sender(self, request: httpx.Request) -> Any:
        if self._transport is None:
            self._transport = _module_of(request).AsyncHTTPTransport()
        return self._transport

    async def handle_async_request(self, request: Any) -> Any:
        body = _chat_body(request)
        if body is None:
            response = await self._sender(request).handle_async_request(request)
            return cast("httpx.Response", response)
        try:
            answer = await self._send(**body, tokenguard_request=(request, body))
        except openai.APIStatusError as refused:
            return cast("httpx.Response", refused.response)
        if isinstance(answer, _Answer):
            return answer.http_response
        return _streamed(request, answer.response, _AsyncGuardedBytes(answer))

    async def _send_chat(
        self,
        messages: Any,
        max_tokens: Any = None,
        max_completion_tokens: Any = None,
        *,
        tokenguard_request: tuple[httpx.Request, dict[str, Any]],
        **fields: Any,
    ) -> Any:
        # The guard finds the model, stream and prompt keywords (tools, ...) in ``fields``.
        request, body = tokenguard_request
        sent = _rebuilt(
            request,
            body,
            {
                "messages": messages,
                "max_tokens": max_tokens,
                "max_completion_tokens": max_completion_tokens,
            },
        )
        response: httpx.Response = await self._sender(sent).handle_async_request(sent)
        response.request = sent  # what the client sets later; errors read it sooner
        if body.get("stream") is True and response.status_code < 400:
            return _AsyncEvents(response)
        await response.aread()
        if response.status_code >= 400:
            raise _refusal(response)
        return _Answer(sent, response)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
