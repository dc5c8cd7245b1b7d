"""The ``max_wait`` sweep: a limiter with ``max_wait`` refuses no call that would have been
served within it, and no call waits past ``max_wait`` + 50 ms.

Each scenario runs without ``max_wait`` (the reference: how long the queue took to serve
each call) before and after every run with a ``max_wait`` value, each run against a
fresh emulator (in its own process, over HTTP, through the real openai SDK) and a fresh
limiter with the same limits. Tasks start a millisecond apart; the queue order is not
the start order on Redis (start round trips overlap), so nothing compares call ``i``
with call ``i``. Per cell, order-free:

- ``missed``: the references just before and after a run say how many of its calls the
  queue could serve within ``max_wait`` less 50 ms of jitter (``could``: the more of the
  two, as the machine's load moves the queue's pace): the ``p``-th time a reference
  served a call, from its first start, against the ``p``-th start of the run. A run
  serving fewer missed the difference.
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
medians; ``gc_ms`` is the longest garbage collection during the cell's runs; ``scripts``
(Redis) the median number of scripts a run called. A process
that imported the openai SDK holds about 120,000 objects, and a full collection of them
stops every thread 80 ms (over 200 ms on a loaded machine), past any deadline in that
time: the sweep measures the limiter, so it freezes what was loaded before the runs
(``gc.freeze()``, as long-running servers do); ``--no-freeze`` shows the difference.

Scenarios: ``rpm``: 36 tasks against 30 RPM (60 s window; the bucket serves 30
at once, then one every 2 s); ``tpm``: 50 tasks on a compressed 2 s window, 6,000 TPM,
each holding prompt + ``max_tokens`` 500 while the server answers 16 tokens and keeps the
rest.

Run: ``.venv/bin/python benchmarks/bench_max_wait.py`` (about 4 minutes), or
``--scenario rpm|tpm``; ``--repeat N`` runs every cell N times; ``--backend redis``
shares the limiter through a redis-server started on a free loopback port (``both``:
memory, then Redis).

``--lone N`` times instead what the batched poll at the deadline costs a waiter alone
(Redis): N polls at a deadline, each the only one due, from a thread and from a task;
medians in microseconds, from the ticket's due poll to its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
    started: float  # when the call started (monotonic)
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
        claimed = None if at_deadline else exc.needed_wait
        return Outcome(False, elapsed, started, at_deadline, claimed)
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
    return Outcome(True, admitted, started)


async def _run(
    sc: Scenario, max_wait: float | None, client_of_redis: redis.Redis | None
) -> list[Outcome]:
    messages = [{"role": "user", "content": "Say something short."}]
    estimate = tg.count_request(messages, model=MODEL, max_tokens=sc.max_tokens).total
    from reliability_support import emulator_process

    limits = {"tpm": sc.tpm, "rpm": sc.rpm, "tpd": 0, "rpd": 0, "window": sc.window}
    args = [x for name, v in limits.items() for x in (f"--{name}", str(v))]
    # The server in its own process, as Groq is: what is timed is the limiter's process.
    with emulator_process("--model", MODEL, "--completion-tokens", "16", *args) as base_url:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
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


@dataclass(frozen=True)
class Schedule:
    """A run without ``max_wait``: when the queue served its calls, in order, from the
    first call's start; and every call's wait, longest first."""

    served_at: list[float]
    waits: list[float]

    @classmethod
    def of(cls, run: list[Outcome]) -> Schedule:
        first = min(o.started for o in run)
        served_at = sorted(o.started - first + o.elapsed for o in run)
        return cls(served_at, sorted((o.elapsed for o in run), reverse=True))

    def could(self, run: list[Outcome], max_wait: float) -> int:
        """How many of ``run``'s calls this schedule serves within ``max_wait`` less the
        jitter: the ``p``-th place goes to the ``p``-th call to start (under load the
        starts spread by tens of ms, so a wait alone does not carry over between runs)."""
        first = min(o.started for o in run)
        starts = sorted(o.started - first for o in run)
        return sum(
            1 for t, s in zip(self.served_at, starts, strict=True) if t - s <= max_wait - JITTER
        )


@dataclass
class Reference:
    """The runs without ``max_wait`` a judgement draws on."""

    runs: list[Schedule]

    def could(self, run: list[Outcome], max_wait: float) -> int:
        """The most calls of ``run`` any of the references serves within ``max_wait``."""
        return max(ref.could(run, max_wait) for ref in self.runs)

    def longest(self) -> list[float]:
        """Per rank, the longest wait any run had there (the lenient bound for claims)."""
        return [max(ws) for ws in zip(*(r.waits for r in self.runs), strict=True)]


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


def _compare(
    near: Reference, every: Reference, run: list[Outcome], max_wait: float
) -> dict[str, float]:
    """One run's counts: ``could`` from the references run just before and just after it
    (the machine's load moves the queue's pace), claims checked against every reference."""
    served = sum(1 for o in run if o.served)
    could = near.could(run, max_wait)
    late = [o.elapsed - max_wait for o in run if o.elapsed > max_wait]
    return {
        "served": served,
        "could": could,
        "missed": max(could - served, 0),
        "wrong": _wrong(every, run, max_wait),
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
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the objects loaded before the runs to the collector (see the docstring)",
    )
    parser.add_argument("--lone", type=int, default=0, metavar="N", help="see the docstring")
    args = parser.parse_args()
    # Load the tokenizer before anything is timed.
    tg.count_request([{"role": "user", "content": "hi"}], model=MODEL, max_tokens=1)
    if not args.no_freeze:
        gc.collect()
        gc.freeze()
    gc.callbacks.append(_PAUSES.record)
    if args.lone:
        from redis_support import redis_server

        with redis_server() as srv:
            _lone(redis.Redis.from_url(srv.url), args.lone)
        return
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


def _lone(shared: redis.Redis, rounds: int) -> None:
    """Print the median time of a lone waiter's poll at its deadline, thread and task."""
    from tokenguard._drive import run_async
    from tokenguard.limiter._backend import Ticket

    lim = tg.Limiter(tpm=100, window=100.0, redis=shared, key=f"lone-{uuid.uuid4().hex[:8]}")
    backend = lim._backend
    held = lim.acquire(100)  # every ticket queues, and its last poll refuses it

    def due() -> Ticket:
        ticket = Ticket(10, max_wait=30.0)
        backend.start(ticket)
        ticket.deadline = time.monotonic()
        return ticket

    def thread() -> float:
        ticket = due()
        t0 = time.perf_counter()
        assert backend.poll(ticket).left
        return time.perf_counter() - t0

    async def tasks() -> list[float]:
        took = []
        for _ in range(rounds):
            ticket = due()
            t0 = time.perf_counter()
            assert (await run_async(backend.poll_plan(ticket))).left
            took.append(time.perf_counter() - t0)
        await lim.aclose()
        return took

    threads = [thread() for _ in range(rounds)]
    in_tasks = asyncio.run(tasks())
    held.cancel()
    print(
        f"lone last poll, median of {rounds}: thread {1e6 * statistics.median(threads):.0f} us, "
        f"task {1e6 * statistics.median(in_tasks):.0f} us"
    )


