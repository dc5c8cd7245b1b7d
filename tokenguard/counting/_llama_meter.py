"""What the Llama 3 and Llama 4 meters share: caches, the fast path, the general path.

A meter holds one dialect's :class:`~._groq_llama.LlamaRules` and two text caches of one
tokenizer: message bodies (``2 * tokens + unsure``, see ``_groq_llama.body_value``) and
a leading system message's cost in the template's plain system block. The fast path
answers plain ``{"role", "content": str}`` dicts (one leading system message at most)
from those caches; anything else, or a body whose count depends on the unconfirmed
trimming, goes to the general path, which applies the whole rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..models import ModelInfo
from ._cache import TextCache
from ._groq_llama import LlamaRules, body_value, body_values, go_trim_space
from ._llama_tools import AUTO as _AUTO
from ._llama_tools import read_parallel, read_tool_choice, read_tools
from ._meter import FastPath, NewText, Request, Resources, Settings, Tally, ToolsMemo, count_new

__all__ = ["LlamaMeter"]

#: Prompt options the Llama meters render themselves (the facade bounds the others).
LLAMA_OPTIONS = frozenset({"tool_choice", "parallel_tool_calls"})


class LlamaMeter(FastPath):
    """Counts one model's prompts with one of Groq's Llama templates."""

    __slots__ = (
        "_frames",
        "bodies",
        "fast_overhead",
        "info",
        "plain",
        "rules",
        "settings",
        "systems",
        "tool_systems",
    )

    handles_options = LLAMA_OPTIONS

    def __init__(
        self,
        info: ModelInfo,
        resources: Resources,
        *,
        dialect: str,
        tokenizer: str,
        count: Callable[[str], int],
        count_many: Callable[[list[str]], list[int]] | None = None,
    ) -> None:
        """``count`` counts text as the server does with the tokenizer named ``tokenizer``,
        and ``count_many`` many texts at once; without it ``count`` is a bound, not that
        tokenizer itself (see ``body_value``)."""
        self.info = info
        self.settings: Settings = resources.settings
        name = tokenizer
        image_tokens = self.settings.image_tokens
        self.rules: LlamaRules = resources.shared(
            ("llama rules", dialect, name, image_tokens),
            lambda: LlamaRules(dialect, count, image_tokens=image_tokens),
        )
        split_edges = count_many is not None
        self.bodies: TextCache[int] = resources.text_cache(
            (name, "llama body"),
            lambda: body_value(count, split_edges=split_edges),
            None if count_many is None else lambda: body_values(count, count_many),
        )
        rules = self.rules
        self.systems: TextCache[int] = resources.text_cache(
            (name, "llama system", dialect), lambda: _system_value(rules)
        )
        # After a tool prompt the system text is a pre-token run of its own: its count.
        self.tool_systems: TextCache[int] = resources.text_cache(
            (name, "llama system after tools"),
            lambda: lambda text: 2 * count(go_trim_space(text + "\n")),
        )
        self.plain = _Frame(rules.overhead, 0, self.systems, False, True)
        self.fast_overhead = rules.overhead  # everything but the messages, without tools
        # Tool definitions and options seen -> their frame (or none: the general path).
        self._frames: ToolsMemo[_Frame] = ToolsMemo()

    # -- the fast path ----------------------------------------------------------------------

    def _fast(self, messages: Sequence[Any], costs: list[int] | None) -> int | None:
        """Plain messages without tools (see :meth:`_walk`)."""
        return self._walk(messages, costs, self.plain)

    def _walk(self, messages: Sequence[Any], costs: list[int] | None, frame: _Frame) -> int | None:
        """Plain messages only, as ``2 * tokens + unsure`` (unsure: some body's count
        depends on the unconfirmed trimming); ``None`` sends the request to the general
        path."""
        if type(messages) is not list or not messages:
            return None
        if len(messages) > self.settings.max_messages:
            return None
        lead = self._lead_system(messages[0], frame)
        if lead is None:
            return None
        v, start = lead
        if start and costs is not None:
            costs.append(v >> 1)
        turns = self._turns(messages, start, costs, frame)
        if turns is None:
            return None
        tokens = frame.overhead + (v >> 1) + (turns >> 1)
        return 2 * tokens + ((v | turns) & 1)

    def _lead_system(self, first: Any, frame: _Frame) -> tuple[int, int] | None:
        """``(2 * cost + unsure, 1)`` of a leading system message, ``(0, 0)`` without one,
        ``None`` for the general path."""
        if type(first) is not dict or first.get("role") != "system":
            return 0, 0
        if len(first) != 2 or type(first.get("content")) is not str:
            return None
        text = first["content"]
        if len(text) > self.settings.max_new_chars:
            return None
        if frame.slash and go_trim_space(text).startswith("/"):
            return None  # may join the tool list's last pre-token (o200k's [\r\n/]*)
        v = frame.systems.front.get(text)
        if v is None:
            counted = count_new(frame.systems, [text], self.settings)
            if counted is None:
                return None
            v = counted[0]
        return v, 1

    def _turns(
        self, messages: list[Any], start: int, costs: list[int] | None, frame: _Frame
    ) -> int | None:
        """The user and assistant turns from ``start`` on as ``2 * tokens + unsure``, new
        texts counted in one batch; ``None`` for the general path."""
        rules = self.rules
        role_cost = rules.role_cost
        generic = rules.dialect == "llama3"
        empty_turn = rules.empty_turn
        front = self.bodies.front
        total = 0
        unsure = 0
        prev = "assistant"
        new: dict[str, int] | None = None
        last = len(messages) - 1
        for i in range(start, len(messages)):
            m = messages[i]
            if type(m) is not dict or len(m) != 2:
                return None
            role = m.get("role")
            content = m.get("content")
            if (role != "user" and role != "assistant") or type(content) is not str:
                return None
            v = front.get(content)
            if v is None:
                # Count every new text at once (or none: too much new text, or a lone
                # surrogate, is left to the general path, which names the message).
                if new is None:
                    new = self._count_new(messages, i)
                    if new is None:
                        return None
                # ``front`` above only grows (a full front level is replaced, not
                # emptied), so a text not in it is one of the new ones.
                v = new[content]
            unsure |= v & 1
            cost = role_cost[role] + (v >> 1)
            if generic:
                if role == prev:
                    cost += empty_turn["assistant" if role == "user" else "user"]
                prev = role
            if i == last and role == "assistant" and frame.open_last:
                # Left open: no end of turn, and it replaces the generation prompt.
                cost -= 1 + rules.generation
            total += cost
            if costs is not None:
                costs.append(cost)
        return 2 * total + unsure

    def _fast_request(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None,
        options: Mapping[str, Any],
        costs: list[int] | None,
    ) -> tuple[int, int, int] | None:
        """Plain messages with tools and options seen before (see :meth:`_tools_frame`)."""
        frame = self._tools_frame(tools, options)
        return None if frame is None else self._framed(messages, costs, frame)

    def _framed(
        self, messages: Sequence[Any], costs: list[int] | None, frame: _Frame
    ) -> tuple[int, int, int] | None:
        """:meth:`_walk` with the frame's overhead and tools (see ``_fast_request``)."""
        v = self._walk(messages, costs, frame)
        return None if v is None else (v, frame.overhead - frame.tools, frame.tools)

    def _tools_frame(
        self,
        tools: Sequence[Any] | None,
        options: Mapping[str, Any],
        request: Request | None = None,
    ) -> _Frame | None:
        """The frame of a request with tools whose definitions were seen; made and kept on
        first sight when the general path gives the (checked) ``request``; ``None`` when
        the general path must count it."""
        if not LLAMA_OPTIONS.issuperset(options):
            return None
        key = self._frames.key(
            tools, (options.get("tool_choice"), options.get("parallel_tool_calls"))
        )
        if key is None:
            return None
        frame = self._frames.get(key)
        if frame is None and request is not None:
            frame = self._make_frame(request)
            self._frames.put(key, frame or _NO_FRAME)
        return None if frame is _NO_FRAME else frame

    def _make_frame(self, request: Request) -> _Frame | None:
        rules = self.rules
        specs = read_tools(request.tools, None)
        if rules.dialect == "llama3" and specs:
            return None  # GenericChat's tools are a bound: the general path marks it
        options = request.options
        names = [s.name for s in specs]
        choice = read_tool_choice(options.get("tool_choice"), names)
        parallel = read_parallel(options.get("parallel_tool_calls"))
        head = rules.system_head(specs, choice, parallel)
        head_block = rules.block_cost(head, "")
        prefill = rules.prefill_cost(choice)
        tools = head_block - rules.plain_block
        overhead = rules.base + head_block + prefill
        # After the template's own text (which ends a pre-token of its own) the system
        # text is counted alone (bar Llama 4's "/", see _walk).
        plain = head == rules.system_head((), _AUTO, True)
        systems = self.systems if plain else self.tool_systems
        return _Frame(overhead, tools, systems, rules.llama4, prefill == rules.generation)

    def _count_new(self, messages: Sequence[Any], start: int) -> dict[str, int] | None:
        """The not-yet-seen bodies of ``messages[start:]`` counted in one batch; ``None``
        when they are too much new text or not valid UTF-8."""
        front = self.bodies.front
        new = [
            content
            for m in messages[start:]
            if type(m) is dict and type(content := m.get("content")) is str and content not in front
        ]
        counted = count_new(self.bodies, new, self.settings)
        return None if counted is None else dict(zip(new, counted, strict=True))

    # -- the general path -------------------------------------------------------------------

    def count(self, request: Request) -> Tally:
        """Any message form, tools, ``tool_choice`` and ``parallel_tool_calls``."""
        if request.functions is None:
            if request.tools is None and LLAMA_OPTIONS.isdisjoint(request.options):
                frame: _Frame | None = self.plain
            else:
                frame = self._tools_frame(request.tools, request.options, request)
            if frame is not None:
                # Bodies whose trimming is unsure are counted too (the larger count,
                # reported as not exact).
                costs: list[int] = []
                fast = self._framed(request.messages, costs, frame)
                if fast is not None:
                    v, overhead, tools = fast
                    total = v >> 1
                    return Tally(costs, overhead, tools, total, total, not v & 1, None)
        budget = NewText(self.settings.max_new_chars)
        bodies = self.bodies

        def body(text: str, index: int) -> int:
            return budget.counted(bodies, text, index)

        options = request.options
        counted = self.rules.count_request(
            request.messages,
            tools=request.tools,
            functions=request.functions,
            tool_choice=options.get("tool_choice"),
            parallel_tool_calls=options.get("parallel_tool_calls"),
            body=body,
        )
        total = counted.total
        return Tally(
            counted.costs, counted.overhead, counted.tools, total, total, counted.exact, None
        )


