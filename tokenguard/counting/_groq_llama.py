"""Groq's Llama prompts (3.1/3.3, Llama 3 and Llama 4) as token arithmetic.

A special token ends every pre-token, so a prompt's count is the sum of its pieces between
special tokens: each message costs the same wherever it sits, and the rest (BOS, the
system block's own text, the tool prompt, the generation prompt and its prefill) is the
overhead. Where Groq's rule is not confirmed both readings are counted and the larger one
is reported as not exact. Pure: the caller passes the functions that count text.
The rules: docs/llama.md; the derivation: docs/counting-internals.md.
"""

from __future__ import annotations

import functools
import json
import unicodedata
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import InvalidMessages
from ._gojson import go_json
from ._llama_tools import (
    AUTO,
    FunctionSpec,
    ToolChoice,
    llama4_tools_text,
    llama31_prefill,
    llama31_tools_text,
    read_parallel,
    read_tool_choice,
    read_tools,
)
from ._messages import as_mapping, normalize_message

__all__ = [
    "DATE_LINES",
    "LATER_SYSTEM_MARGIN",
    "LlamaCount",
    "LlamaRules",
    "body_value",
    "body_values",
    "go_trim_space",
    "trailing_edge",
]

#: Llama 3.1's date lines. Groq writes today's date; every English month name is one
#: Llama 3 token and the day is always two digits, so any date costs the same.
DATE_LINES = "Cutting Knowledge Date: December 2023\nToday Date: 26 July 2024\n\n"
#: Tokens charged beyond its own text to a system message joined after another one.
LATER_SYSTEM_MARGIN = 2
#: What Llama 3 (GenericChat) adds for tools, which it renders with a generic tool
#: prompt of about 550 tokens plus the tools as tab-indented JSON: a bound, not exact.
GENERIC_TOOLS_ALLOWANCE = 800

# Go's unicode.IsSpace, what strings.TrimSpace removes (Python's strip also removes
# \x1c-\x1f, which Go keeps).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501
_RESULT_HEAD = '  {\n    "response": '
_RESULT_TAIL = "\n  },\n"
_LAST_RESULT_TAIL = "\n  }\n"


def go_trim_space(text: str) -> str:
    """``strings.TrimSpace``: what Go trims from the joined system text."""
    return text.strip(_GO_SPACE)


def body_value(count: Callable[[str], int], *, split_edges: bool = True) -> Callable[[str], int]:
    """A body's cached value: ``2 * tokens + unsure``, where tokens is the larger count
    of ``"\\n\\n" + body`` untrimmed and trimmed, and unsure says they differ.

    With ``split_edges`` (``count`` is a regex-pre-tokenized BPE, not a bound), a body
    whose only blanks at its edges are trailing is encoded once, trimmed, and the
    untrimmed count is derived from it (see :func:`trailing_edge`). What its trailing
    blanks add is settled by the body's last :data:`EDGE_KEY` characters and its blanks
    whenever the punctuation run ending the text starts inside them, so it is worked
    out once per such ending (code's ``";\\n"``, ``"}\\n"``...) and kept.
    """
    return _BodyValue(count, split_edges).value


def body_values(
    count: Callable[[str], int], count_many: Callable[[list[str]], list[int]]
) -> Callable[[list[str]], list[int]]:
    """:func:`body_value` of each of many bodies (``count`` a tokenizer, as with
    ``split_edges``): those without blanks at their edges, most of them, are counted by
    ``count_many`` (``count`` of each, in one step) and the rest one by one."""
    return functools.partial(_BodyValue(count, True).values, count_many)


