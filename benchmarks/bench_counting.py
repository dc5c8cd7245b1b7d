"""Counting benchmarks: warm and cold speed, cache bounds, over-estimates of estimated models.

Run: ``.venv/bin/python benchmarks/bench_counting.py`` (under a minute), or with
``--table [N]`` only the family table, the median of N runs (default 3). Prints figures;
asserts nothing (timings on a shared machine are noisy; goals are compared, not tested).

Goals (tokenguard issues 3 and 18): a 50-message conversation counted warm (every message
seen before) in p50 <= 20 microseconds; cold in <= 1.3x the time tiktoken takes to encode
the same text alone; cache memory bounded; for every family (:data:`FAMILIES`: Llama 3.1
plain and with tools, Llama 4 plain and with tools, Qwen3, Kimi K2, gpt-oss, Llama 3's
GenericChat), and Kimi K2 once more after calibration has seen the earlier turns' counts (the
guard's normal case). ``count_prompt`` (the per-message breakdown that fitting uses) is timed
warm on the same conversation.
"""

from __future__ import annotations

import functools
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tokenguard as tg
from tokenguard._tokenizer_data import get_encoding
from tokenguard.counting._estimate import estimate_rule
from tokenguard.emulator import count_prompt_tokens


def _load_samples() -> Any:
    # The sample texts live with the tests (tests/counting_samples.py), shared by both.
    path = Path(__file__).resolve().parent.parent / "tests" / "counting_samples.py"
    spec = importlib.util.spec_from_file_location("counting_samples", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_samples = _load_samples()
SAMPLES: dict[str, list[str]] = _samples.SAMPLES
conversation_of = _samples.conversation_of

EXACT_MODEL = "llama-3.1-8b-instant"
SCOUT = "meta-llama/llama-4-scout-17b-16e-instruct"
WEATHER: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                "required": ["city"],
            },
        },
    }
]
QWEN = "qwen/qwen3-32b"
KIMI = "moonshotai/kimi-k2-instruct-0905"
GPT_OSS = "openai/gpt-oss-20b"
#: Llama 3's GenericChat template (the retired Llama 3 models), registered by no one.
GENERIC = tg.ModelInfo("llama3-generic-chat", 8_192, 8_192, "llama3", "llama3")
#: (label, model, tokenizer tiktoken encodes with, request options) of each family the
#: goals apply to.
FAMILIES: list[tuple[str, str | tg.ModelInfo, str, dict[str, Any]]] = [
    ("llama3", EXACT_MODEL, "llama3", {}),
    ("llama3 + tools", EXACT_MODEL, "llama3", {"tools": WEATHER, "tool_choice": "auto"}),
    ("llama4", SCOUT, "llama4", {}),
    ("llama4 + tools", SCOUT, "llama4", {"tools": WEATHER, "tool_choice": "required"}),
    ("qwen3", QWEN, "qwen3", {}),
    ("kimi", KIMI, estimate_rule("kimi").encoding, {}),
    ("gpt-oss", GPT_OSS, "o200k_harmony", {}),
    ("genericchat", GENERIC, "llama3", {}),
]
#: The warm-only row of Kimi K2 after calibration has seen responses (the guard's normal case).
KIMI_CALIBRATED = "kimi, calibrated"
# A Llama 4 model without a template stands in for the estimated families below.
ESTIMATED_MODELS = (tg.ModelInfo("llama4-without-a-template", 131_072, 8_192, "llama4", None),)


