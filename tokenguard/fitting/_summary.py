"""Summaries of the dropped part of a conversation: the protocol, a default, a cache.

A summarizer is any callable taking a :class:`SummaryRequest` and returning the
summary text, or an awaitable of it (then only :func:`~tokenguard.fit_async` can use
it). Summaries are built incrementally: a request carries the previous summary and
only the messages dropped since, and the result is cached under the content it
replaces, so a conversation that grows turn by turn reuses it instead of asking again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cachetools import LRUCache

from ..errors import ConfigurationError
from ._layout import content_of, role_of

__all__ = [
    "DEFAULT_SUMMARY_TOKENS",
    "SUMMARY_PREFIX",
    "ClientSummarizer",
    "Summarizer",
    "SummaryCache",
    "SummaryRequest",
    "default_summary_cache",
    "prefix_keys",
    "transcript",
]

#: Default bound on a summary's length (the ``max_tokens`` of the summary request).
DEFAULT_SUMMARY_TOKENS = 512

#: Opens the summary message that replaces the dropped turns.
SUMMARY_PREFIX = "Summary of the earlier part of this conversation:\n"

_INSTRUCTIONS = (
    "You condense chat transcripts. Write a concise summary of the conversation below "
    "so that it can replace it: keep facts, names, numbers, decisions, open questions "
    "and what the user wants. Write it in the conversation's language, as plain prose, "
    "in at most {words} words. Reply with the summary only."
)


@dataclass(frozen=True)
class SummaryRequest:
    """What a summarizer is asked: fold ``messages`` (oldest first) into ``previous``
    (the summary of everything before them, or ``None``), in at most ``max_tokens``.

    Example::

        def summarize(req: tg.SummaryRequest) -> str:
            return my_llm(tg.fitting.transcript(req), max_tokens=req.max_tokens)
    """

    messages: tuple[Any, ...]
    previous: str | None
    max_tokens: int
    model: str


@runtime_checkable
class Summarizer(Protocol):
    """Writes the summary for a :class:`SummaryRequest`; sync (returns ``str``) or async
    (returns an awaitable of ``str``). Plain functions fit this protocol."""

    def __call__(self, request: SummaryRequest, /) -> str | Awaitable[str]: ...


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                parts.append("[image]")
        return "".join(parts)
    return "" if content is None else str(content)


def _calls_text(message: Any) -> str:
    calls = (
        message.get("tool_calls")
        if isinstance(message, Mapping)
        else getattr(message, "tool_calls", None)
    )
    if not calls:
        return ""
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, Mapping) else getattr(call, "function", None)
        if isinstance(fn, Mapping):
            name, args = fn.get("name"), fn.get("arguments")
        else:
            name, args = getattr(fn, "name", None), getattr(fn, "arguments", None)
        out.append(f"[calls {name}({args})]")
    return " ".join(out)


def transcript(request: SummaryRequest) -> str:
    """The previous summary and the messages of ``request`` as one plain-text transcript.

    Example::

        >>> transcript(SummaryRequest(({"role": "user", "content": "Hi"},), None, 100, "m"))
        'user: Hi'
    """
    lines = []
    if request.previous:
        lines.append(f"(summary so far) {request.previous}")
    for m in request.messages:
        text = _text(content_of(m))
        calls = _calls_text(m)
        body = " ".join(x for x in (text, calls) if x)
        lines.append(f"{role_of(m)}: {body}")
    return "\n".join(lines)


class ClientSummarizer:
    """The default summarizer: one chat completion through an openai- or groq-style client.

    ``client`` is anything with ``client.chat.completions.create`` (``openai.OpenAI``,
    ``openai.AsyncOpenAI``, ``groq.Groq``, ``groq.AsyncGroq``, or an instrumented one, so
    that the summary call is itself counted and limited). The summary's length is bound by
    the request's ``max_tokens``. With an async client, calls return an awaitable, so use
    it with :func:`~tokenguard.fit_async`. ``create=`` takes the create function itself
    instead of a client (e.g. a guarded one, so that the summary call goes through the
    same limiter and budget); ``create_options`` are passed on to every call.

    Example::

        summarizer = tg.ClientSummarizer(OpenAI(base_url=GROQ, api_key=KEY),
                                         model="llama-3.1-8b-instant")
        tg.fit(history, model="llama-3.1-8b-instant", on_overflow="summarize",
               summarizer=summarizer)
    """

    def __init__(
        self,
        client: Any = None,
        *,
        create: Callable[..., Any] | None = None,
        model: str | None = None,
        **create_options: Any,
    ) -> None:
        if (client is None) == (create is None):
            raise ConfigurationError(
                "ClientSummarizer needs a client or create= (a chat.completions.create), "
                "exactly one of them"
            )
        if create is None:
            completions = getattr(getattr(client, "chat", None), "completions", None)
            create = getattr(completions, "create", None)
        if not callable(create):
            raise ConfigurationError(
                "ClientSummarizer needs a client with chat.completions.create (an openai or "
                f"groq client), got {type(client).__name__}"
            )
        self._create = create
        self.model = model
        self.create_options = create_options

    def __call__(self, request: SummaryRequest, /) -> str | Awaitable[str]:
        words = max(20, request.max_tokens * 2 // 3)
        result = self._create(
            model=self.model or request.model,
            messages=[
                {"role": "system", "content": _INSTRUCTIONS.format(words=words)},
                {"role": "user", "content": transcript(request)},
            ],
            max_tokens=request.max_tokens,
            **self.create_options,
        )
        if inspect.isawaitable(result):
            return _await_text(result)
        return _reply_text(result)


async def _await_text(pending: Awaitable[Any]) -> str:
    return _reply_text(await pending)


def _reply_text(response: Any) -> str:
    try:
        text = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError) as exc:
        raise ConfigurationError(
            f"the summary call returned no chat completion ({type(response).__name__})"
        ) from exc
    if not isinstance(text, str):
        raise ConfigurationError(f"the summary call returned no text (content is {text!r})")
    return text


def prefix_keys(messages: Sequence[Any], units: Sequence[Sequence[int]], model: str) -> list[bytes]:
    """Content keys of each prefix of ``units``: ``keys[k]`` names ``units[:k]`` (``k >= 1``).

    Two conversations share a key exactly when their first ``k`` units hold the same
    messages (role, content, tool calls), so a summary cached under it can stand for them.
    """
    h = hashlib.blake2b(model.encode("utf-8", "replace"), digest_size=16)
    keys = [h.digest()]
    for unit in units:
        for i in unit:
            m = messages[i]
            h.update(b"\x00")
            h.update(str(role_of(m)).encode("utf-8", "replace"))
            h.update(b"\x01")
            h.update(_content_key(m).encode("utf-8", "surrogatepass"))
        keys.append(h.digest())
    return keys


def _content_key(message: Any) -> str:
    content = content_of(message)
    base = content if isinstance(content, str) else _dump(content)
    calls = (
        message.get("tool_calls")
        if isinstance(message, Mapping)
        else getattr(message, "tool_calls", None)
    )
    call_id = (
        message.get("tool_call_id")
        if isinstance(message, Mapping)
        else getattr(message, "tool_call_id", None)
    )
    if calls or call_id:
        return f"{base}\x02{_dump(calls)}\x02{call_id}"
    return base


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


class SummaryCache:
    """Summaries by the content they replace (thread-safe, least recently used dropped first).

    The key is the model and the replaced messages, not the summarizer: give fits that
    use different summarizers (or prompts) caches of their own. :func:`fit` uses one
    process-wide cache unless given ``summary_cache=``; each Conversation has its own.

    Example::

        cache = tg.SummaryCache(maxsize=1_000)
        tg.fit(history, on_overflow="summarize", summarizer=s, summary_cache=cache)
    """

    def __init__(self, maxsize: int = 256) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigurationError(f"SummaryCache maxsize must be an int >= 1, got {maxsize!r}")
        self._lock = threading.Lock()
        self._data: LRUCache[bytes, str] = LRUCache(maxsize=maxsize)

    def get(self, key: bytes) -> str | None:
        """The summary stored under ``key``, or ``None``."""
        with self._lock:
            return self._data.get(key)

    def put(self, key: bytes, summary: str) -> None:
        """Store ``summary`` under ``key``."""
        with self._lock:
            self._data[key] = summary

    def clear(self) -> None:
        """Forget every summary."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


_default_cache = SummaryCache()


def default_summary_cache() -> SummaryCache:
    """The process-wide cache used when a fit is given none."""
    return _default_cache
