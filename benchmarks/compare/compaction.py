"""Table 3's extra row: pydantic-ai-harness's ``SlidingWindowCompaction`` on its own.

It runs outside an agent through ``compact_now(strategy, messages, model=...)`` on
pydantic-ai's message objects; the chats of benchmarks/bench_fitting.py are mapped to
those objects and back (system/user/tool parts in requests, text/tool calls in
responses). Configured as its docs describe: trigger at the allowed prompt
(``max_tokens``), keep a recent suffix of at least ``keep_tokens`` (half of it, as its
example halves the history), tool calls kept with their results, its default estimate
(about 4 characters per token).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import statistics
from typing import Any

import tokenguard as tg
from tokenguard.emulator import running

from .workload import Messages

CONFIG = (
    "`compact_now(SlidingWindowCompaction(max_tokens=allowed, keep_tokens=allowed // 2), "
    "messages, model='test')`, its default token estimate"
)


def _to_pydantic(messages: Messages) -> list[Any]:
    from pydantic_ai.messages import (  # type: ignore[import-not-found, unused-ignore]
        ModelRequest,
        ModelResponse,
        SystemPromptPart,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )

    out: list[Any] = []
    names: dict[str, str] = {}
    for m in messages:
        role = m["role"]
        if role == "system":
            out.append(ModelRequest(parts=[SystemPromptPart(content=m["content"])]))
        elif role == "user":
            out.append(ModelRequest(parts=[UserPromptPart(content=m["content"])]))
        elif role == "assistant":
            parts: list[Any] = [TextPart(content=m["content"])] if m.get("content") else []
            for c in m.get("tool_calls") or []:
                names[c["id"]] = c["function"]["name"]
                parts.append(
                    ToolCallPart(
                        tool_name=c["function"]["name"],
                        args=c["function"]["arguments"],
                        tool_call_id=c["id"],
                    )
                )
            out.append(ModelResponse(parts=parts))
        elif role == "tool":
            part = ToolReturnPart(
                tool_name=names.get(m["tool_call_id"], "tool"),
                content=m["content"],
                tool_call_id=m["tool_call_id"],
            )
            last = out[-1] if out else None
            if isinstance(last, ModelRequest) and all(
                isinstance(p, ToolReturnPart) for p in last.parts
            ):
                # One request holds a call's results, as in a run (pydantic-ai types parts as
                # a Sequence since 2.x; it is a list).
                last.parts.append(part)  # type: ignore[attr-defined, unused-ignore]
            else:
                out.append(ModelRequest(parts=[part]))
    return out


def _to_openai(messages: list[Any]) -> Messages:
    from pydantic_ai.messages import (  # type: ignore[import-not-found, unused-ignore]
        ModelRequest,
        SystemPromptPart,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )

    out: Messages = []
    for msg in messages:
        if isinstance(msg, ModelRequest):
            for p in msg.parts:
                if isinstance(p, SystemPromptPart):
                    out.append({"role": "system", "content": p.content})
                elif isinstance(p, UserPromptPart):
                    out.append({"role": "user", "content": str(p.content)})
                elif isinstance(p, ToolReturnPart):
                    content = p.content if isinstance(p.content, str) else json.dumps(p.content)
                    out.append({"role": "tool", "tool_call_id": p.tool_call_id, "content": content})
                else:  # e.g. a compaction receipt: sent as a user note
                    out.append({"role": "user", "content": str(getattr(p, "content", ""))})
        else:
            text = "".join(p.content for p in msg.parts if isinstance(p, TextPart))
            calls = [
                {
                    "id": p.tool_call_id,
                    "type": "function",
                    "function": {"name": p.tool_name, "arguments": p.args_as_json_str()},
                }
                for p in msg.parts
                if isinstance(p, ToolCallPart)
            ]
            m: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                m["tool_calls"] = calls
            out.append(m)
    return out


def available() -> str | None:
    try:
        importlib.import_module("pydantic_ai_harness.compaction")
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def table(turns: int = 100, samples: int = 4) -> str:
    """Rows in bench_fitting's comparison format, for the same chats and verdicts."""
    bf: Any = importlib.import_module("benchmarks.bench_fitting")
    why = available()
    if why:
        return f"pydantic-ai-harness compaction: {why}\n"
    from pydantic_ai_harness.compaction import (  # type: ignore[import-not-found, unused-ignore]
        SlidingWindowCompaction,
        compact_now,
    )

    strategy = SlidingWindowCompaction(max_tokens=bf.ALLOWED, keep_tokens=bf.ALLOWED // 2)

    def trim(messages: Messages) -> Messages:
        got = asyncio.run(compact_now(strategy, _to_pydantic(messages), model="test"))
        return _to_openai(got)

    lines = []
    lengths = [turns + 3 * k for k in range(samples)]
    with running(model=bf.MODEL, tpm=bf.TPM, rpm=0, tpd=0, rpd=0) as em:
        for kind in bf.TEXTS:
            fills: list[float] = []
            accepted = broken = 0
            for n in lengths:
                out = trim(bf.conversation(kind, n))
                fills.append(tg.count_tokens(out, bf.MODEL) / bf.ALLOWED)
                accepted += bf.verdict(em, out) == "accepted"
                broken += bf.broken_tool_groups(out)
            done = len(fills)
            lines.append(
                f"{kind:<9} {'pydantic-ai sliding':<22} {statistics.median(fills):>8.1%} "
                f"{min(fills):>7.1%} {max(fills):>7.1%} {accepted:>5}/{done:<3} "
                f"{done - accepted:>4}/{done:<3} {broken:>9}/{done:<3}"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table())