def fifty_messages(salt: str) -> list[dict[str, Any]]:
    texts = [t for kind in ("english", "code") for t in SAMPLES[kind]]
    roles = ("user", "assistant")
    return [
        {"role": roles[i % 2], "content": f"{salt} {i}. {texts[i % len(texts)]}"} for i in range(50)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timings_us(call: Callable[[], object], runs: int) -> list[float]:
    """Microseconds taken by each of ``runs`` calls of ``call``."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1_000)
    return samples


def warm_p50(model: str | tg.ModelInfo, options: dict[str, Any], runs: int) -> float:
    """p50 microseconds of counting a 50-message conversation seen before."""
    counter = tg.Counter()
    messages = fifty_messages("warm")
    counter.count(messages, model=model, **options)
    return percentile(
        timings_us(functools.partial(counter.count, messages, model=model, **options), runs), 0.5
    )


def calibrated_warm_p50(model: str, runs: int) -> float:
    """p50 microseconds of the guard's normal case for an estimated model: a 50-message
    conversation whose calibration saw the server's counts of the turns before it (the
    last of them the first 48 messages), every text seen before."""
    counter = tg.Counter()
    messages = fifty_messages("warm")
    for n in range(2, 49, 2):
        turn = messages[:n]
        counter.observe(counter.count_request(turn, model=model), truth(turn))
    counter.count(messages, model=model)
    count = functools.partial(counter.count, messages, model=model)
    return percentile(timings_us(count, runs), 0.5)


def cold_ratio(
    model: str | tg.ModelInfo, tokenizer: str, options: dict[str, Any], runs: int
) -> tuple[float, float]:
    """Median ratios of counting 50 new messages to tiktoken encoding their text joined:
    to ``encode_ordinary`` (the goal's baseline: the cheapest call) and to ``encode``
    (which, like the counter, looks for special tokens), timed in the same runs."""
    enc = get_encoding(tokenizer)
    ordinary, plain = [], []
    for run in range(runs):
        counter = tg.Counter()
        counter.count([{"role": "user", "content": "warm the meter"}], model=model, **options)
        messages = fifty_messages(f"cold run {run}")
        joined = "".join(m["content"] for m in messages)
        # Each baseline encodes its own copy: no run finds the text in a warm cache
        # that another left behind (the counter's texts are new to it too).
        other = joined[:1] + joined[1:]
        t0 = time.perf_counter_ns()
        enc.encode_ordinary(joined)
        t1 = time.perf_counter_ns()
        counter.count(messages, model=model, **options)
        t2 = time.perf_counter_ns()
        enc.encode(other)
        t3 = time.perf_counter_ns()
        ordinary.append((t2 - t1) / (t1 - t0))
        plain.append((t2 - t1) / (t3 - t2))
    return statistics.median(ordinary), statistics.median(plain)


def bench_table(repeats: int = 1) -> None:
    """Warm p50 and cold ratios of every family, as a table (medians of ``repeats`` runs)."""
    rows: dict[str, tuple[list[float], list[float], list[float]]] = {
        label: ([], [], []) for label, *_ in FAMILIES
    }
    rows[KIMI_CALIBRATED] = ([], [], [])
    for _ in range(repeats):
        for label, model, tokenizer, options in FAMILIES:
            warm, cold, cold_encode = rows[label]
            warm.append(warm_p50(model, options, 3_000))
            ordinary, plain = cold_ratio(model, tokenizer, options, 30)
            cold.append(ordinary)
            cold_encode.append(plain)
        rows[KIMI_CALIBRATED][0].append(calibrated_warm_p50(KIMI, 3_000))
    print(
        f"50-message conversation, median of {repeats} run(s); "
        "goals: warm p50 <= 20 us, cold <= 1.3x (to encode_ordinary)"
    )
    print(f"  {'family':16s} {'warm p50 us':>12s} {'cold ratio':>11s} {'to encode':>10s}")
    for label, (warm, cold, cold_encode) in rows.items():
        w = statistics.median(warm)
        flags = "" if w <= 20 else " warm>goal"
        if not cold:  # a warm-only row: its cold case is the family's own
            print(f"  {label:16s} {w:12.1f} {'-':>11s} {'-':>10s}{flags}")
            continue
        c = statistics.median(cold)
        flags += "" if c <= 1.3 else " cold>goal"
        print(f"  {label:16s} {w:12.1f} {c:10.2f}x {statistics.median(cold_encode):9.2f}x{flags}")


def bench_warm() -> None:
    """What else the facade answers warm: count_request, count_prompt, SDK objects."""
    counter = tg.Counter()
    messages = fifty_messages("warm")
    counter.count(messages, model=EXACT_MODEL)
    samples = timings_us(
        lambda: counter.count_request(messages, model=EXACT_MODEL, max_tokens=256), 2_000
    )
    print(f"warm, 50 messages, count_request: p50 {percentile(samples, 0.5):.1f} us")
    # What fitting asks for: the same count broken down per message.
    for model in (EXACT_MODEL, SCOUT, QWEN, GPT_OSS):
        counter.count_prompt(messages, model=model)
        call = functools.partial(counter.count_prompt, messages, model=model)
        samples = timings_us(call, 2_000)
        print(
            f"warm, 50 messages, count_prompt (per-message costs), {model}: p50 "
            f"{percentile(samples, 0.5):.1f} us, p90 {percentile(samples, 0.9):.1f} us"
        )
    # A typed-object history (the SDK's pydantic replies) takes the general path.
    from openai.types.chat import ChatCompletionMessage

    mixed: list[Any] = [
        ChatCompletionMessage(role="assistant", content=m["content"])
        if m["role"] == "assistant"
        else m
        for m in messages
    ]
    counter.count(mixed, model=EXACT_MODEL)
    samples = timings_us(lambda: counter.count(mixed, model=EXACT_MODEL), 500)
    print(
        f"warm, 50 messages, half of them openai SDK objects: p50 "
        f"{percentile(samples, 0.5):.1f} us (general path)"
    )


def bench_memory() -> None:
    counter = tg.Counter(cache_bytes=4 << 20, front_chars=1 << 20)
    for batch in range(400):
        counter.count(fifty_messages(f"memory {batch}"), model=EXACT_MODEL)
    stats = counter.cache_stats()
    print(
        f"cache after 20,000 distinct messages with cache_bytes=4 MiB, front_chars=1 Mi: "
        f"LRU {stats['lru_bytes'] / 2**20:.2f} MiB charged for {stats['entries']} entries "
        f"(bound 4 MiB: sys.getsizeof(text) + {160} bytes per entry), front "
        f"{stats['front_chars']:,} chars (bound 1,048,576); defaults 32 MiB + 4 Mi chars"
    )


def truth(messages: list[dict[str, str]]) -> int:
    # The emulator counts every model with Llama 3's tokenizer over the 3.1 template:
    # for Llama 4 and Qwen that is a tokenizer the estimator (cl100k_base) does not use.
    return count_prompt_tokens(messages, None, "llama3.1")


def bench_overestimate() -> None:
    print(
        "over-estimate vs the hidden truth (Llama 3 tokenizer + 3.1 template, as the "
        "emulator counts); before = fresh counter, conversation = turns 9-12 of a growing "
        "conversation, unrelated = median of requests 9-20 of random shapes"
    )
    for model in ESTIMATED_MODELS:
        for kind, texts in SAMPLES.items():
            fresh = tg.Counter()
            before = [
                fresh.count(conversation_of(texts, s, n), model=model)
                / truth(conversation_of(texts, s, n))
                for s in range(len(texts))
                for n in (1, 4, 8)
            ]
            counter = tg.Counter()
            turns = []
            for size in range(1, 13):
                messages = conversation_of(texts, 0, size)
                rc = counter.count_request(messages, model=model)
                actual = truth(messages)
                turns.append(rc.prompt_tokens / actual)
                counter.observe(rc, actual)
            counter = tg.Counter()
            rng = random.Random(kind)
            unrelated = []
            for _ in range(20):
                messages = conversation_of(texts, rng.randrange(len(texts)), rng.randrange(1, 12))
                rc = counter.count_request(messages, model=model)
                actual = truth(messages)
                unrelated.append(rc.prompt_tokens / actual)
                counter.observe(rc, actual)
            print(
                f"  {model.name:26s} {kind:10s} before {pct(min(before))}..{pct(max(before))}  "
                f"conversation {pct(min(turns[8:]))}..{pct(max(turns[8:]))}  "
                f"unrelated median {pct(statistics.median(unrelated[8:]))} "
                f"min {pct(min(unrelated))}"
            )


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def main() -> None:
    # "--table [N]": only the family table, the median of N runs (default 3).
    only_table = "--table" in sys.argv
    repeats = int(sys.argv[-1]) if only_table and sys.argv[-1].isdigit() else 1
    if only_table and repeats == 1 and not sys.argv[-1].isdigit():
        repeats = 3
    started = time.perf_counter()
    bench_table(repeats)
    if only_table:
        return
    bench_warm()
    bench_memory()
    bench_overestimate()
    print(f"(benchmark took {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
