"""Reliability under load, tried as a new user would: 200 concurrent callers on one limit
(threads through one decorated function, asyncio tasks through one instrumented client)
against the emulator, and memory that stays flat over thousands of guarded calls."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import tracemalloc
from typing import Any

import openai
import pytest
from reliability_support import (
    PLANTED_CONTENT,
    PLANTED_KEY,
    TrackingLimiter,
    emulator_process,
    secret_trap,
)

import tokenguard as tg
from tokenguard.emulator import running

pytestmark = pytest.mark.reliability

MODEL = "llama-3.1-8b-instant"
CALLERS = 200
# Groq's free-tier TPM with the minute scaled to one second: 200 calls of ~100 tokens
# need more than three windows, so the limit binds all along.
TPM = 6_000
RPM = 100_000
WINDOW = 1.0


def ask(n: int) -> Any:
    return [
        {"role": "system", "content": f"You are terse. {PLANTED_CONTENT}"},
        {"role": "user", "content": f"Caller {n} asks about {PLANTED_CONTENT}."},
    ]


def test_200_threads_through_one_decorated_function_cause_no_429_and_no_error() -> None:
    with running(model=MODEL, tpm=TPM, rpm=RPM, window=WINDOW, refund_unused=True) as em:
        raw = openai.OpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0)
        lim = TrackingLimiter(tpm=TPM, rpm=RPM, window=WINDOW)

        @tg.guard(limiter=lim)
        def answer(messages: Any, model: str = MODEL, max_tokens: int = 30) -> Any:
            return raw.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        replies: list[Any] = []
        failures: list[BaseException] = []
        start = threading.Barrier(CALLERS)

        def caller(n: int) -> None:
            start.wait()
            try:
                replies.append(answer(ask(n)))
            except Exception as exc:
                failures.append(exc)

        with secret_trap() as trap:
            pool = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
            for t in pool:
                t.start()
            for t in pool:
                t.join(120)
        log = [r for r in em.log if r.endpoint == "chat"]
    assert failures == []
    assert len(replies) == CALLERS
    assert [r.status for r in log] == [200] * CALLERS  # zero 429s, zero errors at the server
    assert lim.leaked() == []
    assert trap.names().count("tokenguard.guard.request") == CALLERS
    print(f"FIGURES 200 threads: {len(log)} requests, 0 refused, {len(trap.events)} events")


async def test_200_asyncio_tasks_through_one_instrumented_client_cause_no_429() -> None:
    with running(model=MODEL, tpm=TPM, rpm=RPM, window=WINDOW, refund_unused=True) as em:
        lim = TrackingLimiter(tpm=TPM, rpm=RPM, window=WINDOW)
        client = tg.instrument(
            openai.AsyncOpenAI(base_url=em.base_url, api_key=PLANTED_KEY, max_retries=0),
            limiter=lim,
        )

        async def caller(n: int) -> Any:
            return await client.chat.completions.create(model=MODEL, messages=ask(n), max_tokens=30)

        with secret_trap() as trap:
            results = await asyncio.gather(
                *(caller(n) for n in range(CALLERS)), return_exceptions=True
            )
        await client.close()
        log = [r for r in em.log if r.endpoint == "chat"]
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert all(r.usage.completion_tokens > 0 for r in results if not isinstance(r, BaseException))
    assert [r.status for r in log] == [200] * CALLERS
    assert lim.leaked() == []
    assert trap.names().count("tokenguard.guard.request") == CALLERS
    print(f"FIGURES 200 tasks: {len(log)} requests, 0 refused, {len(trap.events)} events")


# -- memory ------------------------------------------------------------------------------

WARM_UP = 150
# Traced calls cost ~15 ms each under pytest (the SDK allocates a lot), so CI measures
# 1,000; TOKENGUARD_RELIABILITY_CALLS=2000 (or more) measures a longer run.
MEASURED = int(os.environ.get("TOKENGUARD_RELIABILITY_CALLS", "1000"))
# Bytes the process may grow over the measured calls: 128 per call, far below what keeping
# anything per call would take (a usage event alone is ~1 KB).
GROWTH_BOUND = 128 * MEASURED


def test_memory_is_flat_over_a_long_run_of_guarded_calls() -> None:
    """Traced allocations of this process (the guard, the SDK, the limiter; the emulator
    runs in its own process) grow by less than ``GROWTH_BOUND`` over ``MEASURED`` calls
    after a warm-up."""
    conversations = [ask(n) for n in range(20)]
    events = [0]

    def count(_: tg.events.Event) -> None:
        events[0] += 1

    big = "10000000"
    with emulator_process("--model", MODEL, "--tpm", big, "--rpm", big, "--window", "1") as url:
        client = tg.instrument(
            openai.OpenAI(base_url=url, api_key=PLANTED_KEY, max_retries=0),
            tpm=10_000_000,
            rpm=10_000_000,
            window=WINDOW,
        )

        def calls(n: int) -> None:
            for i in range(n):
                client.chat.completions.create(
                    model=MODEL, messages=conversations[i % 20], max_tokens=20
                )

        undo = tg.events.add_sink(count)
        tg.events.use_logging(False)
        try:
            calls(WARM_UP)
            tracemalloc.start()
            try:
                calls(WARM_UP)  # traced warm-up: lazily built state shows up here
                gc.collect()
                before = tracemalloc.take_snapshot()
                base, _ = tracemalloc.get_traced_memory()
                calls(MEASURED)
                gc.collect()
                after, _ = tracemalloc.get_traced_memory()
                growth = after - base
                top = after_snapshot_top(before)
            finally:
                tracemalloc.stop()
        finally:
            tg.events.use_logging(True)
            undo()
    assert events[0] == 2 * WARM_UP + MEASURED
    print(f"FIGURES memory: {MEASURED} calls after {2 * WARM_UP}, growth {growth} bytes")
    assert growth < GROWTH_BOUND, f"grew {growth} bytes over {MEASURED} calls:\n{top}"


def after_snapshot_top(before: tracemalloc.Snapshot) -> str:
    """The ten lines that grew most since ``before`` (shown when the bound fails)."""
    stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
    return "\n".join(str(s) for s in stats[:10])
