"""Strict FIFO against bounded-delay backfill on the side-by-side benchmark's workload.

The request-size mix of ``benchmarks/compare/workload.py`` (three in four short chats of
30-150 prompt tokens, one in four long ones of 1,000-3,500; every request reserves
``MAX_TOKENS`` 256 for its completion) sent by ``--workers`` threads back to back, closed
loop, through one limiter with the compare benchmark's limits (6,000 TPM, 30 RPM) on its
compressed minute (``--window`` 2 s). Each request's estimate is its exact prompt count
plus the reserve; it stays in flight ``--flight`` seconds and commits prompt + 40 tokens
(what the emulator answers). Rows: ``fifo`` (``backfill=0``, the default) and each
``--bounds`` value (seconds of the compressed minute). Rows alternate within each of
``--runs`` runs; printed are medians over runs of: requests served, p50/p99 latency
(acquire wait + flight) of short and long requests, and goodput (tokens committed over
what the limit allows in the run: a full bucket, then its rate).

    python benchmarks/bench_backfill.py                 # memory
    python benchmarks/bench_backfill.py --redis         # a real redis-server
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from compare.workload import (  # noqa: E402
    COMPLETION,
    MAX_TOKENS,
    MODEL,
    RPM,
    TPM,
    conversation_mix,
    quantile,
)

import tokenguard as tg  # noqa: E402

LONG = 500  # prompt tokens: a request above is "long"


def _worker(
    lim: tg.Limiter, prompts: list[int], a: argparse.Namespace, stop: float, out: dict[str, Any]
) -> None:
    i = 0
    while True:
        prompt = prompts[i % len(prompts)]
        i += 1
        t0 = time.monotonic()
        if t0 >= stop:
            return
        r = lim.acquire(prompt + MAX_TOKENS)
        time.sleep(a.flight)
        r.commit(prompt + COMPLETION)
        if time.monotonic() <= stop:
            with out["lock"]:
                out["long" if prompt > LONG else "short"].append(time.monotonic() - t0)
                out["tokens"] += prompt + COMPLETION


def run_row(
    bound: float, make: Callable[[float], tg.Limiter], prompts: list[int], a: argparse.Namespace
) -> dict[str, float]:
    lim = make(bound)
    out: dict[str, Any] = {"short": [], "long": [], "tokens": 0, "lock": threading.Lock()}
    stop = time.monotonic() + a.seconds
    # Each worker starts at its own place in the mix, as the compare benchmark's do.
    step = max(1, len(prompts) // a.workers)
    threads = [
        threading.Thread(
            target=_worker, args=(lim, prompts[k * step :] + prompts[: k * step], a, stop, out)
        )
        for k in range(a.workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    short, long = out["short"], out["long"]
    return {
        "served": len(short) + len(long),
        "short_p50": quantile(short, 0.5),
        "short_p99": quantile(short, 0.99),
        "long_p50": quantile(long, 0.5),
        "long_p99": quantile(long, 0.99),
        # What the limit allows in the run: the full bucket at the start, then its rate.
        "goodput": out["tokens"] / (TPM + TPM / a.window * a.seconds),
    }


@contextmanager
def limiters(a: argparse.Namespace) -> Iterator[Callable[[float], tg.Limiter]]:
    options: dict[str, Any] = {"tpm": TPM, "rpm": RPM, "window": a.window}
    if not a.redis:
        yield lambda bound: tg.Limiter(**options, backfill=bound)
        return
    import redis
    from redis_support import redis_server

    with redis_server() as srv:
        yield lambda bound: tg.Limiter(
            **options,
            backfill=bound,
            redis=redis.Redis.from_url(srv.url),
            key=f"bench-backfill-{uuid.uuid4().hex[:8]}",
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis", action="store_true")
    p.add_argument("--window", type=float, default=2.0, help="the compressed minute (s)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--flight", type=float, default=0.005)
    p.add_argument("--bounds", type=float, nargs="+", default=[0.1, 0.4])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    prompts = [tg.count_tokens(m, model=MODEL) for m in conversation_mix()]
    rows = [0.0, *a.bounds]
    results: dict[float, list[dict[str, float]]] = {b: [] for b in rows}
    with limiters(a) as make:
        for run in range(a.runs):
            for bound in rows if run % 2 == 0 else rows[::-1]:  # alternate: the load drifts
                results[bound].append(run_row(bound, make, prompts, a))
    print(
        f"{'redis' if a.redis else 'memory'}: {TPM} TPM, {RPM} RPM per {a.window:g} s, "
        f"{a.workers} workers, {a.seconds:g} s per run, medians of {a.runs} runs "
        f"(latency in ms; short: prompt <= {LONG} tokens)"
    )
    cols = ("served", "short_p50", "short_p99", "long_p50", "long_p99", "goodput")
    print(f"{'backfill':<10}" + "".join(f"{c:>11}" for c in cols))
    for bound in rows:
        med = {c: statistics.median(r[c] for r in results[bound]) for c in cols}
        name = "fifo" if bound == 0 else f"{bound:g} s"
        print(
            f"{name:<10}{med['served']:>11.0f}"
            + "".join(f"{med[c] * 1000:>11.0f}" for c in cols[1:5])
            + f"{med['goodput']:>11.2f}"
        )


if __name__ == "__main__":
    main()
