"""The server is the authority on limits: a paid account's run, and commit-then-observe
under contention, against the emulator over HTTP through the real openai SDK.

- ``paid``: the emulator as a developer-tier account (250,000 TPM, 1,000 RPM, 500,000
  RPD, no TPD) on a compressed "minute" (``--window``, 10 s by default: the limiter
  and the emulator both take it, so a run of ``--windows`` 8 takes 80 s). 64 asyncio
  tasks and 16 threads, each sending a ~2,000-token prompt with ``max_tokens`` 64 (the
  emulator generates all 64, so the estimate is the charge: refunds play no part).
  Twice: ``instrumented`` (``tg.instrument`` clients with no limits given: the limiter
  starts from the free tier's 6,000 TPM and 30 RPM and must learn the account from the
  first answer's headers), and ``decorated`` (``@tg.guard(tier="developer")`` functions
  returning parsed completions: no headers ever reach the guard). Goal: 0 429s over the
  whole run, first window included, and a steady goodput of at least 0.95 of the
  server's 250,000 TPM (``steady`` of ``bench_limiter``: the windows after the server's
  initial full bucket was spent, less the credit it still held).
- ``observe``: ``bench_limiter``'s feedback scenario with ``commit(actual)`` then
  ``lim.observe(headers)``: 8 threads, a server that keeps unused tokens (``max_tokens``
  100, 40 generated), 6,000 TPM on 5 s windows for 14 windows. Goal: 429s <= 1% of the
  requests and >= 0.85 of the limit. Run it while the machine is loaded (e.g. beside
  the test suite): the headers of one thread's response must not be taken as the
  answer to another's request.

Run: ``.venv/bin/python benchmarks/bench_limits.py`` (about 3 minutes), or
``--scenario paid|observe``, ``--mode instrumented|decorated``, ``--window S``,
``--windows N``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import bench_limiter  # noqa: E402

import tokenguard as tg  # noqa: E402
from tokenguard.emulator import running  # noqa: E402

MODEL = "llama-3.1-8b-instant"
#: The developer tier of MODEL: 250,000 TPM, 1,000 RPM, 500,000 RPD, no TPD (0: none).
PAID_TPM, PAID_RPM, PAID_RPD = 250_000, 1_000, 500_000
MAX_TOKENS = 64
TASKS, THREADS = 64, 16


def _messages(worker: int) -> list[dict[str, str]]:
    # ~2,000 tokens, different per worker so that requests do not tile the window.
    words = " ".join(f"note{(worker * 13 + i) % 97}" for i in range(900 + 7 * (worker % 16)))
    return [{"role": "user", "content": f"Summarise: {words}"}]


def _senders(mode: str, em: Any, window: float) -> tuple[Any, Any]:
    """One sync and one async way to send a request, as ``mode`` says."""
    sync = openai.OpenAI(base_url=em.base_url, api_key="paid-account", max_retries=0)
    aio = openai.AsyncOpenAI(base_url=em.base_url, api_key="paid-account", max_retries=0)
    if mode == "instrumented":
        # No limits given: the model table's free tier is where the limiter starts.
        tg.instrument(sync, window=window)
        tg.instrument(aio, window=window)
        return sync.chat.completions.create, aio.chat.completions.create

    @tg.guard(tier="developer", window=window)
    def ask(messages: Any, model: str = MODEL, max_tokens: int = MAX_TOKENS) -> Any:
        return sync.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    @tg.guard(tier="developer", window=window)
    async def ask_async(messages: Any, model: str = MODEL, max_tokens: int = MAX_TOKENS) -> Any:
        return await aio.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens
        )

    return ask, ask_async


def scenario_paid(mode: str, window: float, windows: int) -> bool:
    tg.reset_defaults()
    with running(
        model=MODEL,
        tpm=PAID_TPM,
        rpm=PAID_RPM,
        rpd=PAID_RPD,
        tpd=0,
        window=window,
        completion_tokens=MAX_TOKENS,
    ) as em:
        send, send_async = _senders(mode, em, window)
        start = time.monotonic()
        stop = start + windows * window

        def work(i: int) -> None:
            msgs = _messages(TASKS + i)
            while time.monotonic() < stop:
                send(model=MODEL, messages=msgs, max_tokens=MAX_TOKENS)

        async def tasks() -> None:
            async def one(i: int) -> None:
                msgs = _messages(i)
                while time.monotonic() < stop:
                    await send_async(model=MODEL, messages=msgs, max_tokens=MAX_TOKENS)

            await asyncio.gather(*(one(i) for i in range(TASKS)))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        asyncio.run(tasks())
        for t in threads:
            t.join()
        log = [r for r in em.log if r.endpoint == "chat"]
    rows = [(r.t - start, r.status, r.requested_tokens, r.charged_tokens) for r in log]
    m = bench_limiter.steady(
        rows, window=window, windows=windows, latency=0.0, refund=False, tpm=PAID_TPM
    )
    n429 = sum(1 for r in log if r.status == 429)
    first429 = min((f"{r.t - start:.2f}s" for r in log if r.status == 429), default="-")
    other = sum(1 for r in log if r.status not in (200, 429))
    ok = n429 == 0 and other == 0 and m["mean"] >= 0.95
    per = [round(x / PAID_TPM, 3) for x in m["per"]]
    print(
        f"paid {mode:12s} requests={len(log)} 429s={n429} (first at {first429}) "
        f"other_errors={other} steady windows {m['first'] + 1}-{windows - 1} "
        f"goodput={m['mean']:.3f} (raw {m['raw']:.3f}) per window={per} "
        f"[{'PASS' if ok else 'FAIL'} 0 429s, goodput>=0.95]",
        flush=True,
    )
    return ok


def scenario_observe(window: float, windows: int) -> bool:
    s = bench_limiter.Setup(
        window=window,
        windows=windows,
        max_tokens=100,
        completion_tokens=40,
        latency=0.0,
        refund=False,
        feedback="observe",
        threads=8,
        algorithm="bucket",
    )
    r = bench_limiter.scenario_threads(s, "feedback")
    share = r["429"] / max(r["requests"], 1)
    ok = bool(share <= 0.01 and r["mean"] >= 0.85)
    print(
        f"observe: 429s {r['429']} of {r['requests']} requests ({100 * share:.2f}%), "
        f"{r['mean']:.3f} of the limit [{'PASS' if ok else 'FAIL'} 429s<=1%, >=0.85]",
        flush=True,
    )
    return ok


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=["paid", "observe", "all"], default="all")
    p.add_argument("--mode", choices=["instrumented", "decorated", "all"], default="all")
    p.add_argument("--window", type=float, default=None, help="paid: 10 s; observe: 5 s")
    p.add_argument("--windows", type=int, default=None, help="paid: 8; observe: 14")
    args = p.parse_args(argv)
    os.environ.pop("TOKENGUARD_TIER", None)  # the instrumented run starts from the table
    passed = True
    if args.scenario in ("paid", "all"):
        modes = ["instrumented", "decorated"] if args.mode == "all" else [args.mode]
        for mode in modes:
            passed &= scenario_paid(mode, args.window or 10.0, args.windows or 8)
    if args.scenario in ("observe", "all"):
        passed &= scenario_observe(args.window or 5.0, args.windows or 14)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
