"""Conversations for the fitting tests (Hypothesis strategies) and the invariants a fit keeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.fitting import MARKER, FitResult, layout

MODEL = "llama3-8b-8192"

_SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # sum\n",
    "Привет, как дела? Расскажи о погоде в Москве.",
    "日本語のテキストです。東京の天気はどうですか？",
    "数学は楽しい。🙂 émigré naïve café",
    "SELECT * FROM users WHERE id = 42;",
    "",
    "   ",
]

short_text = st.one_of(
    st.sampled_from(_SAMPLES),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60),
)
text = short_text | st.builds(lambda s, n: s * n, st.sampled_from(_SAMPLES[:6]), st.integers(2, 60))
huge_text = st.builds(lambda s, n: s * n, st.sampled_from(_SAMPLES[:6]), st.integers(300, 1200))


@st.composite
def tool_group(draw: st.DrawFn, n: int, body: Any = text) -> list[dict[str, Any]]:
    """An assistant message calling 1-3 tools, then one result per call."""
    calls = draw(st.integers(1, 3))
    ids = [f"call_{n}_{k}" for k in range(calls)]
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": i,
                "type": "function",
                "function": {"name": "lookup", "arguments": f'{{"q": "{k}"}}'},
            }
            for k, i in enumerate(ids)
        ],
    }
    results = [{"role": "tool", "tool_call_id": i, "content": draw(body)} for i in ids]
    return [call, *results]


@st.composite
def conversations(
    draw: st.DrawFn, *, huge: bool = True, max_turns: int = 40, small: bool = False
) -> list[Any]:
    """A conversation: optional system message(s), turns of any role, tool groups, a last
    user message (sometimes followed by a tool exchange of the current turn). ``small``
    keeps every message short (for the fill rule); ``huge`` adds some very long ones."""
    text = short_text if small else globals()["text"]
    out: list[Any] = []
    if draw(st.booleans()):
        out.append({"role": "system", "content": draw(text)})
    for n in range(draw(st.integers(max_turns // 2 if small else 0, max_turns))):
        kind = draw(st.sampled_from(["user", "assistant", "user", "assistant", "tools", "system"]))
        if kind == "tools":
            out.extend(draw(tool_group(n, text)))
        elif kind == "system" and draw(st.integers(0, 5)) == 0:
            out.append({"role": "system", "content": draw(text)})
        else:
            role = "user" if kind == "system" else kind
            body = draw(huge_text) if huge and draw(st.integers(0, 15)) == 0 else draw(text)
            out.append({"role": role, "content": body})
    last = draw(huge_text) if huge and draw(st.integers(0, 6)) == 0 else draw(text)
    out.append({"role": "user", "content": last})
    if draw(st.integers(0, 4)) == 0:
        out.extend(draw(tool_group(999, text)))
    return out


def check_invariants(original: Sequence[Any], result: FitResult) -> None:
    """What every truncating or summarizing fit keeps, whatever the conversation."""
    out = result.messages
    assert result.tokens_after == tg.count_tokens(out, model=result.model)
    assert result.tokens_after <= result.allowed
    ids = {id(m): i for i, m in enumerate(original)}
    # Every system message of the request is still there, in order.
    systems = [m for m in original if m.get("role") == "system"]
    kept_systems = [m for m in out if id(m) in ids and m.get("role") == "system"]
    assert kept_systems == systems
    # Order kept: what comes from the request comes in the request's order.
    positions = [ids[id(m)] for m in out if id(m) in ids]
    assert positions == sorted(positions)
    # New messages are only shortened copies and the summary.
    for m in out:
        if id(m) in ids:
            continue
        content = m["content"]
        text_ = content if isinstance(content, str) else content[0]["text"]
        is_summary = m["role"] == "system" and text_.startswith(tg.fitting.SUMMARY_PREFIX)
        is_cut = "characters cut here to fit the context" in text_
        assert is_summary or is_cut, m
    # The newest user message is kept (whole or shortened inside, never dropped).
    lay = layout(original)
    if lay.turn:
        newest = original[lay.turn[0]]
        if newest.get("role") == "user":
            assert any(
                m is newest or (m.get("role") == "user" and id(m) not in ids and _cut_of(newest, m))
                for m in out
            )
        # Truncation opens the kept conversation with a question, never with an answer
        # (or a tool result) whose question it dropped.
        opening = next((m for m in out if m.get("role") not in ("system", "developer")), None)
        if result.strategy == "truncate" and newest.get("role") == "user":
            assert opening is not None
            assert opening.get("role") == "user", opening
    # A budget may drop history, never cut a message: that is refused instead.
    if result.bound_by == "budget":
        assert result.shortened == 0
    check_tool_groups(out)


def _cut_of(original: dict[str, Any], cut: dict[str, Any]) -> bool:
    whole, short = original["content"], cut["content"]
    head = short.split(MARKER.split("{")[0], 1)[0]
    return bool(isinstance(whole, str) and whole.startswith(head))


def check_tool_groups(messages: Sequence[Any]) -> None:
    """No tool result without its call, no call without all its results."""
    open_ids: set[str] = set()
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            assert not open_ids, f"results missing for {open_ids}"
            open_ids = {c["id"] for c in m["tool_calls"]}
        elif role == "tool":
            assert m["tool_call_id"] in open_ids, f"orphan tool result {m['tool_call_id']}"
            open_ids.discard(m["tool_call_id"])
        elif role != "system":
            assert not open_ids, f"results missing for {open_ids}"
    # A call still waiting for results may only end the request.


def exchange_costs(messages: Sequence[Any], model: str = MODEL) -> list[int]:
    """The cost of each droppable exchange: a question with the answers and tool calls
    after it (what truncation leaves out at most beyond the room it fills, since the kept
    history opens with a question)."""
    costs = tg.count_prompt(messages, model).messages
    out: list[int] = []
    for u in layout(messages).units:
        cost = sum(costs[i] for i in u)
        if out and messages[u[0]].get("role") != "user":
            out[-1] += cost
        else:
            out.append(cost)
    return out
