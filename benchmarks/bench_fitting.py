"""Fitting benchmarks: speed of a warm fit, growth with the history, and a comparison.

Run: ``.venv/bin/python benchmarks/bench_fitting.py`` (well under a minute). Prints
figures; asserts nothing (timings on a shared machine are noisy; goals are compared).

Goals (tokenguard issue 8): fitting a 500-message history into 6,000 tokens takes
<= 1 ms warm (p50); cost grows at most linearly with the history (100 / 1,000 / 10,000
messages).

Comparison: on the same long conversations (English, code, Cyrillic, CJK, each with
tool calls), the share of ``allowed`` each trimmer fills (counted exactly with the
Llama 3 tokenizer), whether the emulator accepts the result or refuses it (over the
limit), and whether it breaks a tool group (a tool result without its call or a call
without its results: Groq refuses those with 400; the emulator does not check it).
Against LangChain's ``trim_messages`` (``token_counter="approximate"``, and a
tiktoken counter as LangChain's docs write it) and LiteLLM's ``trim_messages``. Those
are not dependencies of tokenguard: install them apart, e.g.::

    python -m venv .venv-bench
    .venv-bench/bin/pip install -e . -r benchmarks/requirements-compare.txt
    .venv-bench/bin/python benchmarks/bench_fitting.py

Without them the comparison prints tokenguard's row alone and says what is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import openai

import tokenguard as tg
from tokenguard.emulator import Emulator, running

MODEL = "llama3-8b-8192"
TPM = 6000
MAX_TOKENS = 256
ALLOWED = TPM - MAX_TOKENS

TEXTS = {
    "english": (
        "The quarterly report shows revenue growth in every region, with the strongest "
        "gains in logistics and the weakest in retail. "
    ),
    "code": (
        "def merge(a: list[int], b: list[int]) -> list[int]:\n"
        "    out = []\n    while a and b:\n        out.append(a.pop(0) if a[0] < b[0] "
        "else b.pop(0))\n    return out + a + b\n"
    ),
    "cyrillic": "Отчёт за квартал показывает рост выручки во всех регионах, особенно в логистике. ",
    "cjk": "四半期報告書によると、すべての地域で売上が伸びており、物流部門が最も好調です。",
}


def conversation(kind: str, turns: int, *, tools_every: int = 7) -> list[dict[str, Any]]:
    """A long chat in one script, with a tool exchange every ``tools_every`` turns."""
    text = TEXTS[kind]
    out: list[dict[str, Any]] = [{"role": "system", "content": "You are a careful analyst."}]
    for i in range(turns):
        out.append({"role": "user", "content": f"[{i}] " + text * (1 + i % 3)})
        if i % tools_every == 3:
            ids = [f"call_{i}_{k}" for k in range(2)]
            out.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c,
                            "type": "function",
                            "function": {"name": "lookup", "arguments": f'{{"q": "{c}"}}'},
                        }
                        for c in ids
                    ],
                }
            )
            out.extend({"role": "tool", "tool_call_id": c, "content": text * 2} for c in ids)
        out.append({"role": "assistant", "content": f"[{i}] " + text * (1 + (i + 1) % 2)})
    out.append({"role": "user", "content": "Given all that, what should we do next?"})
    return out


def p50_us(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(times)


def plain_history(n: int) -> list[dict[str, Any]]:
    kinds = list(TEXTS)
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    for i in range(n - 2):
        text = TEXTS[kinds[i % len(kinds)]]
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {text}"})
    msgs.append({"role": "user", "content": "And now?"})
    return msgs


def speed(runs: int) -> None:
    print("## Speed (warm: every message counted before; p50 of repeated fits)")
    history = plain_history(500)

    def fit500() -> tg.FitResult:
        return tg.fit(history, MODEL, tpm=None, context_window=6000, default_reserve=0)

    r = fit500()
    print(
        f"500 messages -> {len(r.messages)} kept, {r.tokens_after}/{r.allowed} tokens "
        f"({r.fill:.1%}); p50 {p50_us(fit500, runs):.0f} us (goal <= 1000 us)"
    )
    # Into 2,000 tokens, so that every length needs truncating.
    print(f"{'messages':>9} {'kept':>6} {'p50 us':>9} {'us/message':>11}  (into 2,000 tokens)")
    for n in (100, 1_000, 10_000):
        msgs = plain_history(n)

        def one(msgs: list[dict[str, Any]] = msgs) -> tg.FitResult:
            return tg.fit(msgs, MODEL, tpm=None, context_window=2000, default_reserve=0)

        kept = len(one().messages)
        t = p50_us(one, max(15, runs * 100 // n))
        print(f"{n:>9,} {kept:>6} {t:>9.0f} {t / n:>11.2f}")
    print()


# -- the comparison ---------------------------------------------------------------------------


def broken_tool_groups(messages: Sequence[dict[str, Any]]) -> bool:
    """A tool result whose call is not before it, or a call missing some of its results."""
    pending: set[str] = set()
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            if pending:
                return True
            pending = {c["id"] for c in m["tool_calls"]}
        elif role == "tool":
            if m.get("tool_call_id") not in pending:
                return True
            pending.discard(m["tool_call_id"])
        elif pending:
            return True
    return bool(pending)


def tokenguard_trim(messages: list[dict[str, Any]]) -> list[Any]:
    return tg.fit(messages, MODEL, max_tokens=MAX_TOKENS, tpm=TPM).messages


def trimmers() -> tuple[dict[str, Callable[[list[dict[str, Any]]], list[Any]]], list[str]]:
    found: dict[str, Callable[[list[dict[str, Any]]], list[Any]]] = {
        "tokenguard truncate": tokenguard_trim
    }
    missing: list[str] = []
    try:
        from langchain_core.messages import (  # type: ignore[import-not-found, unused-ignore]
            convert_to_openai_messages,
            trim_messages,
        )
        from langchain_core.messages.utils import (  # type: ignore[import-not-found, unused-ignore]
            count_tokens_approximately,
        )

        from tokenguard._tokenizer_data import get_encoding

        enc = get_encoding("cl100k_base")  # tiktoken's cl100k_base, read offline

        def tiktoken_counter(msgs: list[Any]) -> int:
            # The counter LangChain's trim_messages guide writes for tiktoken.
            n = 3
            for m in msgs:
                n += 3 + len(enc.encode(str(m.content))) + len(enc.encode(m.type))
                if getattr(m, "name", None):
                    n += 1 + len(enc.encode(m.name))
            return n

        def langchain(counter: Any) -> Callable[[list[dict[str, Any]]], list[Any]]:
            def trim(messages: list[dict[str, Any]]) -> list[Any]:
                kept = trim_messages(
                    messages,
                    max_tokens=ALLOWED,
                    token_counter=counter,
                    strategy="last",
                    include_system=True,
                    start_on="human",
                    allow_partial=False,
                )
                return list(convert_to_openai_messages(kept))

            return trim

        found["langchain approximate"] = langchain(count_tokens_approximately)
        found["langchain tiktoken"] = langchain(tiktoken_counter)
    except ImportError:
        missing.append("langchain-core")
    try:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download
        from litellm.utils import (  # type: ignore[import-not-found, unused-ignore]
            trim_messages as litellm_trim,
        )

        # It logs a traceback (and returns the messages untrimmed) when it cannot trim.
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)

        def litellm(messages: list[dict[str, Any]]) -> list[Any]:
            out = litellm_trim(messages, model=f"groq/{MODEL}", max_tokens=ALLOWED)
            return list(out)

        found["litellm"] = litellm
    except ImportError:
        missing.append("litellm")
    return found, missing


def verdict(em: Emulator, messages: list[Any]) -> str:
    em.reset()
    client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
    try:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS)
    except openai.APIStatusError as exc:
        return f"refused {exc.status_code}"
    return "accepted"


def comparison(turns: int, samples: int) -> None:
    found, missing = trimmers()
    lengths = [turns + 3 * k for k in range(samples)]
    print(
        f"## Comparison: {MODEL}, TPM {TPM}, max_tokens {MAX_TOKENS}: allowed {ALLOWED} "
        f"prompt tokens; {samples} conversations per script ({lengths[0]}-{lengths[-1]} "
        "turns, tool calls every 7 turns)"
    )
    if missing:
        print(
            f"(not installed here: {', '.join(missing)}; "
            "see benchmarks/requirements-compare.txt for the comparison rows)"
        )
    header = (
        f"{'script':<9} {'trimmer':<22} {'fill p50':>8} {'min':>7} {'max':>7} "
        f"{'accepted':>9} {'refused':>8} {'tools broken':>13}"
    )
    print(header)
    print("-" * len(header))
    with running(model=MODEL, tpm=TPM, rpm=0, tpd=0, rpd=0) as em:
        for kind in TEXTS:
            chats = [conversation(kind, n) for n in lengths]
            for name, trim in found.items():
                fills: list[float] = []
                accepted = broken = failed = 0
                for msgs in chats:
                    try:
                        out = trim([dict(m) for m in msgs])
                    except Exception:
                        failed += 1
                        continue
                    fills.append(tg.count_tokens(out, MODEL) / ALLOWED)
                    accepted += verdict(em, out) == "accepted"
                    broken += broken_tool_groups(out)
                done = len(fills)
                if not done:
                    print(f"{kind:<9} {name:<22} failed on every conversation")
                    continue
                print(
                    f"{kind:<9} {name:<22} {statistics.median(fills):>8.1%} {min(fills):>7.1%} "
                    f"{max(fills):>7.1%} {accepted:>5}/{done:<3} {done - accepted:>4}/{done:<3} "
                    f"{broken:>9}/{done:<3}" + (f" ({failed} raised)" if failed else "")
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="fits timed per figure")
    parser.add_argument("--turns", type=int, default=100, help="turns of the shortest chat")
    parser.add_argument("--samples", type=int, default=8, help="chats per script")
    args = parser.parse_args()
    tg.events.use_logging(False)
    speed(args.runs)
    comparison(args.turns, args.samples)


if __name__ == "__main__":
    main()
