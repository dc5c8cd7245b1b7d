"""Interactive calls on a quota that batch traffic saturates: their wait, with and without
the batch traffic, and with the batch traffic in strict FIFO (no priorities).

One limiter (memory, or ``--redis``: a real redis-server, the batch threads and the
interactive callers each on their own limiter on one key, as two processes would be) on a
compressed minute: ``--tpm`` tokens per ``--window`` seconds. ``--batch`` threads send
batch requests back to back (acquire, a request in flight for ``--flight`` seconds, commit
the estimate); ``--callers`` interactive callers each send one request at Poisson
intervals of ``--every`` seconds on average. Every request costs ``--tokens``, so one
request's refill time is ``tokens / (tpm / window)`` seconds: the goal is that the p99
wait of interactive calls with batch traffic (priorities on) is within that of their p99
wait with no batch traffic.

Rows: ``alone`` (interactive only), ``priority`` (batch traffic as ``"batch"``), ``fifo``
(the same batch traffic as interactive: today's strict FIFO). The rows alternate within
each of ``--runs`` runs; the table prints medians over runs of each run's p50/p99
interactive wait and the batch tokens served per second.

    python benchmarks/bench_priority.py            # memory
    python benchmarks/bench_priority.py --redis    # a real redis-server
"""

from __future__ import annotations

import argparse
import random
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
sys.path.insert(0, str(ROOT / "tests"))

import tokenguard as tg  # noqa: E402

ROWS = ("alone", "priority", "fifo")


def _p(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def _caller(
    lim: tg.Limiter, a: argparse.Namespace, seed: int, stop: float, waits: list[float]
) -> None:
    rnd = random.Random(seed)
    while True:
        time.sleep(rnd.expovariate(1 / a.every))
        if time.monotonic() >= stop:
            return
        r = lim.acquire(a.tokens, priority="interactive")
        waits.append(r.waited)
        time.sleep(a.flight)
        r.commit(a.tokens)


def _batcher(
    lim: tg.Limiter, a: argparse.Namespace, kind: tg.Priority, stop: float, served: list[int]
) -> None:
    while time.monotonic() < stop:
        r = lim.acquire(a.tokens, priority=kind)
        time.sleep(a.flight)
        r.commit(a.tokens)
        served.append(a.tokens)


def run_row(
    row: str, make: Callable[[], tuple[tg.Limiter, tg.Limiter]], a: argparse.Namespace
) -> dict[str, float]:
    """One run of one row: the interactive waits' p50/p99 and batch tokens per second."""
    batch_lim, inter_lim = make()
    waits: list[float] = []
    served: list[int] = []
    stop = time.monotonic() + a.seconds
    threads = [
        threading.Thread(target=_caller, args=(inter_lim, a, seed, stop, waits))
        for seed in range(a.callers)
    ]
    if row != "alone":
        kind: tg.Priority = "batch" if row == "priority" else "interactive"
        threads += [
            threading.Thread(target=_batcher, args=(batch_lim, a, kind, stop, served))
            for _ in range(a.batch)
        ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "p50": _p(waits, 0.5),
        "p99": _p(waits, 0.99),
        "n": len(waits),
        "batch_tps": sum(served) / a.seconds,
    }


@contextmanager
def limiters(a: argparse.Namespace) -> Iterator[Callable[[], tuple[tg.Limiter, tg.Limiter]]]:
    options: dict[str, Any] = {"tpm": a.tpm, "window": a.window, "batch_share": a.share}
    if not a.redis:

        def memory() -> tuple[tg.Limiter, tg.Limiter]:
            lim = tg.Limiter(**options)
            return lim, lim

        yield memory
        return
    import redis
    from redis_support import redis_server

    with redis_server() as srv:

        def shared() -> tuple[tg.Limiter, tg.Limiter]:
            key = f"bench-prio-{uuid.uuid4().hex[:8]}"
            return (
                tg.Limiter(**options, redis=redis.Redis.from_url(srv.url), key=key),
                tg.Limiter(**options, redis=redis.Redis.from_url(srv.url), key=key),
            )

        yield shared


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis", action="store_true")
    p.add_argument("--tpm", type=int, default=6000)
    p.add_argument("--window", type=float, default=3.0, help="the compressed minute (s)")
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--callers", type=int, default=2)
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--flight", type=float, default=0.02)
    p.add_argument("--share", type=float, default=0.1)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    refill = a.tokens / (a.tpm / a.window)
    results: dict[str, list[dict[str, float]]] = {row: [] for row in ROWS}
    with limiters(a) as make:
        for run in range(a.runs):
            order = ROWS if run % 2 == 0 else ROWS[::-1]  # alternate: the load drifts
            for row in order:
                results[row].append(run_row(row, make, a))
    backend = "redis" if a.redis else "memory"
    print(
        f"{backend}: {a.tpm} tokens / {a.window:g} s, {a.tokens}-token requests "
        f"(refill {refill * 1000:.0f} ms), {a.batch} batch threads, {a.callers} interactive "
        f"callers every {a.every:g} s, batch_share {a.share:g}; medians of {a.runs} runs"
    )
    print(f"{'row':<10}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'batch tok/s':>13}")
    for row in ROWS:
        rs = results[row]

        def med(k: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[k] for r in rs)

        print(
            f"{row:<10}{med('n'):>7.0f}{med('p50') * 1000:>9.1f}{med('p99') * 1000:>9.1f}"
            f"{med('batch_tps'):>13.0f}"
        )
    alone, prio = (statistics.median(r["p99"] for r in results[k]) for k in ("alone", "priority"))
    print(
        f"p99 with batch - p99 alone: {(prio - alone) * 1000:.1f} ms "
        f"(goal: within one request's refill, {refill * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
