"""The long run: many threads share one Redis limiter in front of the emulator for a
long time, with a Redis fault every few minutes (a restart without persistence, a freeze,
its clock stepping back, then forward); the tokens the server charged and its 429s per
window, and this process's memory, go to a CSV file and a plot.

    python benchmarks/redis_long_run.py --minutes 30 --threads 32 --fault-every 180

(the issue's run; ``--window`` shortens the limit's window to see more windows).
``--before OLD.csv`` draws an earlier run's windows beside this one's; ``--replot``
draws the plot again from ``--csv`` (and ``--before``) without running.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import signal
import threading
import time
import traceback
from typing import Any

import openai
from redis_faults import Server, skew

import tokenguard as tg
from tokenguard.emulator import running

MODEL = "llama-3.1-8b-instant"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--fault-every", type=float, default=180.0)
    parser.add_argument("--tpm", type=int, default=30_000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--csv", default="redis-long-run.csv")
    parser.add_argument("--plot", default="redis-long-run.png")
    parser.add_argument("--before", help="an earlier run's CSV, drawn beside this one")
    parser.add_argument("--replot", action="store_true", help="only draw --csv again")
    args = parser.parse_args()
    if args.replot:
        replot(args)
        return
    srv = Server()
    lim = tg.Limiter(tpm=args.tpm, window=args.window, redis=srv.client(), key="long")
    stop = threading.Event()
    errors: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}  # the first traceback of each error that is no library's
    memory: list[tuple[float, float]] = []
    faults: list[tuple[float, str]] = []
    with running(model=MODEL, tpm=args.tpm, rpm=10**6, window=args.window) as em:
        client = tg.instrument(
            openai.OpenAI(base_url=em.base_url, api_key="k", max_retries=0),
            limiter=lim,
            max_wait=args.window,
        )
        t0 = time.monotonic()

        def worker(n: int) -> None:
            while not stop.is_set():
                try:
                    client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"Question {n}: say hi."}],
                        max_tokens=50,
                    )
                except Exception as exc:  # counted by type (and limit), the run goes on
                    limit = getattr(exc, "limit_name", None)
                    kind = type(exc).__name__ + (f" ({limit})" if limit else "")
                    errors[kind] += 1
                    if not isinstance(exc, tg.TokenGuardError):
                        examples.setdefault(kind, "".join(traceback.format_exception(exc)))
                    time.sleep(0.05)

        def fault(i: int) -> None:
            kind = ("restart", "freeze 5 s", "clock back 30 s", "clock forward 30 s")[i % 4]
            faults.append((time.monotonic() - t0, kind))
            if kind == "restart":
                srv.kill()
                srv.start()
            elif kind == "freeze 5 s":
                srv.signal(signal.SIGSTOP)
                time.sleep(5)
                srv.signal(signal.SIGCONT)
            else:
                skew(lim, -30.0 if "back" in kind else 0.0)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
        for t in threads:
            t.start()
        end, next_fault, i = t0 + args.minutes * 60, t0 + args.fault_every, 0
        while time.monotonic() < end:
            time.sleep(1.0)
            memory.append((time.monotonic() - t0, rss_mb()))
            if time.monotonic() >= next_fault:
                fault(i)
                i, next_fault = i + 1, next_fault + args.fault_every
        stop.set()
        for t in threads:
            t.join(args.window + 30)
        log = [r for r in em.log if r.endpoint == "chat"]
    srv.close()
    start = min((r.t for r in log), default=0.0)
    windows: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for r in log:
        w = windows[int((r.t - start) // args.window)]
        w[0] += r.charged_tokens if r.admitted else 0
        w[1] += r.status == 429
        w[2] += 1
    rows: list[dict[str, Any]] = []
    for k in sorted(windows):
        at = (k + 1) * args.window
        mem = [m for s, m in memory if s <= at]
        rows.append(
            {
                "window_end_s": at,
                "charged_tokens": windows[k][0],
                "limit": args.tpm,
                "429s": windows[k][1],
                "requests": windows[k][2],
                "rss_mb": round(mem[-1], 1) if mem else "",
            }
        )
    with open(args.csv, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    plot(rows, memory, faults, args)
    print(f"{len(log)} requests, errors by type {dict(errors)}, faults {faults}")
    for text in examples.values():
        print(text)
    print(f"memory {memory[0][1]:.1f} -> {memory[-1][1]:.1f} MB; wrote {args.csv}, {args.plot}")


def replot(args: argparse.Namespace) -> None:
    """The plot again from the CSV: memory as sampled at each window's end, the faults
    where the schedule put them."""
    rows = read_rows(args.csv)
    memory = [(float(r["window_end_s"]), float(r["rss_mb"])) for r in rows if r["rss_mb"]]
    kinds = ("restart", "freeze 5 s", "clock back 30 s", "clock forward 30 s")
    end = float(rows[-1]["window_end_s"])
    at = [args.fault_every * (i + 1) for i in range(int(end // args.fault_every))]
    plot(rows, memory, [(t, kinds[i % 4]) for i, t in enumerate(at)], args)


def read_rows(path: str) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot(
    rows: list[dict[str, Any]],
    memory: list[tuple[float, float]],
    faults: list[tuple[float, str]],
    args: argparse.Namespace,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = read_rows(args.before) if args.before else []
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for run, style, label in ((before, ":", "before"), (rows, "-", "")):
        if not run:
            continue
        ends = [float(r["window_end_s"]) / 60 for r in run]
        name = f" ({label})" if label else (" (after)" if before else "")
        charged = [float(r["charged_tokens"]) for r in run]
        top.step(ends, charged, where="post", linestyle=style, label="charged" + name)
        refused = [float(r["429s"]) for r in run]
        middle.step(ends, refused, where="post", linestyle=style, label="429s" + name)
        if run is before:
            mem = [(e, float(r["rss_mb"])) for e, r in zip(ends, run, strict=True) if r["rss_mb"]]
            bottom.plot(*zip(*mem, strict=True), linestyle=style, label="RSS" + name)
    top.axhline(args.tpm, color="red", linestyle="--", label="limit")
    top.set_ylabel(f"tokens per {args.window:g} s")
    middle.set_ylabel(f"429s per {args.window:g} s")
    for at, kind in faults:
        for ax in (top, middle, bottom):
            ax.axvline(at / 60, color="grey", alpha=0.4)
        top.annotate(kind, (at / 60, args.tpm * 1.02), fontsize=7, rotation=90)
    top.legend(loc="lower right")
    middle.legend(loc="upper left")
    bottom.plot(
        [s / 60 for s, _ in memory],
        [m for _, m in memory],
        label="RSS (after)" if before else "RSS",
    )
    bottom.legend(loc="lower right")
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
