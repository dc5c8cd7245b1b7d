"""Limiter benchmarks against the emulator over HTTP, through the real openai SDK.

Scenarios (each saturates one model, tpm=6000, rpm=1000, window=5 s, for 14 windows):

- ``threads``: 16 threads sharing one in-memory limiter;
- ``async``: 64 asyncio tasks sharing one in-memory limiter;
- ``processes``: 4 processes x 4 threads sharing one Redis limiter (a redis-server is
  started on a free loopback port);
- ``overhead``: p50 of ``acquire`` when nothing has to wait, in memory and on Redis.

Every worker loops: acquire(prompt + max_tokens), call, commit(actual, headers=...).
From the emulator's log, per window of server time (first and last excluded): tokens
the server charged (``charged_tokens``: prompt + max_tokens when it does not refund
unused completion tokens, prompt + completion when it does), 429s (must be 0), ratio to
the limit (goal >= 0.97 in memory, >= 0.95 on Redis).

Every scenario runs against a server that refunds unused completion tokens and one
that does not (``--refund yes|no|both``), for each ``--cases`` pair
``max_tokens:completion`` (default ``128:128,256:64,1024:16``), with the Limiter's
defaults. When the server refunds, the estimate of a request in flight (prompt +
max_tokens) holds room the server gives back when it answers, so the charged tokens
of a window fall short of the limit by about max_tokens - completion.

Run: ``.venv/bin/python benchmarks/bench_limiter.py`` (about 20 minutes: 3 cases x 2
servers x 3 scenarios of 70 s), or ``--quick`` (1 s windows),
``--scenario threads|async|processes|overhead``, ``--cases 256:64``, ``--refund no``,
``--header-lag S`` and ``--refunds none|yes|no`` (Limiter options; defaults 0 and none).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tokenguard as tg  # noqa: E402
from tokenguard.emulator import count_prompt_tokens, max_tokens_in_any_window, running  # noqa: E402

MODEL = "llama3-8b-8192"
TPM = 6000
RPM = 1000


@dataclass
class Setup:
    window: float
    windows: int
    max_tokens: int
    completion_tokens: int
    latency: float
    header_lag: float = 0.0
    refund: bool = False  # the emulator refunds unused completion tokens
    refunds: bool | None = None  # Limiter(refunds=...)

    @property
    def options(self) -> dict[str, Any]:
        return {"header_lag": self.header_lag, "refunds": self.refunds}


def _messages(worker: int) -> list[dict[str, str]]:
    # Prompts of different sizes so that requests do not tile the window exactly.
    words = " ".join(f"item{(worker * 7 + i) % 50}" for i in range(10 + 9 * (worker % 8)))
    return [{"role": "user", "content": f"Summarise these notes: {words}"}]


def _call(client: openai.OpenAI, lim: tg.Limiter, messages: list[dict[str, str]], s: Setup) -> None:
    estimate = count_prompt_tokens(messages, template="llama3") + s.max_tokens
    r = lim.acquire(estimate)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=s.max_tokens,
        )
    except openai.RateLimitError as exc:
        r.commit(estimate, headers=exc.response.headers)
        return
    except BaseException:
        r.cancel()
        raise
    usage = raw.parse().usage
    assert usage is not None
    r.commit(usage.prompt_tokens + usage.completion_tokens, headers=raw.headers)


def _thread_workers(
    lim: tg.Limiter, base_url: str, n: int, stop: float, s: Setup, off: int
) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)

    def work(i: int) -> None:
        msgs = _messages(off + i)
        while time.monotonic() < stop:
            _call(client, lim, msgs, s)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()


async def _async_workers(lim: tg.Limiter, base_url: str, n: int, stop: float, s: Setup) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)

    async def work(i: int) -> None:
        msgs = _messages(i)
        estimate = count_prompt_tokens(msgs, template="llama3") + s.max_tokens
        while time.monotonic() < stop:
            r = await lim.acquire_async(estimate)
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=msgs,  # type: ignore[arg-type]
                    max_tokens=s.max_tokens,
                )
            except openai.RateLimitError as exc:
                await r.commit_async(estimate, headers=exc.response.headers)
                continue
            except BaseException:
                await r.cancel_async()
                raise
            usage = raw.parse().usage
            assert usage is not None
            await r.commit_async(usage.prompt_tokens + usage.completion_tokens, headers=raw.headers)

    await asyncio.gather(*(work(i) for i in range(n)))
    await client.close()


def _process_main(url: str, key: str, base_url: str, stop: float, s: Setup, index: int) -> None:
    client = redis.Redis.from_url(url)
    lim = tg.Limiter(tpm=TPM, rpm=RPM, window=s.window, redis=client, key=key, **s.options)
    _thread_workers(lim, base_url, 4, stop, s, off=4 * index)
    client.close()


def _report(name: str, em: Any, start: float, s: Setup, goal: float) -> dict[str, float]:
    log = [r for r in em.log if r.endpoint == "chat"]
    ok = [r for r in log if r.status == 200]
    n429 = sum(1 for r in log if r.status == 429)
    at429 = [round(r.t - start, 2) for r in log if r.status == 429]
    other = sum(1 for r in log if r.status not in (200, 429))
    per: list[int] = [0] * s.windows
    for r in ok:
        k = int((r.t - start) // s.window)
        if 0 <= k < s.windows:
            per[k] += r.charged_tokens
    steady = per[1:-1]
    ratios = [x / TPM for x in steady]
    worst = max_tokens_in_any_window(em.log, s.window)
    mean = statistics.fmean(ratios)
    label = f"{name} {s.max_tokens}:{s.completion_tokens} refund={'yes' if s.refund else 'no'}"
    print(
        f"{label:30s} requests={len(ok):5d} 429s={n429} other_errors={other} "
        f"steady windows={len(steady)} tokens/window mean={statistics.fmean(steady):.0f} "
        f"min={min(steady)} ratio mean={mean:.3f} min={min(ratios):.3f} "
        f"max reserved in any sliding window={worst} per={per} "
        f"[{'PASS' if n429 == 0 and mean >= goal else 'FAIL'} goal>={goal}]"
        + (f" 429s at {at429[:10]}" if at429 else "")
    )
    return {"429": n429, "mean": mean, "min": min(ratios)}


def _emulator(s: Setup) -> Any:
    return running(
        model=MODEL,
        tpm=TPM,
        rpm=RPM,
        window=s.window,
        completion_tokens=s.completion_tokens,
        latency=s.latency,
        refund_unused=s.refund,
    )


def scenario_threads(s: Setup) -> None:
    with _emulator(s) as em:
        lim = tg.Limiter(tpm=TPM, rpm=RPM, window=s.window, **s.options)
        start = time.monotonic()
        _thread_workers(lim, em.base_url, 16, start + s.windows * s.window, s, off=0)
        _report("threads", em, start, s, 0.97)


def scenario_async(s: Setup) -> None:
    with _emulator(s) as em:
        lim = tg.Limiter(tpm=TPM, rpm=RPM, window=s.window, **s.options)
        start = time.monotonic()
        asyncio.run(_async_workers(lim, em.base_url, 64, start + s.windows * s.window, s))
        _report("async", em, start, s, 0.97)


def scenario_processes(s: Setup) -> None:
    from redis_support import redis_server

    with redis_server() as srv, _emulator(s) as em:
        key = f"bench-{uuid.uuid4().hex[:8]}"
        ctx = mp.get_context("spawn")
        # Spawned children take a moment to import; start the clock when they can run.
        start = time.monotonic() + 3.0
        stop = start + s.windows * s.window
        procs = [
            ctx.Process(target=_delayed, args=(start, srv.url, key, em.base_url, stop, s, i))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        _report("processes", em, start, s, 0.95)


def _delayed(
    start: float, url: str, key: str, base_url: str, stop: float, s: Setup, index: int
) -> None:
    time.sleep(max(0.0, start - time.monotonic()))
    _process_main(url, key, base_url, stop, s, index)


def _p50(samples: list[int]) -> float:
    return statistics.median(samples) / 1000  # microseconds


def scenario_overhead(n: int) -> None:
    from redis_support import redis_server

    lim = tg.Limiter(tpm=10**12, rpm=10**12, window=60.0)
    samples: list[int] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        r = lim.acquire(100)
        samples.append(time.perf_counter_ns() - t0)
        r.commit(90)
    mem = _p50(samples)
    with redis_server() as srv:
        client = redis.Redis.from_url(srv.url)
        rlim = tg.Limiter(tpm=10**12, rpm=10**12, window=60.0, redis=client, key="overhead")
        rsamples: list[int] = []
        for _ in range(max(n // 10, 200)):
            t0 = time.perf_counter_ns()
            r = rlim.acquire(100)
            rsamples.append(time.perf_counter_ns() - t0)
            r.commit(90)
        client.close()
    red = _p50(rsamples)
    print(
        f"overhead   acquire p50: memory {mem:.1f} us [{'PASS' if mem <= 20 else 'FAIL'} <= 20 us]"
        f", redis {red:.0f} us [{'PASS' if red <= 1000 else 'FAIL'} <= 1000 us]"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 s windows, 8 of them")
    p.add_argument(
        "--scenario",
        choices=["threads", "async", "processes", "overhead", "all"],
        default="all",
    )
    p.add_argument(
        "--cases",
        default="128:128,256:64,1024:16",
        help="max_tokens:completion pairs, comma-separated",
    )
    p.add_argument("--refund", choices=["yes", "no", "both"], default="both")
    p.add_argument("--refunds", choices=["none", "yes", "no"], default="none")
    p.add_argument("--latency", type=float, default=0.02, help="emulator seconds per answer")
    p.add_argument("--header-lag", type=float, default=0.0, help="Limiter(header_lag=...)")
    args = p.parse_args(argv)
    cases = [tuple(int(x) for x in c.split(":")) for c in args.cases.split(",")]
    refunds = {"none": None, "yes": True, "no": False}[args.refunds]
    servers = {"yes": [True], "no": [False], "both": [False, True]}[args.refund]
    window = 1.0 if args.quick else 5.0
    windows = 8 if args.quick else 14
    print(
        f"tpm={TPM} rpm={RPM} window={window}s windows={windows} latency={args.latency}s "
        f"header_lag={args.header_lag}s refunds={refunds}"
    )
    todo = (
        ["threads", "async", "processes", "overhead"] if args.scenario == "all" else [args.scenario]
    )
    for max_tokens, completion in cases:
        for refund in servers:
            s = Setup(
                window=window,
                windows=windows,
                max_tokens=max_tokens,
                completion_tokens=completion,
                latency=args.latency,
                header_lag=args.header_lag,
                refund=refund,
                refunds=refunds,
            )
            for name in todo:
                if name == "threads":
                    scenario_threads(s)
                elif name == "async":
                    scenario_async(s)
                elif name == "processes":
                    scenario_processes(s)
    if "overhead" in todo:
        scenario_overhead(2000 if args.quick else 20000)


if __name__ == "__main__":
    main()