class _Frame(NamedTuple):
    """What the fast path needs of a request besides its messages."""

    #: Everything but the messages: BOS, the system block's own text, tools, prefill.
    overhead: int
    tools: int
    #: A lone leading system message's cost (``2 * cost + unsure``).
    systems: TextCache[int]
    #: Whether a system text starting with "/" needs the general path (Llama 4 tools).
    slash: bool
    #: Whether a last assistant message is left open (no prefill).
    open_last: bool


#: Kept for definitions only the general path counts (GenericChat's tools, say).
_NO_FRAME = _Frame(0, 0, TextCache(len), False, False)


def _system_value(rules: LlamaRules) -> Callable[[str], int]:
    """A lone leading system message's cost in the plain system block, as ``2 * cost +
    unsure`` (Llama 3's GenericChat does not trim it, so its trimming is unconfirmed)."""
    head = rules.system_head((), _AUTO, True)
    head_block = rules.block_cost(head, "")
    if rules.dialect == "llama3":
        bodies = body_value(rules.count)
        role = rules.role_cost["system"]

        def generic(text: str) -> int:
            if not text:
                return 0
            v = bodies(text)
            # Unsure whenever it has blanks at its edges, as the general path says.
            return 2 * (role + (v >> 1)) + (text != text.strip())

        return generic

    def value(text: str) -> int:
        return 2 * (rules.block_cost(head, go_trim_space(text + "\n")) - head_block)

    return value