class _BodyValue:
    """:func:`body_value` for one counting function, in its steps."""

    __slots__ = ("added", "count", "header", "pieces", "split_edges")

    def __init__(self, count: Callable[[str], int], split_edges: bool) -> None:
        self.count = count
        self.split_edges = split_edges
        # Facts of the tokenizer, not of any text: shared by every counter that counts
        # with ``count`` (``server_counter`` makes one per encoding), each bounded.
        self.pieces, self.added = _EDGE_FACTS.setdefault(count, ({}, {}))
        # Before a text that starts with no blank, "\n\n" is a pre-token of its own (no
        # pre-tokenizer alternative runs from CR/LF into anything else), so it adds its
        # own count: the body is encoded alone, without a copy that carries the header.
        self.header = count("\n\n")

    def value(self, body: str) -> int:
        """``2 * tokens + unsure`` of ``body`` (see :func:`body_value`)."""
        count = self.count
        trimmed = body.strip()
        if not self.split_edges:  # a bound: count the text the template renders
            m = count("\n\n" + trimmed)
            n = m if trimmed == body else count("\n\n" + body)
            return 2 * max(n, m) + (n != m)
        m = self.header + count(trimmed)
        if trimmed == body:
            return 2 * m
        extra = self._added_by(body, trimmed) if trimmed and body.startswith(trimmed) else None
        n = count("\n\n" + body) if extra is None else m + extra
        return 2 * max(n, m) + (n != m)

    def values(self, count_many: Callable[[list[str]], list[int]], bodies: list[str]) -> list[int]:
        """:meth:`value` of each of ``bodies``, those without edge blanks counted by
        ``count_many`` in one step."""
        plain = [b.strip() == b for b in bodies]
        counts = iter(count_many([b for b, p in zip(bodies, plain, strict=True) if p]))
        header = self.header
        return [
            2 * (header + next(counts)) if p else self.value(b)
            for b, p in zip(bodies, plain, strict=True)
        ]

    def _added_by(self, body: str, trimmed: str) -> int | None:
        """What ``body``'s trailing blanks add to ``trimmed``'s count, or ``None``."""
        end = len(trimmed)
        cut = end - EDGE_KEY
        if cut <= 0 or len(body) - end > EDGE_KEY:
            return self._blanks_add(trimmed, body[end:])[0]
        ending = body[cut:]
        added = self.added
        kept = added.get(ending)  # one lookup: another thread may empty the dict
        if kept is not None:
            return kept[0]
        extra, anywhere = self._blanks_add(ending[:EDGE_KEY], ending[EDGE_KEY:])
        if not anywhere:
            return self._blanks_add(trimmed, body[end:])[0]
        if len(added) >= 4096:
            added.clear()
        added[ending] = (extra,)
        return extra

    def _blanks_add(self, trimmed: str, tail: str) -> tuple[int | None, bool]:
        """What ``tail`` adds to ``trimmed``'s count (``None``: not settled here), and
        whether that holds for any text ending with ``trimmed`` (see :func:`_edge`)."""
        edge, anywhere = _edge(trimmed, tail)
        if edge is None:
            return None, anywhere
        last, joined, rest = edge
        n = self._small(rest) if rest else 0
        if joined:
            n += self._small(last + joined) - self._small(last)
        return n, anywhere

    def _small(self, text: str) -> int:
        """The count of a short piece, kept (at most 1,024 of them)."""
        pieces = self.pieces
        k = pieces.get(text)
        if k is None:
            k = self.count(text)
            if len(pieces) < 1024:
                pieces[text] = k
        return k


#: How many of a trimmed body's last characters key what its trailing blanks add.
EDGE_KEY = 16
# Per counting function: the few short strings the derivation counts (".\n", "\n",
# " "...) -> their counts, and a body's ending (EDGE_KEY characters and the blanks) ->
# a 1-tuple of what the blanks add (None in it: the body takes a second encode).
_EDGE_FACTS: weakref.WeakKeyDictionary[
    Callable[[str], int], tuple[dict[str, int], dict[str, tuple[int | None]]]
] = weakref.WeakKeyDictionary()


def trailing_edge(body: str, trimmed: str) -> tuple[str, str, str] | None:
    """How ``body``'s trailing blanks change the pre-tokens of ``trimmed``, or ``None``
    when that is not settled here (leading blanks, unusual blanks or characters).

    Returns ``(last, joined, rest)``: ``joined`` (CR/LF) joins ``trimmed``'s last
    pre-token ``last``, and ``rest`` is pre-tokens of its own; so with ``x = "\\n\\n"``,
    ``count(x + body) == count(x + trimmed) - count(last) + count(last + joined) +
    count(rest)``. Why it holds: the pre-tokenizers of Llama 3 and Llama 4 (o200k-style)
    match left to right without look-behind, and the only alternative that runs from a
    non-blank into blanks is punctuation's `` ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*``
    (``[\\r\\n/]*`` in o200k). After a letter or a number, or before a space or a tab,
    nothing joins. After punctuation, the last pre-token is the run of punctuation and
    symbols at the end, with the one space before it if there is one; it takes the CR/LF
    run that follows. Special tokens (``<|...|>``) and marks are left to a second encode.
    """
    if not trimmed or not body.startswith(trimmed):
        return None  # leading blanks join the "\n\n" before them
    return _edge(trimmed, body[len(trimmed) :])[0]


