"""A chat history with a token ceiling that truncates or summarizes itself.

:class:`Conversation` keeps the whole history for the caller and, after every
message added, the messages to send now: always within the ceiling, fitted by
:func:`~tokenguard.fit` (so the same rules hold: system message kept, newest turn
kept, tool calls with their results, order).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

from ._drive import Plan, run_async, run_sync
from .counting import count_prompt
from .errors import ConfigurationError
from .fitting import (
    DEFAULT_SUMMARY_TOKENS,
    FitResult,
    Strategy,
    StrategyCallable,
    Summarizer,
    SummaryCache,
)
from .fitting._api import check_options
from .fitting._plan import fit_plan
from .models import ModelInfo, get_model

__all__ = ["Conversation"]


class Conversation:
    """A conversation whose :attr:`messages` always fit ``max_prompt_tokens`` prompt tokens.

    ``max_prompt_tokens`` is the ceiling on the prompt tokens of :attr:`messages` (default
    and upper bound: the model's context window); keep the completion's room out of it
    (the ``max_tokens`` you send with the messages). Below the context window, its fits
    report ``bound_by="max_prompt_tokens"``. The old name of this argument, ``max_tokens=``,
    still works and warns :class:`DeprecationWarning`.
    ``on_overflow`` is ``"truncate"``, ``"summarize"`` (needs ``summarizer``, e.g.
    :class:`~tokenguard.ClientSummarizer`; its summaries are cached per conversation so
    a growing conversation is summarized once in a while, not every turn) or a callable
    (see :func:`~tokenguard.fit`). :attr:`history` keeps every message ever added.

    Thread-safe: threads may add messages and read :attr:`messages` concurrently; each
    ``add_*`` returns once the messages include what it added (or a later state). The
    summarizer is called outside the lock, so a slow summary blocks no reader.
    With an async summarizer, add messages with ``await conv.add_async(message)``.

    Example::

        conv = tg.Conversation(system="You are terse.", model="llama3-8b-8192",
                               max_prompt_tokens=4_000)
        conv.add_user("What is Groq?")
        reply = client.chat.completions.create(model="llama3-8b-8192",
                                               messages=conv.messages, max_tokens=256)
        conv.add_assistant(reply.choices[0].message.content)
        assert conv.tokens == tg.count_tokens(conv.messages, model="llama3-8b-8192")
        assert conv.tokens <= 4_000
    """

    def __init__(
        self,
        system: str | None = None,
        *,
        model: str | ModelInfo = "llama-3.1-8b-instant",
        max_prompt_tokens: int | None = None,
        on_overflow: Strategy | StrategyCallable = "truncate",
        summarizer: Summarizer | None = None,
        summary_tokens: int = DEFAULT_SUMMARY_TOKENS,
        headroom: float = 0.5,
        tools: Sequence[Any] | None = None,
        max_tokens: int | None = None,
    ) -> None:
        info = model if isinstance(model, ModelInfo) else get_model(model)
        max_prompt_tokens = _prompt_ceiling(max_prompt_tokens, max_tokens)
        if system is not None and not isinstance(system, str):
            raise ConfigurationError(f"system must be a str or None, got {type(system).__name__}")
        self.model = info.name
        #: The ceiling on the prompt tokens of :attr:`messages`.
        self.max_prompt_tokens = min(max_prompt_tokens or info.context_window, info.context_window)
        # The ceiling is on the prompt alone: no completion reservation, no rate limit.
        self._options = check_options(
            info,
            default_reserve=0,
            tpm=None,
            max_prompt_tokens=self.max_prompt_tokens,
            on_overflow=on_overflow,
            summarizer=summarizer,
            summary_cache=SummaryCache(),
            summary_tokens=summary_tokens,
            headroom=headroom,
            tools=tools,
        )
        self._lock = threading.Lock()
        self._system: dict[str, Any] | None = (
            {"role": "system", "content": system} if system is not None else None
        )
        self._history: list[Any] = []
        self._version = 0
        self._view: list[Any] = []
        self._view_version = -1
        self._last: FitResult | None = None
        self._summary_calls = 0
        self._fallbacks = 0
        if self._system is not None:
            # Checks that the system message fits at all.
            self._apply(0, run_sync(fit_plan([self._system], self._options)))
        else:
            self._view_version = 0

    # -- adding messages --------------------------------------------------------------

    def add_user(self, content: Any, *, name: str | None = None) -> None:
        """Add a user message (text, or a list of content parts) and refit.

        Example::

            conv.add_user("Summarize the plan in two lines.")
        """
        message: dict[str, Any] = {"role": "user", "content": content}
        if name is not None:
            message["name"] = name
        self.add(message)

    def add_assistant(
        self, content: str | None = None, *, tool_calls: Sequence[Any] | None = None
    ) -> None:
        """Add an assistant reply: text, tool calls (openai format), or both.

        Example::

            conv.add_assistant(tool_calls=[{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}])
            conv.add_tool_result("call_1", '{"temp_c": 4}')
        """
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = [
                c if isinstance(c, dict) else c.model_dump(exclude_none=True) for c in tool_calls
            ]
        elif content is None:
            raise ConfigurationError("add_assistant needs content, tool_calls, or both")
        self.add(message)

    def add_tool_result(self, tool_call_id: str, content: Any) -> None:
        """Add the result of the tool call ``tool_call_id``.

        Example::

            conv.add_tool_result("call_1", json.dumps(result))
        """
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise ConfigurationError(f"tool_call_id must be a non-empty str, got {tool_call_id!r}")
        self.add({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def add(self, message: Any) -> None:
        """Add any chat message (a dict or an SDK message object) and refit.

        Raises :class:`~tokenguard.InvalidMessages` for a malformed message (nothing is
        added) and :class:`~tokenguard.ContextOverflow` when it cannot fit at all.

        Example::

            conv.add(reply.choices[0].message)   # the SDK's ChatCompletionMessage
        """
        run_sync(self._add_plan(message))

    async def add_async(self, message: Any) -> None:
        """:meth:`add` for coroutines: an async summarizer is awaited.

        Example::

            await conv.add_async({"role": "user", "content": "And in Oslo?"})
        """
        await run_async(self._add_plan(message))

    # -- reading --------------------------------------------------------------------------

    @property
    def messages(self) -> list[Any]:
        """What to send now: a new list, within ``max_prompt_tokens`` prompt tokens."""
        with self._lock:
            return list(self._view)

    @property
    def tokens(self) -> int:
        """Prompt tokens of :attr:`messages` (``== tg.count_tokens(conv.messages)``; 0 if empty)."""
        with self._lock:
            return self._last.tokens_after if self._last is not None and self._view else 0

    @property
    def history(self) -> tuple[Any, ...]:
        """Every message added, in order, the system message first (never fitted)."""
        with self._lock:
            head = (self._system,) if self._system is not None else ()
            return (*head, *self._history)

    @property
    def last_fit(self) -> FitResult | None:
        """The :class:`~tokenguard.FitResult` behind :attr:`messages`."""
        with self._lock:
            return self._last

    @property
    def summary(self) -> str | None:
        """The summary standing for the earliest messages now, if any."""
        with self._lock:
            return self._last.summary if self._last is not None else None

    @property
    def summarized(self) -> int:
        """Messages of the history the current summary stands for."""
        with self._lock:
            return self._last.summarized if self._last is not None else 0

    @property
    def dropped(self) -> int:
        """Messages of the history left out of :attr:`messages` and not summarized."""
        with self._lock:
            return self._last.dropped if self._last is not None else 0

    @property
    def summary_calls(self) -> int:
        """Summarizer calls made over the whole conversation."""
        with self._lock:
            return self._summary_calls

    @property
    def fallbacks(self) -> int:
        """Fits where summarizing failed and truncation stood in."""
        with self._lock:
            return self._fallbacks

    @property
    def max_tokens(self) -> int:
        """Deprecated name of :attr:`max_prompt_tokens` (warns :class:`DeprecationWarning`)."""
        warnings.warn(
            "Conversation.max_tokens is renamed max_prompt_tokens",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.max_prompt_tokens

    def __len__(self) -> int:
        with self._lock:
            return len(self._history) + (self._system is not None)

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"Conversation(model={self.model!r}, max_prompt_tokens={self.max_prompt_tokens}, "
                f"history={len(self._history)}, sent={len(self._view)}, "
                f"tokens={self._last.tokens_after if self._last else 0})"
            )

    # -- internals --------------------------------------------------------------------------

    def _append(self, message: Any) -> tuple[int, list[Any]]:
        # Rejects a malformed message before it enters the history.
        count_prompt([message], self._options.info)
        with self._lock:
            self._history.append(message)
            self._version += 1
            head = [self._system] if self._system is not None else []
            return self._version, [*head, *self._history]

    def _add_plan(self, message: Any) -> Plan[None]:
        version, snapshot = self._append(message)
        try:
            result = yield from fit_plan(snapshot, self._options)
        except BaseException:
            self._withdraw(message)
            raise
        self._apply(version, result)

    def _withdraw(self, message: Any) -> None:
        with self._lock:
            for i in range(len(self._history) - 1, -1, -1):
                if self._history[i] is message:
                    del self._history[i]
                    break

    def _apply(self, version: int, result: FitResult) -> None:
        with self._lock:
            self._summary_calls += result.summary_calls
            self._fallbacks += result.fallback is not None
            # A slower fit of an older state never replaces a newer one.
            if version > self._view_version:
                self._view = list(result.messages)
                self._view_version = version
                self._last = result


def _prompt_ceiling(max_prompt_tokens: int | None, max_tokens: int | None) -> int | None:
    """The ceiling a caller gave, under its name or its deprecated one, checked."""
    if max_tokens is not None:
        if max_prompt_tokens is not None:
            raise ConfigurationError(
                "give max_prompt_tokens only (max_tokens is its deprecated name)"
            )
        warnings.warn(
            "Conversation(max_tokens=) is the ceiling on the prompt and is renamed "
            "max_prompt_tokens=",
            DeprecationWarning,
            stacklevel=3,
        )
        max_prompt_tokens = max_tokens
    if max_prompt_tokens is not None and (
        isinstance(max_prompt_tokens, bool)
        or not isinstance(max_prompt_tokens, int)
        or max_prompt_tokens < 1
    ):
        raise ConfigurationError(
            f"max_prompt_tokens must be a positive int, got {max_prompt_tokens!r}"
        )
    return max_prompt_tokens
