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

Rows: ``alone`` (interactive only), ``priority`` (batch traffic as ``"batch"``, the
limiter's interactive reserve ``--reserve``, by default its own: a tenth of the
capacity), ``noreserve`` (the same with no reserve), ``fifo`` (the same batch traffic as
interactive: strict FIFO). ``--rows`` picks some; ``--callers 0`` measures batch alone
(what the reserve costs batch). The rows alternate within each of ``--runs`` runs; the
table prints medians over runs of each run's p50/p99 interactive wait, the batch tokens
served per second over the run (a full bucket at the start included) and in steady
state (after the first second).

    python benchmarks/bench_priority.py            # memory
    python benchmarks/bench_priority.py --redis    # a real redis-server
    python benchmarks/bench_priority.py --callers 0 --rows priority,noreserve
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

ROWS = ("alone", "priority", "noreserve", "fifo")
#: Batch tokens served after this many seconds count as steady state.
WARM = 1.0


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
    lim: tg.Limiter,
    a: argparse.Namespace,
    kind: tg.Priority,
    stop: float,
    served: list[tuple[float, int]],
) -> None:
    while time.monotonic() < stop:
        r = lim.acquire(a.tokens, priority=kind)
        at = time.monotonic()
        time.sleep(a.flight)
        r.commit(a.tokens)
        served.append((at, a.tokens))


def run_row(
    row: str, make: Callable[[str], tuple[tg.Limiter, tg.Limiter]], a: argparse.Namespace
) -> dict[str, float]:
    """One run of one row: the interactive waits' p50/p99 and batch tokens per second."""
    batch_lim, inter_lim = make(row)
    waits: list[float] = []
    served: list[tuple[float, int]] = []
    start = time.monotonic()
    stop = start + a.seconds
    threads = [
        threading.Thread(target=_caller, args=(inter_lim, a, seed, stop, waits))
        for seed in range(a.callers)
    ]
    if row != "alone":
        kind: tg.Priority = "interactive" if row == "fifo" else "batch"
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
        # Admissions before the stop only: a thread that asked before it may be admitted
        # after it.
        "batch_tps": sum(n for at, n in served if at < stop) / a.seconds,
        "steady_tps": sum(n for at, n in served if start + WARM <= at < stop) / (a.seconds - WARM),
    }


@contextmanager
def limiters(a: argparse.Namespace) -> Iterator[Callable[[str], tuple[tg.Limiter, tg.Limiter]]]:
    base: dict[str, Any] = {"tpm": a.tpm, "window": a.window, "batch_share": a.share}

    def opts(row: str) -> dict[str, Any]:
        return {**base, "interactive_reserve": 0 if row == "noreserve" else a.reserve}

    if not a.redis:

        def memory(row: str) -> tuple[tg.Limiter, tg.Limiter]:
            lim = tg.Limiter(**opts(row))
            return lim, lim

        yield memory
        return
    import redis
    from redis_support import redis_server

    with redis_server() as srv:

        def shared(row: str) -> tuple[tg.Limiter, tg.Limiter]:
            key = f"bench-prio-{uuid.uuid4().hex[:8]}"
            return (
                tg.Limiter(**opts(row), redis=redis.Redis.from_url(srv.url), key=key),
                tg.Limiter(**opts(row), redis=redis.Redis.from_url(srv.url), key=key),
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
    p.add_argument("--reserve", type=int, default=None, help="tokens (default: the limiter's)")
    p.add_argument("--rows", default=",".join(ROWS), help="a comma-separated choice of rows")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    refill = a.tokens / (a.tpm / a.window)
    rows = tuple(r for r in a.rows.split(",") if r)
    if not set(rows) <= set(ROWS):
        p.error(f"--rows: choose among {', '.join(ROWS)}")
    results: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
    reserve = tg.Limiter(tpm=a.tpm, interactive_reserve=a.reserve).interactive_reserve
    with limiters(a) as make:
        for run in range(a.runs):
            order = rows if run % 2 == 0 else rows[::-1]  # alternate: the load drifts
            for row in order:
                results[row].append(run_row(row, make, a))
    backend = "redis" if a.redis else "memory"
    print(
        f"{backend}: {a.tpm} tokens / {a.window:g} s, {a.tokens}-token requests "
        f"(refill {refill * 1000:.0f} ms), {a.batch} batch threads, {a.callers} interactive "
        f"callers every {a.every:g} s, batch_share {a.share:g}, interactive_reserve "
        f"{reserve}; medians of {a.runs} runs"
    )
    print(f"{'row':<10}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'batch tok/s':>13}{'steady':>9}")
    for row in rows:
        rs = results[row]

        def med(k: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[k] for r in rs)

        print(
            f"{row:<10}{med('n'):>7.0f}{med('p50') * 1000:>9.1f}{med('p99') * 1000:>9.1f}"
            f"{med('batch_tps'):>13.0f}{med('steady_tps'):>9.0f}"
        )
    if "alone" not in rows or "priority" not in rows:
        return
    alone, prio = (statistics.median(r["p99"] for r in results[k]) for k in ("alone", "priority"))
    print(
        f"p99 with batch - p99 alone: {(prio - alone) * 1000:.1f} ms "
        f"(goal: within one request's refill, {refill * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