class _Pauses:
    """The longest garbage collection since the last ``take`` (seconds)."""

    def __init__(self) -> None:
        self._started = 0.0
        self.longest = 0.0

    def record(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def take(self) -> float:
        longest, self.longest = self.longest, 0.0
        return longest


_PAUSES = _Pauses()


def _scripts_run(shared: redis.Redis | None) -> int:
    """How many scripts Redis has run (0 without Redis)."""
    if shared is None:
        return 0
    stats = shared.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


def _reference(sc: Scenario, shared: redis.Redis | None) -> Schedule:
    return Schedule.of(asyncio.run(_run(sc, None, shared)))


def _sweep(scenario: str, repeat: int, shared: redis.Redis | None) -> bool:
    """Print the sweep's rows; True when a goal was missed."""
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    print(
        "scenario  max_wait   served/could  missed  wrong  refused(at once)  over  "
        "worst_overrun_ms  p50_wait_served  p50_elapsed_refused  gc_ms  scripts"
    )
    failed = False
    for name in names:
        sc = SCENARIOS[name]

        refs = [_reference(sc, shared)]
        longest = refs[0].waits[0]
        waits = sorted({round(f * longest, 3) for f in sc.fractions} | set(sc.seconds))
        # Every run with max_wait sits between two references: refs[i] and refs[i + 1].
        runs: dict[float, list[tuple[int, list[Outcome]]]] = {mw: [] for mw in waits}
        gc_pause: dict[float, float] = {}
        # Redis: the scripts each run called (polls at the deadline among them).
        scripts: dict[float, list[int]] = {mw: [] for mw in waits}
        for _ in range(repeat):
            for mw in waits:
                _PAUSES.take()
                before = _scripts_run(shared)
                runs[mw].append((len(refs) - 1, asyncio.run(_run(sc, mw, shared))))
                scripts[mw].append(_scripts_run(shared) - before)
                gc_pause[mw] = max(gc_pause.get(mw, 0.0), _PAUSES.take())
                refs.append(_reference(sc, shared))
        every = Reference(refs)
        print(
            f"{name:8}  none       {len(refs)} runs{'':36}p50 "
            f"{_median([w for r in refs for w in r.waits])}  longest {max(every.longest()):.3f}"
        )
        for mw in waits:
            rows = [_compare(Reference(refs[i : i + 2]), every, run, mw) for i, run in runs[mw]]
            served_w = [o.elapsed for _, run in runs[mw] for o in run if o.served]
            refused_w = [o.elapsed for _, run in runs[mw] for o in run if not o.served]
            tot = {k: sum(r[k] for r in rows) for k in rows[0]}
            worst = max(r["worst"] for r in rows)
            failed |= tot["missed"] > 0 or tot["wrong"] > 0 or tot["over"] > 0
            print(
                f"{name:8}  {mw:<9.3f}  {tot['served']:>4.0f}/{tot['could']:<4.0f}    "
                f"{tot['missed']:>3.0f}    {tot['wrong']:>3.0f}     {tot['refused']:>4.0f} "
                f"({tot['at_once']:.0f}){'':9}{tot['over']:>3.0f}   {1000 * worst:>8.1f}"
                f"          {_median(served_w):>8}         {_median(refused_w):>8}"
                f"        {1000 * gc_pause[mw]:>5.1f}"
                f"  {statistics.median(scripts[mw]) if shared else '-':>7}"
            )
    return failed


if __name__ == "__main__":
    main()
