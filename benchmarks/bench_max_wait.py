"""The ``max_wait`` sweep: a limiter with ``max_wait`` refuses no call that would have been
served within it, and no call waits past ``max_wait`` + 50 ms.

Each scenario runs without ``max_wait`` (the reference: how long the queue took to serve
each call), then once per ``max_wait`` value, each run against a fresh emulator (over HTTP,
through the real openai SDK) and a fresh limiter with the same limits. Tasks start a
millisecond apart; the queue order is not the start order on Redis (start round trips
overlap), so nothing compares call ``i`` with call ``i``. Per cell, order-free:

- ``missed``: the reference served ``could`` calls within ``max_wait`` less 50 ms of
  jitter (the most any reference run did); a run serving fewer missed the difference.
  Refusals ahead only move the rest forward, so FIFO serves at least as many.
- ``wrong``: refusals whose reason does not hold. Every refusal is recorded with the
  limiter's reason: at the deadline ("waited max_wait"), or at once with the soonest it
  claimed. Wrong are: an at-once refusal claiming a soonest within ``max_wait``, or one
  that came after ``max_wait`` less the jitter; a deadline refusal that came before it;
  and claims the reference disproves: refused at once, ``m`` calls take ``m`` queue
  places, and the soonest of a place is no later than the reference's wait there (a
  run with refusals has fewer calls ahead), so the ``j``-th longest claim may not exceed
  the ``j``-th longest reference wait plus the jitter. (A limiter that overstated the
  soonest to refuse early would pass ``missed`` by serving later calls instead; this
  catches it.)
- ``over``: refusals after more than ``max_wait`` + 50 ms, and admissions after it;
  ``worst``: the largest overrun of either past ``max_wait``.

Counts are summed over ``--repeat`` runs (the goal is none in any run); the waits are
medians. Scenarios: ``rpm``: 36 tasks against 30 RPM (60 s window; the bucket serves 30
at once, then one every 2 s); ``tpm``: 50 tasks on a compressed 2 s window, 6,000 TPM,
each holding prompt + ``max_tokens`` 500 while the server answers 16 tokens and keeps the
rest.

Run: ``.venv/bin/python benchmarks/bench_max_wait.py`` (about 2 minutes), or
``--scenario rpm|tpm``; ``--repeat N`` runs every cell N times; ``--backend redis``
shares the limiter through a redis-server started on a free loopback port (``both``:
memory, then Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import openai
import redis

import tokenguard as tg
from tokenguard.emulator import running

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODEL = "llama-3.1-8b-instant"
JITTER = 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    tasks: int
    tpm: int
    rpm: int
    window: float
    max_tokens: int
    # max_wait values as fractions of the reference's longest wait, and as seconds.
    fractions: tuple[float, ...]
    seconds: tuple[float, ...]


SCENARIOS = {
    "rpm": Scenario("rpm", 36, 60_000, 30, 60.0, 32, (0.5, 1.02), (1.0, 2.0, 5.0)),
    "tpm": Scenario("tpm", 50, 6_000, 1_000, 2.0, 500, (0.5, 0.9, 1.02), (1.0,)),
}


@dataclass(frozen=True)
class Outcome:
    served: bool
    elapsed: float  # from the call's start to its admission or refusal (monotonic)
    # A refusal's reason, as the limiter gave it: at the deadline, or at once with the
    # soonest it claimed (seconds from the start).
    at_deadline: bool = False
    claimed: float | None = None


async def _one(
    client: openai.AsyncOpenAI,
    lim: tg.Limiter,
    sc: Scenario,
    messages: list[dict[str, str]],
    estimate: int,
    max_wait: float | None,
) -> Outcome:
    started = time.monotonic()
    try:
        r = await lim.acquire_async(estimate, max_wait=max_wait)
    except tg.RateLimitTimeout as exc:
        elapsed = time.monotonic() - started
        at_deadline = "without being admitted" in str(exc)
        return Outcome(False, elapsed, at_deadline, None if at_deadline else exc.needed_wait)
    admitted = time.monotonic() - started
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=sc.max_tokens,
        )
    except openai.RateLimitError as exc:
        await r.commit_async(estimate, headers=exc.response.headers)
        raise SystemExit(f"a 429: the limiter let too much through ({exc})") from exc
    except BaseException:
        await r.cancel_async()
        raise
    usage = raw.parse().usage
    assert usage is not None
    await r.commit_async(usage.total_tokens, headers=raw.headers)
    return Outcome(True, admitted)


async def _run(
    sc: Scenario, max_wait: float | None, client_of_redis: redis.Redis | None
) -> list[Outcome]:
    messages = [{"role": "user", "content": "Say something short."}]
    estimate = tg.count_request(messages, model=MODEL, max_tokens=sc.max_tokens).total
    with running(
        model=MODEL, tpm=sc.tpm, rpm=sc.rpm, tpd=0, rpd=0, window=sc.window, completion_tokens=16
    ) as em:
        client = openai.AsyncOpenAI(base_url=em.base_url, api_key="bench", max_retries=0)
        lim = tg.Limiter(
            tpm=sc.tpm,
            rpm=sc.rpm,
            window=sc.window,
            redis=client_of_redis,
            key=f"bench-max-wait-{uuid.uuid4().hex[:8]}",
        )
        tasks = []
        for _ in range(sc.tasks):
            tasks.append(asyncio.create_task(_one(client, lim, sc, messages, estimate, max_wait)))
            await asyncio.sleep(0.001)  # the same queue order in every run
        out = await asyncio.gather(*tasks)
        await client.close()
        await lim.aclose()
    return list(out)


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f}" if xs else "-"


@dataclass
class Reference:
    """What runs without ``max_wait`` showed: every call's wait, longest first, per run."""

    runs: list[list[float]]

    def could(self, max_wait: float) -> int:
        """The most calls any reference run served within ``max_wait`` less the jitter."""
        return max(sum(1 for w in run if w <= max_wait - JITTER) for run in self.runs)

    def longest(self) -> list[float]:
        """Per rank, the longest wait any run had there (the lenient bound for claims)."""
        return [max(ws) for ws in zip(*self.runs, strict=True)]


