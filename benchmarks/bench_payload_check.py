"""What refusing unsendable payloads costs per call, on a typical 10-message request.

Two bodies of 10 messages for ``llama-3.1-8b-instant``: ``plain`` (system, user and
assistant text: the counter's fast path, which reads only plain text and needs no walk)
and ``tools`` (tool calls and results, tool definitions, ``temperature``, ``user``:
the general path, which walks every value once). For each, the median time per call of
what the guard does before sending: ``read_body`` (the instrumented client's reading of
the body) and ``count_request`` (warm caches), and of the walk alone
(``_sendable.check_messages`` and ``check_field``), when this checkout has it.

Run: ``.venv/bin/python benchmarks/bench_payload_check.py [--repeat N]``; run it on
the commit before the check to compare (the walk line is then left out).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import tokenguard as tg
from tokenguard._guard._request import read_body

MODEL = "llama-3.1-8b-instant"

PLAIN: list[dict[str, Any]] = [{"role": "system", "content": "You answer briefly."}] + [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: what about {i}?"}
    for i in range(9)
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["q"],
            },
        },
    }
]


def _with_tools() -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Look up three words."},
    ]
    for i in range(4):
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "lookup", "arguments": f'{{"q": "word {i}", "n": {i}}}'},
        }
        msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        msgs.append({"role": "tool", "tool_call_id": f"call_{i}", "content": f"meaning {i}"})
    return msgs


BODIES: dict[str, dict[str, Any]] = {
    "plain": {"messages": PLAIN, "model": MODEL, "max_tokens": 64},
    "tools": {
        "messages": _with_tools(),
        "model": MODEL,
        "max_tokens": 64,
        "tools": TOOLS,
        "temperature": 0.2,
        "user": "u-1",
    },
}


def median_us(fn: Callable[[], object], repeat: int) -> float:
    """The median of ``repeat`` batches of 200 calls, in microseconds per call."""
    for _ in range(200):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(200):
            fn()
        times.append((time.perf_counter() - t0) / 200 * 1e6)
    return statistics.median(times)


def walker() -> Callable[[dict[str, Any]], None] | None:
    """The walk alone (messages and tools), or ``None`` on a checkout without it."""
    try:
        from tokenguard.counting._sendable import check_field, check_messages
    except ImportError:  # the commit before the check
        return None

    def walk(body: dict[str, Any]) -> None:
        check_messages(body["messages"])
        if "tools" in body:
            check_field(body["tools"], "tools")

    return walk


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=31)
    args = p.parse_args()
    walk = walker()
    for name, body in BODIES.items():
        rest = {k: v for k, v in body.items() if k not in ("messages", "model")}

        def count(body: dict[str, Any] = body, rest: dict[str, Any] = rest) -> object:
            return tg.count_request(body["messages"], body["model"], **rest)

        def read(body: dict[str, Any] = body) -> object:
            return read_body(body, default_model=None, where="bench")

        line = (
            f"{name:6} read_body {median_us(read, args.repeat):6.2f} us  "
            f"count_request {median_us(count, args.repeat):7.2f} us"
        )
        if walk is not None:
            line += f"  walk alone {median_us(functools.partial(walk, body), args.repeat):6.2f} us"
        print(line)


if __name__ == "__main__":
    main()
