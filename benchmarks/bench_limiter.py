"""Limiter benchmarks against the emulator over HTTP, through the real openai SDK.

Scenarios (each saturates one model, tpm=6000, rpm=1000, window=5 s, for 14 windows):

- ``threads``: 16 threads sharing one in-memory limiter;
- ``async``: 64 asyncio tasks sharing one in-memory limiter;
- ``processes``: 4 processes x 4 threads sharing one Redis limiter (a redis-server is
  started on a free loopback port);
- ``overhead``: p50 of ``acquire`` when nothing has to wait, in memory and on Redis;
- ``burst``: after a burst that empties the bucket, how much longer than the server's
  bucket needs ((estimate - level) / refill rate) the next request waits (p99, goal
  <= 50 ms);
- ``feedback``: 8 threads sharing one in-memory limiter, ``max_tokens`` 100 with 40
  tokens generated (``--cases`` to change), against both servers, once per way the
  caller gives the server's answer back (``--feedback`` to pick one):
  ``headers``: ``commit(actual, headers=...)``; ``observe``: ``commit(actual)`` then
  ``lim.observe(headers)``; ``none``: ``commit(actual)`` only (as a decorated function
  that returns a parsed completion), with a 429's headers handed to ``lim.observe``.
  Goals: refunding server >= 0.93 of the limit and no 429; the other <= 2% 429s and
  >= 0.85 of the limit.

Every worker loops: acquire(prompt + max_tokens), call, commit(actual, headers=...)
(or as ``--feedback`` says). On a 429 it commits the estimate with the 429's headers
(``headers``), or cancels and hands the headers to ``lim.observe`` (the other modes);
then it acquires again.
From the emulator's log, per window of server time (the steady ones, below): tokens
the server charged (``charged_tokens``: prompt + max_tokens when it does not refund
unused completion tokens, prompt + completion when it does), 429s (must be 0), ratio to
the limit (goal >= 0.97 in memory, >= 0.95 on Redis). The server's bucket starts full, a
one-off credit of a whole limit that the first windows may spend on top of the refill,
and the workers take a moment to start: the steady windows begin with the first one
that starts after the first request was admitted and after the server's bucket first
held less than half the limit (at least the second window), and the ratio (``ratio
mean``) takes out what the bucket held (its level plus the refunds it still owed,
replayed from the log) at their start minus at their end; ``raw`` is the plain mean of
windows 2 to n-1 (see ``steady``).

Every scenario runs against a server that refunds unused completion tokens and one
that does not (``--refund yes|no|both``), for each ``--cases`` pair
``max_tokens:completion`` (default ``128:128,256:64,1024:16``), with the Limiter's
defaults. When the server refunds, the estimate of a request in flight (prompt +
max_tokens) holds room the server gives back when it answers, so the charged tokens
of a window fall short of the limit by about max_tokens - completion.

Every row runs once per ``--algorithm`` (``bucket`` and ``window`` by default, side by
side on the same cell) and per ``--latency`` (seconds the emulator takes per answer,
comma-separated, e.g. ``0,0.2,0.5,1``). With long latencies and large ``max_tokens`` the
server's own bucket cannot be filled within a short period (each request holds its
estimate while it is in flight): give ``--window`` (e.g. 20) for those cells.

Run: ``.venv/bin/python benchmarks/bench_limiter.py`` (about 27 minutes: 3 cases x 2
servers x 3 scenarios of 70 s, then 2 servers x 3 feedback modes), or ``--quick`` (1 s
windows), ``--scenario threads|async|processes|overhead|feedback``, ``--cases 256:64``,
``--refund no``, ``--feedback headers|observe|none|all``, ``--threads N``,
``--header-lag S``, ``--algorithm bucket|window|both``, ``--window S``, ``--windows N``
and ``--refunds none|yes|no`` (Limiter options; defaults 0 and none:
learn). Each row ends with what the limiter knows of refunds at the end (``refunds=``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
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
    feedback: str = "headers"  # headers | observe | none (see the module docstring)
    threads: int = 16
    algorithm: str = "window"  # Limiter(algorithm=...)

    @property
    def options(self) -> dict[str, Any]:
        return {"header_lag": self.header_lag, "refunds": self.refunds, "algorithm": self.algorithm}


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
        if s.feedback == "headers":
            r.commit(estimate, headers=exc.response.headers)
        else:
            # A 429 consumed nothing; its headers tell the limiter what the server holds.
            r.cancel()
            lim.observe(exc.response.headers)
        return
    except BaseException:
        r.cancel()
        raise
    usage = raw.parse().usage
    assert usage is not None
    actual = usage.prompt_tokens + usage.completion_tokens
    if s.feedback == "headers":
        r.commit(actual, headers=raw.headers)
    else:
        r.commit(actual)
        if s.feedback == "observe":
            lim.observe(raw.headers)


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
                if s.feedback == "headers":
                    await r.commit_async(estimate, headers=exc.response.headers)
                else:
                    await r.cancel_async()
                    await lim.observe_async(exc.response.headers)
                continue
            except BaseException:
                await r.cancel_async()
                raise
            usage = raw.parse().usage
            assert usage is not None
            actual = usage.prompt_tokens + usage.completion_tokens
            if s.feedback == "headers":
                await r.commit_async(actual, headers=raw.headers)
            else:
                await r.commit_async(actual)
                if s.feedback == "observe":
                    await lim.observe_async(raw.headers)

    await asyncio.gather(*(work(i) for i in range(n)))
    await client.close()


def _process_main(url: str, key: str, base_url: str, stop: float, s: Setup, index: int) -> None:
    client = redis.Redis.from_url(url)
    lim = tg.Limiter(tpm=TPM, rpm=RPM, window=s.window, redis=client, key=key, **s.options)
    _thread_workers(lim, base_url, 4, stop, s, off=4 * index)
    client.close()


def _report(
    name: str, em: Any, start: float, s: Setup, goal: float, refunds: object = "-"
) -> dict[str, Any]:
    log = [r for r in em.log if r.endpoint == "chat"]
    ok = [r for r in log if r.status == 200]
    n429 = sum(1 for r in log if r.status == 429)
    at429 = [round(r.t - start, 2) for r in log if r.status == 429]
    other = sum(1 for r in log if r.status not in (200, 429))
    rows = [(round(r.t - start, 4), r.status, r.requested_tokens, r.charged_tokens) for r in log]
    m = steady(rows, window=s.window, windows=s.windows, latency=s.latency, refund=s.refund)
    per, raw, mean, credit = m["per"], m["raw"], m["mean"], m["credit"]
    ratios = [x / TPM for x in per[m["first"] : -1]]
    worst = max_tokens_in_any_window(em.log, s.window)
    label = (
        f"{s.algorithm:6s} {name} lat={s.latency:g} {s.max_tokens}:{s.completion_tokens} "
        f"refund={'yes' if s.refund else 'no'}"
    )
    if name == "feedback":
        label += f" {s.feedback}"
        # Learning may cost a few 429s against a server that keeps unused tokens.
        passed = n429 == 0 if s.refund else n429 <= 0.02 * len(log)
        goals = f"429s {'0' if s.refund else '<=2%'}, mean>={goal}"
    else:
        passed = n429 == 0
        goals = f"0 429s, mean>={goal}"
    print(
        f"{label:48s} requests={len(ok):5d} 429s={n429} ({100 * n429 / max(len(log), 1):.1f}%) "
        f"other_errors={other} steady windows {m['first'] + 1}-{s.windows - 1} "
        f"ratio mean={mean:.3f} (raw {raw:.3f}, credit spent {credit:.0f}) min={min(ratios):.3f} "
        f"refunds={refunds} "
        f"max reserved in any sliding window={worst} per={per} "
        f"[{'PASS' if passed and mean >= goal else 'FAIL'} {goals}]"
        + (f" 429s at {at429[:10]}" if at429 else "")
    )
    return {
        "requests": len(log),
        "ok": len(ok),
        "429": n429,
        "other": other,
        "mean": mean,
        "min": min(ratios),
        **m,
        "log": rows,
        "refunds": str(refunds),
        "passed": passed and mean >= goal,
    }


def steady(
    rows: list[tuple[float, int, int, int]],
    *,
    window: float,
    windows: int,
    latency: float,
    refund: bool,
    tpm: int = TPM,
) -> dict[str, Any]:
    """The steady figures of one run from the emulator's log, ``rows`` of (seconds since
    the start, status, tokens requested, tokens charged), against a server limit of
    ``tpm`` per window.

    The server's TPM bucket is replayed (capacity tpm refilled at tpm per window; each
    admitted request takes its estimate on arrival and, on a refunding server, gets the
    unused part back after the latency, never above capacity); it *holds* its level plus
    the refunds it still owes. Steady windows: from the first that starts after the
    first request was admitted and after the bucket first held less than half the limit
    (at least the second; at most the third from the end), to the last but one.
    ``mean``: the tokens charged in them less the credit they spent (held at their start
    minus at their end), per window, over the limit; ``raw``: the plain mean of windows
    2 to n-1.
    """
    per = [0] * windows
    events: list[tuple[float, int, int]] = []  # (time, level change, owed change)
    for t, status, requested, charged in rows:
        if status != 200:
            continue
        k = int(t // window)
        if 0 <= k < windows:
            per[k] += charged
        gift = requested - charged if refund else 0
        events.append((t, -requested, gift))
        if gift > 0:
            events.append((t + latency, gift, -gift))
    events.sort()
    rate = tpm / window
    level, owed, last = float(tpm), 0.0, 0.0
    trace: list[tuple[float, float, float]] = [(0.0, level, owed)]
    dry: float | None = None
    for t, d_level, d_owed in events:
        level = min(float(tpm), level + max(0.0, t - last) * rate)
        last = max(last, t)
        level = min(float(tpm), level + d_level) if d_level > 0 else level + d_level
        owed += d_owed
        trace.append((last, level, owed))
        if dry is None and level + owed < tpm / 2:
            dry = t

    def held(q: float) -> float:
        t0, lv, ow = trace[0]
        for x in trace:  # in time order: the state after the last event by q
            if x[0] > q:
                break
            t0, lv, ow = x
        return min(float(tpm), lv + (q - t0) * rate) + ow

    # Workers that start late (spawned processes on a loaded machine) leave the bucket
    # full and idle: that is start-up, not the limiter.
    began = min((t for t, status, _, _ in rows if status == 200), default=0.0)
    first = max(1, math.ceil(began / window), math.ceil((dry or 0.0) / window))
    first = min(first, windows - 3)
    span = per[first:-1]
    credit = held(first * window) - held((windows - 1) * window)
    return {
        "per": per,
        "first": first,
        "credit": credit,
        "raw": statistics.fmean(per[1:-1]) / tpm,
        "mean": (sum(span) - credit) / (len(span) * tpm),
        "dry": dry,
    }


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


def scenario_threads(s: Setup, name: str = "threads") -> dict[str, Any]:
    with _emulator(s) as em:
        lim = tg.Limiter(tpm=TPM, rpm=RPM, window=s.window, **s.options)
        start = time.monotonic()
        _thread_workers(lim, em.base_url, s.threads, start + s.windows * s.window, s, off=0)
        goal = (0.93 if s.refund else 0.85) if name == "feedback" else 0.97
        return _report(name, em, start, s, goal, lim.refunds)


def scenario_async(s: Setup) -> dict[str, Any]:
    with _emulator(s) as em:
        lim = tg.Limiter(tpm=TPM, rpm=RPM, window=s.window, **s.options)
        start = time.monotonic()
        asyncio.run(_async_workers(lim, em.base_url, 64, start + s.windows * s.window, s))
        return _report("async", em, start, s, 0.97, lim.refunds)


def scenario_processes(s: Setup, start_delay: float = 0.5) -> dict[str, Any]:
    from redis_support import redis_server

    with redis_server() as srv, _emulator(s) as em:
        key = f"bench-{uuid.uuid4().hex[:8]}"
        ctx = mp.get_context("spawn")
        # Spawned children take a while to import (seconds on a loaded machine): the
        # clock starts when all four can run, plus ``start_delay``.
        ready = ctx.Barrier(5)
        procs = [
            ctx.Process(target=_delayed, args=(ready, start_delay, srv.url, key, em.base_url, s, i))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        ready.wait()
        start = time.monotonic() + start_delay
        for p in procs:
            p.join()
        # What the processes learned about refunds, shared on the key (see lua/lib.lua).
        client = redis.Redis.from_url(srv.url)
        learned = client.hget("{" + key + "}:s", "lrn")
        client.close()
        state = learned.decode() if isinstance(learned, bytes) else str(learned)
        refunds = s.refunds if s.refunds is not None else {"0": False, "1": True}.get(state)
        return _report("processes", em, start, s, 0.95, refunds)


def _delayed(
    ready: Any, delay: float, url: str, key: str, base_url: str, s: Setup, index: int
) -> None:
    ready.wait()
    start = time.monotonic() + delay
    time.sleep(delay)
    _process_main(url, key, base_url, start + s.windows * s.window, s, index)


def scenario_burst(algorithm: str, trials: int) -> dict[str, float]:
    """After a burst that empties the bucket, how long the next request waits, against
    the wait the server's bucket needs ((estimate - level) / refill rate)."""
    window = 1.0
    rate = TPM / window
    extra: list[float] = []
    waits: list[float] = []
    for i in range(trials):
        lim = tg.Limiter(tpm=TPM, window=window, algorithm=algorithm)
        r = lim.acquire(TPM)
        r.commit(TPM)  # the burst: the whole bucket charged
        tokens = 300 + 37 * (i % 5)
        t0 = time.monotonic()
        lim.acquire(tokens).commit(tokens)
        waited = time.monotonic() - t0
        waits.append(waited)
        extra.append(waited - tokens / rate)
    extra.sort()
    p99 = extra[min(len(extra) - 1, int(0.99 * len(extra)))]
    print(
        f"{algorithm:6s} burst  wait after an emptying burst: "
        f"median {statistics.median(waits):.3f}s, "
        f"p99 beyond the bucket's wait {1000 * p99:.1f} ms "
        f"[{'PASS' if p99 <= 0.05 else 'FAIL'} <= 50 ms] (tpm={TPM} per {window:g}s, "
        f"{trials} trials)"
    )
    return {"median": statistics.median(waits), "p99_beyond": p99}


