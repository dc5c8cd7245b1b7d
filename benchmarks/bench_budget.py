"""Spend benchmarks: a per-tenant day budget on Redis hammered by many processes, the
cost of a shared budget's round trips, and the demo's workload priced by the table.

- ``hammer``: 4 processes x 8 threads (``--procs``, ``--threads``) send guarded calls
  through the real openai SDK to one emulator, all under ``tg.budget(usd=..., key=
  "tenant-42", per="day", redis=r)`` on one redis-server; each thread stops at its
  first refusal. Twice: ``exact`` (the emulator writes every completion to its
  ``max_tokens``, so each estimate is exactly what is charged) and ``short``
  (completions of 16 tokens, well under ``max_tokens``). Reported: what Redis says was
  spent against the cap (overspend must be 0: at most one request's estimate is the
  issue's bound), the largest estimate, requests served and refused, what was left.
- ``overhead``: p50/p99 of one hold + settle on Redis (two round trips), one thread.
- ``demo``: ``tokenguard demo`` on the emulator with llama-3.1-8b-instant in an
  8,192-token context (``--plain``), its events' ``tokenguard.cost_usd`` totalled by
  ``tokenguard report``, and the same tokens priced at every model of the table.

Run: ``.venv/bin/python benchmarks/bench_budget.py`` (about 2 minutes; the demo is most
of it), or ``--scenario hammer|overhead|demo``, ``--cap-usd 0.002``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import openai
import redis
from redis_faults import Server

import tokenguard as tg
from tokenguard._drive import run_sync
from tokenguard._spend._prices import to_pico
from tokenguard._spend._shared import SharedStore
from tokenguard.cli._report import read_log
from tokenguard.emulator import running

MODEL = "llama-3.1-8b-instant"
WORDS = ("a", "budget", "holds", "every", "estimate", "before", "the", "request", "leaves")


def _prompt(rng: Any) -> list[dict[str, str]]:
    n = rng.randint(20, 400)
    return [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(n))}]


def _process(args: tuple[str, int, str, str, int, int]) -> dict[str, Any]:
    """One process: ``threads`` threads, each sending until its first refusal."""
    import random

    base_url, port, key, cap, threads, seed = args
    r = redis.Redis(host="127.0.0.1", port=port)
    client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
    estimates: list[Decimal] = []
    lock = threading.Lock()

    def seen(event: Any) -> None:
        if event.name == "tokenguard.guard.request":
            price = tg.price_of(MODEL)
            assert price is not None
            held = price.cost(
                event.estimated_tokens - event.completion_reserve, event.completion_reserve
            )
            with lock:
                estimates.append(held)

    tg.events.use_logging(False)
    tg.events.add_sink(seen)

    @tg.guard(rate_limit=False)
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 100) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    served = [0] * threads
    refused = [0] * threads

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while True:
            with tg.budget(usd=cap, key=key, per="day", redis=r):
                try:
                    ask(_prompt(rng), max_tokens=rng.randint(20, 300))
                except tg.BudgetExceeded:
                    refused[n] += 1
                    return
            served[n] += 1

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"served": sum(served), "refused": sum(refused), "max_estimate": max(estimates)}


def hammer(args: argparse.Namespace, srv: Server) -> None:
    print(
        f"hammer: {args.procs} processes x {args.threads} threads, one day budget of "
        f"${args.cap_usd} on Redis, {MODEL} at {tg.price_of(MODEL)}"
    )
    print(
        f"{'estimates':>9} {'spent':>12} {'cap':>8} {'overspend':>10} {'largest estimate':>17} "
        f"{'served':>7} {'refused':>8} {'left':>12} {'s':>6}"
    )
    ctx = multiprocessing.get_context("spawn")
    for mode, completion in (("exact", 1_000_000), ("short", 16)):
        with running(
            model=MODEL, tpm=10**9, rpm=10**9, window=60.0, completion_tokens=completion
        ) as em:
            key = f"tenant-42-{uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            jobs = [
                (em.base_url, srv.port, key, args.cap_usd, args.threads, i)
                for i in range(args.procs)
            ]
            with ctx.Pool(args.procs) as pool:
                results = pool.map(_process, jobs)
            took = time.monotonic() - started
            sent = sum(1 for rec in em.log if rec.endpoint == "chat")
        got = tg.budget_status(key, redis=srv.client())
        cap = Decimal(args.cap_usd)
        over = max(Decimal(0), got.spent_usd - cap)
        largest = max(r["max_estimate"] for r in results)
        served = sum(r["served"] for r in results)
        assert served == sent == got.used_requests, (served, sent, got.used_requests)
        assert got.reserved_usd == 0
        print(
            f"{mode:>9} {got.spent_usd:>12f} {cap:>8f} {over:>10f} {largest.normalize():>17f} "
            f"{served:>7} {sum(r['refused'] for r in results):>8} "
            f"{cap - got.spent_usd:>12f} {took:>6.1f}"
        )


def overhead(args: argparse.Namespace, srv: Server) -> None:
    store = SharedStore(srv.client(), f"overhead-{uuid.uuid4().hex[:6]}", "day", 900.0)
    caps = (-1, -1, to_pico(Decimal(10**6)))
    times: list[float] = []
    for i in range(args.iterations):
        hid = uuid.uuid4().hex
        t0 = time.perf_counter()
        run_sync(store.hold_plan(caps, hid, 300, 15_000_000, "'o'"))
        run_sync(store.settle_plan(hid, 200, 10_000_000))
        times.append(time.perf_counter() - t0)
        del i
    times.sort()
    p50 = statistics.median(times) * 1e3
    p99 = times[int(len(times) * 0.99) - 1] * 1e3
    print(
        f"overhead: hold + settle on Redis, {args.iterations} calls: "
        f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"
    )


def demo(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "demo.jsonl")
        cmd = [
            sys.executable,
            "-m",
            "tokenguard.cli",
            "demo",
            "--plain",
            "--model",
            MODEL,
            "--context-window",
            "8192",
            "--events",
            log,
        ]
        env = {k: v for k, v in os.environ.items() if k != "GROQ_API_KEY"}
        started = time.monotonic()
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, env=env)
        took = time.monotonic() - started
        with open(log, encoding="utf-8") as f:
            rep = read_log(f, log)
    print(f"demo: `tokenguard demo --plain --model {MODEL} --context-window 8192` ({took:.0f} s)")
    for t in rep.by_model.values():
        fresh = t.input_tokens - t.cached_tokens
        print(
            f"  {t.model}: {t.calls} calls, {t.input_tokens:,} tokens in ({t.cached_tokens:,} "
            f"cached), {t.output_tokens:,} out; logged cost ${t.cost_usd:f} "
            f"({t.priced} calls priced)"
        )
        print("  the same tokens at each price of the table (USD per million in/out):")
        for model in (
            "llama-3.1-8b-instant",
            "llama-3.3-70b-versatile",
            "openai/gpt-oss-20b",
            "openai/gpt-oss-120b",
        ):
            price = tg.price_of(model)
            assert price is not None
            cost = price.cost(t.input_tokens, t.output_tokens, t.cached_tokens)
            per_call = cost / t.calls if t.calls else Decimal(0)
            print(
                f"    {model:<26} {price.input}/{price.output}: ${cost:f} "
                f"(${per_call:.8f} a call; {fresh:,} fresh input tokens)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["hammer", "overhead", "demo", "all"], default="all")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--cap-usd", default="0.002")
    parser.add_argument("--iterations", type=int, default=2_000)
    args = parser.parse_args()
    if args.scenario in ("hammer", "overhead", "all"):
        srv = Server()
        try:
            if args.scenario in ("hammer", "all"):
                hammer(args, srv)
            if args.scenario in ("overhead", "all"):
                overhead(args, srv)
        finally:
            srv.close()
    if args.scenario in ("demo", "all"):
        demo(args)


if __name__ == "__main__":
    main()