def _wrong(ref: Reference, run: list[Outcome], max_wait: float) -> int:
    """Refusals whose reason does not hold (see the module docstring)."""
    refused = [o for o in run if not o.served]
    wrong = 0
    for o in refused:
        if o.at_deadline:
            wrong += o.elapsed < max_wait - JITTER  # gave up before its deadline
        else:
            claimed = o.claimed
            wrong += claimed is None or claimed <= max_wait or o.elapsed > max_wait - JITTER
    claims = sorted((o.claimed for o in refused if o.claimed is not None), reverse=True)
    wrong += sum(1 for c, w in zip(claims, ref.longest(), strict=False) if c > w + JITTER)
    return wrong


def _compare(ref: Reference, run: list[Outcome], max_wait: float) -> dict[str, float]:
    served = sum(1 for o in run if o.served)
    could = ref.could(max_wait)
    late = [o.elapsed - max_wait for o in run if o.elapsed > max_wait]
    return {
        "served": served,
        "could": could,
        "missed": max(could - served, 0),
        "wrong": _wrong(ref, run, max_wait),
        "refused": len(run) - served,
        "at_once": sum(1 for o in run if not o.served and not o.at_deadline),
        "over": sum(1 for x in late if x > JITTER),
        "worst": max(late, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--backend", choices=["memory", "redis", "both"], default="memory")
    args = parser.parse_args()
    backends = ["memory", "redis"] if args.backend == "both" else [args.backend]
    failed = False
    for backend in backends:
        with ExitStack() as stack:
            shared = None
            if backend == "redis":
                from redis_support import redis_server

                srv = stack.enter_context(redis_server())
                shared = redis.Redis.from_url(srv.url)
            print(f"== {backend}")
            failed |= _sweep(args.scenario, args.repeat, shared)
    print("goals met" if not failed else "GOALS MISSED: see missed / wrong / over")


def _sweep(scenario: str, repeat: int, shared: redis.Redis | None) -> bool:
    """Print the sweep's rows; True when a goal was missed."""
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    print(
        "scenario  max_wait   served/could  missed  wrong  refused(at once)  over  "
        "worst_overrun_ms  p50_wait_served  p50_elapsed_refused"
    )
    failed = False
    for name in names:
        sc = SCENARIOS[name]
        runs = [asyncio.run(_run(sc, None, shared)) for _ in range(repeat)]
        ref = Reference([sorted((o.elapsed for o in run), reverse=True) for run in runs])
        longest = max(ref.longest())
        every = [o.elapsed for run in runs for o in run]
        print(
            f"{name:8}  none       {sum(o.served for run in runs for o in run)}/"
            f"{sc.tasks * repeat}{'':31}p50 {_median(every)}  longest {longest:.3f}"
        )
        waits = sorted({round(f * longest, 3) for f in sc.fractions} | set(sc.seconds))
        for mw in waits:
            rows = []
            served_w: list[float] = []
            refused_w: list[float] = []
            for _ in range(repeat):
                run = asyncio.run(_run(sc, mw, shared))
                rows.append(_compare(ref, run, mw))
                served_w += [o.elapsed for o in run if o.served]
                refused_w += [o.elapsed for o in run if not o.served]
            tot = {k: sum(r[k] for r in rows) for k in rows[0]}
            worst = max(r["worst"] for r in rows)
            failed |= tot["missed"] > 0 or tot["wrong"] > 0 or tot["over"] > 0
            print(
                f"{name:8}  {mw:<9.3f}  {tot['served']:>4.0f}/{tot['could']:<4.0f}    "
                f"{tot['missed']:>3.0f}    {tot['wrong']:>3.0f}     {tot['refused']:>4.0f} "
                f"({tot['at_once']:.0f}){'':9}{tot['over']:>3.0f}   {1000 * worst:>8.1f}"
                f"          {_median(served_w):>8}         {_median(refused_w):>8}"
            )
    return failed


if __name__ == "__main__":
    main()