def _p50(samples: list[int]) -> float:
    return statistics.median(samples) / 1000  # microseconds


def scenario_overhead(n: int, algorithm: str) -> dict[str, float]:
    from redis_support import redis_server

    lim = tg.Limiter(tpm=10**12, rpm=10**12, window=60.0, algorithm=algorithm)
    samples: list[int] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        r = lim.acquire(100)
        samples.append(time.perf_counter_ns() - t0)
        r.commit(90)
    mem = _p50(samples)
    with redis_server() as srv:
        client = redis.Redis.from_url(srv.url)
        rlim = tg.Limiter(
            tpm=10**12,
            rpm=10**12,
            window=60.0,
            redis=client,
            key=f"overhead-{algorithm}",
            algorithm=algorithm,
        )
        rsamples: list[int] = []
        for _ in range(max(n // 10, 200)):
            t0 = time.perf_counter_ns()
            r = rlim.acquire(100)
            rsamples.append(time.perf_counter_ns() - t0)
            r.commit(90)
        client.close()
    red = _p50(rsamples)
    print(
        f"{algorithm:6s} overhead   acquire p50: memory {mem:.1f} us "
        f"[{'PASS' if mem <= 20 else 'FAIL'} <= 20 us]"
        f", redis {red:.0f} us [{'PASS' if red <= 1000 else 'FAIL'} <= 1000 us]"
    )
    return {"memory_us": mem, "redis_us": red}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 s windows, 8 of them")
    p.add_argument(
        "--scenario",
        choices=["threads", "async", "processes", "overhead", "feedback", "burst", "all"],
        default="all",
    )
    p.add_argument(
        "--cases",
        default=None,
        help="max_tokens:completion pairs, comma-separated (default 128:128,256:64,1024:16; "
        "100:40 for feedback alone)",
    )
    p.add_argument(
        "--feedback",
        choices=["headers", "observe", "none", "all"],
        default=None,
        help="how workers give the server's answer back (default: headers; all for feedback)",
    )
    p.add_argument("--threads", type=int, default=None, help="threads (16; 8 for feedback)")
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="seconds of the limit's period (5; 1 with --quick): with long latencies and "
        "large max_tokens a short period cannot be filled even by the server's own bucket",
    )
    p.add_argument("--windows", type=int, default=None, help="periods per run (14; 8 quick)")
    p.add_argument("--refund", choices=["yes", "no", "both"], default="both")
    p.add_argument("--refunds", choices=["none", "yes", "no"], default="none")
    p.add_argument(
        "--latency",
        default="0.02",
        help="emulator seconds per answer, comma-separated (e.g. 0,0.2,0.5,1)",
    )
    p.add_argument(
        "--algorithm",
        choices=["bucket", "window", "both"],
        default="both",
        help="Limiter(algorithm=...); both: the same runs side by side",
    )
    p.add_argument("--header-lag", type=float, default=0.0, help="Limiter(header_lag=...)")
    args = p.parse_args(argv)
    feedback_only = args.scenario == "feedback"
    default_cases = "100:40" if feedback_only else "128:128,256:64,1024:16"
    cases = [tuple(int(x) for x in c.split(":")) for c in (args.cases or default_cases).split(",")]
    modes = {None: ["headers"], "all": ["headers", "observe", "none"]}.get(
        args.feedback, [args.feedback]
    )
    if feedback_only and args.feedback is None:
        modes = ["headers", "observe", "none"]
    refunds = {"none": None, "yes": True, "no": False}[args.refunds]
    servers = {"yes": [True], "no": [False], "both": [False, True]}[args.refund]
    algorithms = ["bucket", "window"] if args.algorithm == "both" else [args.algorithm]
    latencies = [float(x) for x in args.latency.split(",")]
    window = args.window or (1.0 if args.quick else 5.0)
    windows = args.windows or (8 if args.quick else 14)
    print(
        f"tpm={TPM} rpm={RPM} window={window}s windows={windows} latency={latencies}s "
        f"header_lag={args.header_lag}s refunds={refunds}"
    )
    todo = (
        ["threads", "async", "processes", "feedback", "burst", "overhead"]
        if args.scenario == "all"
        else [args.scenario]
    )

    def setup(max_tokens: int, completion: int, refund: bool, **kw: Any) -> Setup:
        return Setup(
            window=window,
            windows=windows,
            max_tokens=max_tokens,
            completion_tokens=completion,
            header_lag=args.header_lag,
            refund=refund,
            refunds=refunds,
            **kw,
        )

    # The algorithms innermost: side by side on the same cell.
    if not feedback_only:
        for latency in latencies:
            for max_tokens, completion in cases:
                for refund in servers:
                    for mode in modes:
                        for name in todo:
                            for algorithm in algorithms:
                                s = setup(
                                    max_tokens,
                                    completion,
                                    refund,
                                    feedback=mode,
                                    latency=latency,
                                    algorithm=algorithm,
                                )
                                s.threads = args.threads or 16
                                if name == "threads":
                                    scenario_threads(s)
                                elif name == "async":
                                    scenario_async(s)
                                elif name == "processes":
                                    scenario_processes(s)
    if "feedback" in todo:
        for latency in latencies:
            for max_tokens, completion in cases if feedback_only else [(100, 40)]:
                for refund in servers:
                    for mode in modes if feedback_only else ["headers", "observe", "none"]:
                        for algorithm in algorithms:
                            s = setup(
                                max_tokens,
                                completion,
                                refund,
                                feedback=mode,
                                latency=latency,
                                algorithm=algorithm,
                            )
                            s.threads = args.threads or 8
                            scenario_threads(s, "feedback")
    if "burst" in todo:
        for algorithm in algorithms:
            scenario_burst(algorithm, 20 if args.quick else 100)
    if "overhead" in todo:
        for algorithm in algorithms:
            scenario_overhead(2000 if args.quick else 20000, algorithm)


if __name__ == "__main__":
    main()
