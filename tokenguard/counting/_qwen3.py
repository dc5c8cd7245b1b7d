"""Qwen3's stock chat template, as Groq renders it, in pieces that are counted alone.

Every message's text begins right after an added token and ends right before one, so
the prompt's count is the sum of its messages' counts; :func:`turn_text` writes one
message as the template does and :class:`Qwen3Rules` adds the fixed parts.

Invariant: ``count`` of a request equals the tokens of the template rendered whole
(``tests/test_qwen3_counting.py`` checks it against the template run by Jinja). The
template's rules: docs/qwen-kimi.md and docs/counting-internals.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..errors import InvalidMessages
from ._chat_turns import Tool, Turn, tojson

__all__ = [
    "GENERATION",
    "NO_THINKING",
    "Qwen3Rules",
    "enable_thinking",
    "last_query_index",
    "tools_text",
    "turn_text",
]

GENERATION = "<|im_start|>assistant\n"
NO_THINKING = "<think>\n\n</think>\n\n"
_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)
_SYSTEM = "<|im_start|>system\n"


def tools_text(tools: Sequence[Tool]) -> str:
    """The tool part of the system block, from ``# Tools`` to the block's end."""
    lines = "".join("\n" + tojson(tool.as_json_value()) for tool in tools)
    return _TOOLS_HEAD + lines + _TOOLS_TAIL


def enable_thinking(reasoning_effort: object) -> tuple[bool, bool]:
    """``(thinking, known)`` for a ``reasoning_effort``: Groq turns Qwen3's thinking off
    for ``"none"`` only; values other than ``"none"``/``"default"`` are not known."""
    if reasoning_effort is None or reasoning_effort == "default":
        return True, True
    if reasoning_effort == "none":
        return False, True
    if not isinstance(reasoning_effort, str):
        raise InvalidMessages(
            "reasoning_effort must be a str ('none' or 'default' for Qwen3), "
            f"got {type(reasoning_effort).__name__}"
        )
    return True, False


def last_query_index(turns: Sequence[Turn]) -> int:
    """The template's ``last_query_index``: the last user turn that is not only a
    ``<tool_response>`` block (the last turn when there is none)."""
    for k in range(len(turns) - 1, -1, -1):
        turn = turns[k]
        if turn.role == "user" and not (
            turn.text.startswith("<tool_response>") and turn.text.endswith("</tool_response>")
        ):
            return k
    return len(turns) - 1


def split_thinking(turn: Turn) -> tuple[str, str]:
    """``(reasoning, content)`` of an assistant turn as the template reads them."""
    content = turn.text
    if turn.reasoning is not None:
        return turn.reasoning, content
    if "</think>" in content:
        head, _, _ = content.partition("</think>")
        reasoning = head.rstrip("\n").split("<think>")[-1].lstrip("\n")
        return reasoning, content.split("</think>")[-1].lstrip("\n")
    return "", content


def turn_text(turns: Sequence[Turn], k: int, last_query: int) -> str:
    """Turn ``k`` of the normalised conversation (not the system turn) as written."""
    turn = turns[k]
    if turn.role == "user":
        return "<|im_start|>user\n" + turn.text + "<|im_end|>\n"
    if turn.role == "tool":
        head = "" if k > 0 and turns[k - 1].role == "tool" else "<|im_start|>user"
        last = k == len(turns) - 1 or turns[k + 1].role != "tool"
        tail = "<|im_end|>\n" if last else ""
        return head + "\n<tool_response>\n" + turn.text + "\n</tool_response>" + tail
    reasoning, content = split_thinking(turn)
    if k > last_query and (k == len(turns) - 1 or reasoning):
        text = (
            "<|im_start|>assistant\n<think>\n"
            + reasoning.strip("\n")
            + "\n</think>\n\n"
            + content.lstrip("\n")
        )
    else:
        text = "<|im_start|>assistant\n" + content
    for j, call in enumerate(turn.calls):
        if j or content:
            text += "\n"
        args = call.arguments if isinstance(call.arguments, str) else tojson(call.arguments)
        text += (
            '<tool_call>\n{"name": "' + call.name + '", "arguments": ' + args + "}\n</tool_call>"
        )
    return text + "<|im_end|>\n"


class Qwen3Count(NamedTuple):
    """One request counted: per request message, the fixed part, the tools, the total."""

    messages: list[int]
    overhead: int
    tools: int
    total: int
    exact: bool


class Qwen3Rules:
    """The Qwen3 prompt's costs, given ``count(text)``: tokens of rendered text (added
    tokens recognised, NFC applied). ``image_tokens`` is charged per image part (Qwen3 on
    Groq reads no images; a bound)."""

    def __init__(self, count: Callable[[str], int], *, image_tokens: int) -> None:
        self.count = count
        self.image_tokens = image_tokens
        self.generation = count(GENERATION)
        self.no_thinking = count(NO_THINKING)
        self.system_head = count(_SYSTEM)

    def overhead(self, thinking: bool) -> int:
        """The generation prompt (with the empty think block when thinking is off)."""
        return self.generation + (0 if thinking else self.no_thinking)

    def count_turns(
        self,
        turns: Sequence[Turn],
        systems: Sequence[Turn],
        tools: Sequence[Tool],
        n_messages: int,
        *,
        thinking: bool,
        text_count: Callable[[str, int], int],
    ) -> Qwen3Count:
        """Count normalised ``turns`` (``systems`` as given, for the breakdown).

        ``text_count(text, source)`` counts rendered text (cached, bounded per request).
        What the gateway inserts is charged to the message that made it necessary; the
        tool block is ``tools``, whose header is counted there even when a system message
        shares it.
        """
        costs = [0] * n_messages
        exact = True
        tools_cost = 0
        start = 0
        if tools:
            tools_cost = self.system_head + text_count(tools_text(tools), -1)
        if turns and turns[0].role == "system":
            start = 1
            joined = turns[0].text
            if tools:
                # "<|im_start|>system\n" + text + "\n\n" ends right before "# Tools".
                block = text_count(_SYSTEM + joined + "\n\n", systems[0].source)
                block -= self.system_head
            else:
                block = text_count(_SYSTEM + joined + "<|im_end|>\n", systems[0].source)
            # Later system messages are charged their own line; the first the rest.
            for later in systems[1:]:
                own = text_count("\n" + later.text, later.source) if later.text else 0
                costs[later.source] += own
                block -= own
            costs[systems[0].source] += block
        last_query = last_query_index(turns)
        for k in range(start, len(turns)):
            turn = turns[k]
            cost = text_count(turn_text(turns, k, last_query), turn.source)
            if turn.images:
                cost += turn.images * self.image_tokens
                exact = False
            if not all(call.valid for call in turn.calls):
                exact = False
            costs[turn.source] += cost
        overhead = self.overhead(thinking)
        total = overhead + tools_cost + sum(costs)
        return Qwen3Count(costs, overhead, tools_cost, total, exact)
