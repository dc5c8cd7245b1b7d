"""The ``max_wait`` sweep: a limiter with ``max_wait`` refuses no call that would have been
served within it, and no call waits past ``max_wait`` + 50 ms.

Each scenario runs once without ``max_wait`` (the reference: every call's real wait),
then once per ``max_wait`` value, each run against a fresh emulator (over HTTP, through
the real openai SDK) and a fresh in-memory limiter with the same limits. Tasks start in
order, a millisecond apart, so the queue order is the same in every run; call ``i`` of a
run with ``max_wait`` is compared with call ``i`` of the reference:

- ``missed``: calls whose reference wait was within ``max_wait`` less 50 ms of jitter but
  that were refused (goal: 0);
- ``over``: calls refused after more than ``max_wait`` + 50 ms (goal: 0), and the
  largest overrun of a refusal past ``max_wait`` (``worst``; a refusal that came
  before ``max_wait`` ran out, once the wait was certain, counts 0);
- the median wait of the calls served and of the calls refused, and how many refusals
  came at once (within 50 ms of the start).

Scenarios: ``rpm``: 36 tasks against 30 RPM (60 s window; the bucket serves 30 at once,
then one every 2 s); ``tpm``: 50 tasks on a compressed 2 s window, 6,000 TPM, each holding
prompt + ``max_tokens`` 500 while the server answers 16 tokens and keeps the rest.

Run: ``.venv/bin/python benchmarks/bench_max_wait.py`` (about 2 minutes), or
``--scenario rpm|tpm``; ``--repeat N`` runs every cell N times and prints medians;
``--backend redis`` shares the limiter through a redis-server started on a free
loopback port (``both``: memory, then Redis).
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
    except tg.RateLimitTimeout:
        return Outcome(False, time.monotonic() - started)
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


def _compare(ref: list[Outcome], run: list[Outcome], max_wait: float) -> dict[str, float]:
    missed = sum(
        1 for a, b in zip(ref, run, strict=True) if a.elapsed <= max_wait - JITTER and not b.served
    )
    refused = [b.elapsed for b in run if not b.served]
    over = sum(1 for e in refused if e > max_wait + JITTER)
    # How far past max_wait the latest refusal came (0: none came after it).
    worst = max((e - max_wait for e in refused), default=0.0)
    worst = max(worst, 0.0)
    return {
        "served": sum(1 for b in run if b.served),
        "could": sum(1 for a in ref if a.elapsed <= max_wait),
        "missed": missed,
        "refused": len(refused),
        "at_once": sum(1 for e in refused if e <= JITTER),
        "over": over,
        "worst": worst,
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
    print("goals met" if not failed else "GOALS MISSED: see missed / over")


def _sweep(scenario: str, repeat: int, shared: redis.Redis | None) -> bool:
    """Print the sweep's rows; True when a goal was missed."""
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    print(
        "scenario  max_wait   served/could  missed  refused(at once)  over  worst_overrun_ms  "
        "p50_wait_served  p50_elapsed_refused"
    )
    failed = False
    for name in names:
        sc = SCENARIOS[name]
        ref = asyncio.run(_run(sc, None, shared))  # the reference: every call's real wait
        longest = max(o.elapsed for o in ref)
        print(
            f"{name:8}  none       {sum(o.served for o in ref)}/{sc.tasks}"
            f"{'':26}p50 {_median([o.elapsed for o in ref])}  longest {longest:.3f}"
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
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            failed |= med["missed"] > 0 or med["over"] > 0
            print(
                f"{name:8}  {mw:<9.3f}  {med['served']:>3.0f}/{med['could']:<3.0f}      "
                f"{med['missed']:>3.0f}     {med['refused']:>3.0f} ({med['at_once']:.0f})"
                f"          {med['over']:>3.0f}   {1000 * med['worst']:>8.1f}          "
                f"{_median(served_w):>8}         {_median(refused_w):>8}"
            )
    return failed


if __name__ == "__main__":
    main()