def _edge(trimmed: str, tail: str) -> tuple[tuple[str, str, str] | None, bool]:
    """:func:`trailing_edge` of ``trimmed + tail``, and whether the answer holds for any
    text ending with ``trimmed`` (False when the punctuation run reaches its start)."""
    if not tail or tail.strip(" \t\r\n"):
        return None, True  # other blanks may not be \s to the regex
    if tail[0] in " \t" or unicodedata.category(trimmed[-1])[0] in "LN":
        return ("", "", tail), True
    rest = tail.lstrip("\r\n")
    joined = tail[: len(tail) - len(rest)]
    j = len(trimmed)
    while j > 0 and unicodedata.category(trimmed[j - 1])[0] in "PS":
        j -= 1
    if j == len(trimmed):
        return None, True
    # The run starts a pre-token after the "\n\n" (j == 0), a letter or a number, or a
    # blank (a space joins it); after CR/LF, unless it starts with "/": o200k's
    # punctuation takes the CR/LF and "/" that follow it ("}.\n/" is one pre-token).
    before = trimmed[j - 1] if j > 0 else "\t"
    if before in "\r\n":
        if trimmed[j] == "/":
            return None, True
    elif not (before in " \t" or unicodedata.category(before)[0] in "LN"):
        return None, True
    last = trimmed[j - 1 :] if before == " " else trimmed[j:]
    if "|>" in last or "<|" in last:
        return None, j > 0  # a special token's end: the pieces are not plain text
    return (last, joined, rest), j > 0


class LlamaCount(NamedTuple):
    """One request counted: ``total`` exact (when ``exact``); the costs sum to at least
    ``total - overhead - tools``, equal unless a bound was needed (see the module)."""

    costs: list[int]
    overhead: int
    tools: int
    total: int
    exact: bool


class _Msg(NamedTuple):
    role: str  # system, user, assistant, tool (function results are tool)
    body: str  # text, or the rendered tool calls
    images: int
    calls: bool


