"""gpt-oss counting benchmarks: warm and cold speed of exact harmony counts.

Run: ``.venv/bin/python benchmarks/bench_gptoss.py`` (a few seconds). Prints figures;
asserts nothing (timings on a shared machine are noisy; goals are compared, not tested).

Goals (tokenguard issue 11, the same as Llama 3's): a 50-message conversation counted
warm (every message seen before) in p50 <= 20 microseconds; cold in <= 1.3x the time
tiktoken takes to encode the same text alone (o200k_base, ``encode_ordinary``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

# The sample texts, the conversation and the timing helpers are bench_counting.py's, so the
# figures compare with Llama 3's on the same conversation.
import bench_counting
from bench_counting import SAMPLES, percentile, timings_us

import tokenguard as tg
from tokenguard._tokenizer_data import get_encoding

MODEL = "openai/gpt-oss-20b"


def fifty_messages(salt: str, *, system: bool = False) -> list[dict[str, Any]]:
    messages = bench_counting.fifty_messages(salt)
    if system:
        messages[0] = {"role": "system", "content": f"{salt}: be concise. {SAMPLES['english'][0]}"}
    return messages


def bench_warm() -> None:
    counter = tg.Counter()

    def count(messages: list[dict[str, Any]]) -> Callable[[], object]:
        return lambda: counter.count(messages, model=MODEL)

    for system in (False, True):
        messages = fifty_messages("warm", system=system)
        counter.count(messages, model=MODEL)
        samples = timings_us(count(messages), 5_000)
        print(
            f"gpt-oss warm, 50 messages{' (first a system message)' if system else ''} "
            f"({MODEL}): p50 {percentile(samples, 0.5):.1f} us, "
            f"p90 {percentile(samples, 0.9):.1f} us  (goal p50 <= 20 us)"
        )
    samples = timings_us(lambda: counter.count_prompt(messages, model=MODEL), 2_000)
    print(f"gpt-oss warm, 50 messages, count_prompt: p50 {percentile(samples, 0.5):.1f} us")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a word up.",
                "parameters": {
                    "type": "object",
                    "properties": {"word": {"type": "string"}},
                    "required": ["word"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    counter.count(messages, model=MODEL, tools=tools)
    samples = timings_us(lambda: counter.count(messages, model=MODEL, tools=tools), 2_000)
    print(f"gpt-oss warm, 50 messages + 1 tool seen before: p50 {percentile(samples, 0.5):.1f} us")


def bench_cold() -> None:
    enc = get_encoding("o200k_base")
    ours, plain, ratios = [], [], []
    for run in range(40):
        counter = tg.Counter()
        counter.count([{"role": "user", "content": "warm the plan"}], model=MODEL)
        messages = fifty_messages(f"cold run {run}")
        joined = "".join(m["content"] for m in messages)
        t0 = time.perf_counter_ns()
        enc.encode_ordinary(joined)
        t1 = time.perf_counter_ns()
        counter.count(messages, model=MODEL)
        t2 = time.perf_counter_ns()
        plain.append((t1 - t0) / 1_000)
        ours.append((t2 - t1) / 1_000)
        ratios.append((t2 - t1) / (t1 - t0))
    chars = sum(len(m["content"]) for m in messages)
    print(
        f"gpt-oss cold, 50 new messages ({chars} chars): count_tokens median "
        f"{statistics.median(ours):.0f} us, tiktoken encode_ordinary of the same text "
        f"{statistics.median(plain):.0f} us, ratio median {statistics.median(ratios):.2f}x "
        "(goal <= 1.3x)"
    )


def main() -> None:
    started = time.perf_counter()
    bench_warm()
    bench_cold()
    print(f"(benchmark took {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
