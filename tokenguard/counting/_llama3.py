"""Meta's Llama 3 / 3.1 chat templates as token arithmetic.

Groq counts ``usage.prompt_tokens`` by rendering the template and encoding the whole
string with the Llama 3 tokenizer (special tokens recognised). tiktoken splits the
text at special tokens and pre-tokenizes each piece with a regex that has no
look-behind, so a rendered prompt's count is the sum of its pieces' counts:

``<|start_header_id|>{role}<|end_header_id|>`` costs 2 + tokens(role); the ``\\n\\n``
that follows is always its own pre-token (``\\s*[\\r\\n]+`` stops at the body's first
character, which ``strip`` made non-blank), hence exactly one token (271); then
tokens(body.strip()); then ``<|eot_id|>``. The 3.1 system preamble ends in ``\\n\\n``
(or ``}\\n\\n`` after tool definitions) which likewise ends its own pre-token, so the
caller's system text that follows is counted on its own. ``tests/test_counting_exact.py``
checks all of this against the official templates rendered with Jinja and encoded whole.

The tool rules follow Meta's 3.1 template with the tools in the system block (what the
emulator does); Groq's own rendering of tool forms is not confirmed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CUTTING_KNOWLEDGE",
    "TOOLS_INTRO",
    "Llama3Costs",
    "system_prefix",
]

CUTTING_KNOWLEDGE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
TOOLS_INTRO = (
    "You have access to the following functions. To call a function, please respond with "
    "JSON for a function call."
    'Respond in the format {"name": function name, "parameters": dictionary of argument '
    "name and its value}."
    "Do not use variables.\n\n"
)


def system_prefix(template: str, tools: Sequence[Any] | None) -> str:
    """The text a template puts in its system block before the caller's system message."""
    head = CUTTING_KNOWLEDGE if template == "llama3.1" else ""
    if not tools:
        return head
    defs = "".join(json.dumps(tool, indent=4) + "\n\n" for tool in tools)
    return "Environment: ipython\n" + head + TOOLS_INTRO + defs


class Llama3Costs:
    """Fixed token costs of one template, given the function counting text as the server does."""

    def __init__(self, template: str, count: Callable[[str], int]) -> None:
        self.template = template
        self._count = count
        # start_header + end_header + "\n\n" + eot, plus the role's own tokens.
        headers = ("system", "developer", "user", "assistant", "ipython")
        self.header_cost = {role: 4 + count(role) for role in headers}
        # Input roles as they appear in requests; tool results show under "ipython".
        self.role_cost = dict(self.header_cost)
        self.role_cost["tool"] = self.role_cost["function"] = self.header_cost["ipython"]
        # <|begin_of_text|> + the generation prompt (an assistant header and "\n\n").
        self.base = 1 + self.header_cost["assistant"] - 1
        # Llama 3.1 always opens with its own system block, into which a leading system
        # message is merged; Llama 3 does so only when tools are given.
        self.consumes_system = template == "llama3.1"
        self.plain_system_block = (
            self.header_cost["system"] + count(CUTTING_KNOWLEDGE) if self.consumes_system else 0
        )
        self._tools_cost: dict[str, int] = {}

    def system_block(self, tools: Sequence[Any] | None) -> tuple[int, bool]:
        """Tokens of the template's own system block (without the caller's system text),
        and whether a leading system message is merged into it."""
        if not tools:
            return self.plain_system_block, self.consumes_system
        prefix = system_prefix(self.template, tools)
        cost = self._tools_cost.get(prefix)
        if cost is None:
            cost = self.header_cost["system"] + self._count(prefix)
            if len(self._tools_cost) > 256:
                self._tools_cost.clear()
            self._tools_cost[prefix] = cost
        return cost, True