class LlamaRules:
    """The fixed costs of one Llama dialect and the rule for a whole request.

    ``count`` counts text as the server encodes it (special tokens recognised).
    """

    def __init__(self, dialect: str, count: Callable[[str], int], *, image_tokens: int) -> None:
        if dialect not in ("llama3", "llama3.1", "llama4"):
            raise ValueError(f"unknown Llama dialect {dialect!r}")
        self.dialect = dialect
        self.count = count
        self.image_tokens = image_tokens
        self.llama4 = dialect == "llama4"
        # Header start, header end and end of turn, plus the role's own tokens.
        self.role_cost = {r: 3 + count(r) for r in ("system", "user", "assistant", "ipython")}
        self.role_cost["tool"] = self.role_cost["ipython"]
        blank = count("\n\n")
        # The generation prompt: an assistant header and its blank line, no end of turn.
        self.generation = self.role_cost["assistant"] - 1 + blank
        # BOS, plus Llama 3.1's system block that is always there.
        self.base = 1
        self.plain_block = 0
        if dialect == "llama3.1":
            self.plain_block = self.role_cost["system"] + count("\n\n" + DATE_LINES)
        self.overhead = self.base + self.plain_block + self.generation
        self.empty_turn = {r: self.role_cost[r] + blank for r in ("user", "assistant")}
        if self.llama4:
            self.result_frame = self.role_cost["ipython"] + count("\n\n[\n") + count("]")
        self._blocks: dict[str, int] = {}

    # -- pieces ---------------------------------------------------------------------------

    def block_cost(self, head: str, system_text: str) -> int:
        """The system block: the template's text ``head`` then the joined system text."""
        if not head and not system_text:
            return 0
        if not system_text:
            cost = self._blocks.get(head)
            if cost is None:
                cost = self.role_cost["system"] + self.count("\n\n" + head)
                if len(self._blocks) > 256:
                    self._blocks.clear()
                self._blocks[head] = cost
            return cost
        return self.role_cost["system"] + self.count("\n\n" + head + system_text)

    def system_head(self, specs: Sequence[FunctionSpec], choice: ToolChoice, parallel: bool) -> str:
        """The template's own text in the system block, before the caller's."""
        if self.llama4:
            return llama4_tools_text(specs, choice)
        if self.dialect == "llama3.1":
            return DATE_LINES + llama31_tools_text(specs, choice, parallel)
        return ""

    def prefill_cost(self, choice: ToolChoice) -> int:
        """The generation prompt with Llama 3.1's forced prefill."""
        prefill = llama31_prefill(choice) if self.dialect == "llama3.1" else ""
        if not prefill:
            return self.generation
        return self.role_cost["assistant"] - 1 + self.count("\n\n" + prefill)

    # -- a whole request ------------------------------------------------------------------

    def count_request(
        self,
        messages: Sequence[Any],
        *,
        tools: object = None,
        functions: object = None,
        tool_choice: object = None,
        parallel_tool_calls: object = None,
        body: Callable[[str, int], int],
    ) -> LlamaCount:
        """Count one request; ``body(text, index)`` gives a body's cached value."""
        specs = read_tools(tools, functions)
        choice = AUTO
        if specs or tool_choice is not None:
            choice = read_tool_choice(tool_choice, [s.name for s in specs])
        parallel = read_parallel(parallel_tool_calls)
        msgs = [self._read(m, i) for i, m in enumerate(messages)]
        # Legacy functions: whether Groq renders them is not known; rendered as tools.
        exact = functions is None and not any(m.images or m.role == "developer" for m in msgs)
        head = self.system_head(specs, choice, parallel)
        head_block = self.block_cost(head, "")
        tools_cost = head_block - self.plain_block
        overhead = self.base + self.plain_block
        costs = [0] * len(msgs)
        total = overhead + tools_cost
        # System messages (developer ones counted as system: a bound, never below).
        sys_at = [i for i, m in enumerate(msgs) if m.role in ("system", "developer")]
        if sys_at:
            total += self._systems(msgs, sys_at, head, head_block, costs, body)
            if self.dialect == "llama3" and any(
                msgs[i].body != msgs[i].body.strip() for i in sys_at
            ):
                exact = False  # GenericChat does not trim system text either: unconfirmed
        # The generation prompt is overhead; a last open assistant message is charged
        # its piece less that prompt, which it replaces.
        prefill = self.prefill_cost(choice)
        turns, turns_exact = self._turns(msgs, prefill, costs, body)
        total += turns + prefill
        overhead += prefill
        if self.dialect == "llama3" and specs:
            allowance = GENERIC_TOOLS_ALLOWANCE + 2 * sum(self.count(s.go_json()) for s in specs)
            tools_cost += allowance
            total += allowance
            turns_exact = False
        return LlamaCount(costs, overhead, tools_cost, total, exact and turns_exact)

    def _turns(
        self, msgs: list[_Msg], prefill: int, costs: list[int], body: Callable[[str, int], int]
    ) -> tuple[int, bool]:
        """The tokens of every message but the system ones (each cost set in ``costs``),
        and whether they are exact."""
        generic = self.dialect == "llama3"
        last = self._last_turn(msgs)
        open_last = last >= 0 and msgs[last].role == "assistant" and prefill == self.generation
        total = 0
        exact = True
        pending = False
        prev_role = "assistant"  # GenericChat pads a leading assistant with a user turn
        i = 0
        while i < len(msgs):
            m = msgs[i]
            role = m.role
            if role in ("system", "developer"):
                i += 1
                continue
            if self.llama4 and role == "tool" and pending and msgs[i - 1].role == "assistant":
                # Llama 4 groups the results that follow a call into one ipython turn.
                j = i
                while j < len(msgs) and msgs[j].role == "tool":
                    j += 1
                total += self._group(msgs, i, j, costs, body)
                pending = False
                i = j
                continue
            value = body(m.body, i)
            cost = self.role_cost[role] + (value >> 1) + m.images * self.image_tokens
            if value & 1:
                exact = False
            if generic:
                if role == prev_role and role in ("user", "assistant"):
                    cost += self.empty_turn["assistant" if role == "user" else "user"]
                prev_role = role
                if m.calls or role == "tool":
                    # GenericChat rewrites tool turns in a form not reproduced here (the
                    # model is retired: Groq refuses it); counted as Llama 3.1 writes them.
                    exact = False
            if i == last and open_last:
                cost -= 1 + self.generation  # no end of turn, no generation prompt
            if role == "assistant" and m.calls:
                pending = True
            costs[i] = cost
            total += cost
            i += 1
        return total, exact

    def _last_turn(self, msgs: list[_Msg]) -> int:
        """The index of the message the generation prompt follows (-1: none)."""
        if self.dialect != "llama3":
            return len(msgs) - 1
        # GenericChat moves the system messages out first, then looks at the last one.
        rest = [i for i, m in enumerate(msgs) if m.role not in ("system", "developer")]
        return rest[-1] if rest else -1

    def _systems(
        self,
        msgs: list[_Msg],
        sys_at: list[int],
        head: str,
        head_block: int,
        costs: list[int],
        body: Callable[[str, int], int],
    ) -> int:
        """The joined system text's exact cost; each message charged (see the module)."""
        if self.dialect == "llama3":
            # GenericChat joins the non-empty texts with "\n" and trims nothing.
            texts = [msgs[i].body for i in sys_at]
            joined = "\n".join(t for t in texts if t)
            total = self.role_cost["system"] + (body(joined, sys_at[0]) >> 1) if joined else 0
            first = texts[0]
            costs[sys_at[0]] = (
                self.role_cost["system"] + (body(first, sys_at[0]) >> 1) if first else 0
            )
        else:
            joined = go_trim_space("".join(msgs[i].body + "\n" for i in sys_at))
            total = self.block_cost(head, joined) - head_block
            first_text = go_trim_space(msgs[sys_at[0]].body + "\n")
            costs[sys_at[0]] = self.block_cost(head, first_text) - head_block
        # A later one may become the first (the others dropped): when the template has no
        # text of its own, it then opens the block, so it is charged the block's frame.
        frame = 0 if head else self.role_cost["system"] + 1
        for i in sys_at[1:]:
            costs[i] = self.count("\n" + msgs[i].body) + LATER_SYSTEM_MARGIN + frame
        return total

    def _group(
        self,
        msgs: list[_Msg],
        start: int,
        stop: int,
        costs: list[int],
        body: Callable[[str, int], int],
    ) -> int:
        """Llama 4's tool results ``start:stop`` as one ``ipython`` turn: returns the
        exact cost and charges each result the larger of its two spellings."""
        total = self.result_frame
        for k in range(start, stop):
            text = msgs[k].body
            body(text, k)  # charges new text to the request's bound
            last = self.count(_RESULT_HEAD + text + _LAST_RESULT_TAIL)
            inner = self.count(_RESULT_HEAD + text + _RESULT_TAIL)
            total += last if k == stop - 1 else inner
            costs[k] = max(last, inner) + (self.result_frame if k == start else 0)
        return total

    def _read(self, raw: object, index: int) -> _Msg:
        msg = normalize_message(raw, index)  # validates and reads the content
        role = msg.header
        if role == "ipython":
            role = "tool"
        if not msg.tool_form or role == "tool":
            return _Msg(role, msg.body, msg.images, False)
        message = as_mapping(raw, index, "message")
        calls = message.get("tool_calls")
        if not calls:
            calls = [{"function": message.get("function_call")}]
        functions = [
            as_mapping(as_mapping(c, index, "tool call").get("function"), index, "f") for c in calls
        ]
        if self.llama4:
            return _Msg("assistant", self._llama4_calls(functions, index), 0, True)
        rendered = "\n".join(
            f"<function={f['name']}>{_verbatim(f.get('arguments', ''))}</function>"
            for f in functions
        )
        return _Msg("assistant", rendered, 0, True)

    @staticmethod
    def _llama4_calls(functions: Sequence[Mapping[str, Any]], index: int) -> str:
        items = []
        for f in functions:
            arguments = f.get("arguments", "")
            try:
                args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
            except ValueError:
                args = None
            if args is not None and not isinstance(args, dict):
                args = None
            if args is None and arguments != "null":
                raise InvalidMessages(
                    f"tool call {f['name']!r} has arguments {str(arguments)[:60]!r}; Llama 4 "
                    "needs a JSON object (Groq re-encodes them and refuses anything else)",
                    index=index,
                )
            obj = {"name": f["name"], "parameters": args}
            items.append("  " + go_json(obj, indent="  ", prefix="  "))
        return "[\n" + ",\n".join(items) + "\n]"


def _verbatim(arguments: object) -> str:
    """Llama 3 copies a call's arguments string as given (a dict is sent as its JSON)."""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, separators=(",", ":"))
