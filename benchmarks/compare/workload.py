"""The workloads every tool runs, and the figures read from the emulator's request log.

Closed loop: N workers (threads, or asyncio tasks, or threads in several processes) each
send conversations from one fixed mix of short and long chats, back to back, until the
run's windows are over. Open loop: requests arrive on a schedule drawn once from a seed
(Poisson arrivals at a share of the limit, or bursts after idle), each from one of a few
callers, whatever the tool is doing. Each call goes through the tool's caller; the tool
decides when to send. What the server saw comes from the emulator's log; what the
callers saw (errors, latency, tokens served to each caller) from the workers.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MODEL = "llama-3.1-8b-instant"
GPT_OSS = "openai/gpt-oss-20b"
TPM = 6000
RPM = 30
CONTEXT = 8192
MAX_TOKENS = 256
COMPLETION = 40  # what the emulator generates: far below max_tokens, as in most chats
LATENCY = 0.005

Messages = list[Any]  # OpenAI-style message dicts
SyncCaller = Callable[[Messages], Any]
AsyncCaller = Callable[[Messages], Awaitable[Any]]

_SHORT = [
    "What is the boiling point of water at sea level?",
    "Give me three names for a grey cat.",
    "Translate 'good morning' into Spanish and German.",
    "Why is the sky blue? One sentence.",
    "Summarize the plot of Hamlet in two lines.",
]
_LONG = (
    "The quarterly report shows revenue growth in every region, with the strongest gains "
    "in logistics and the weakest in retail. Costs rose with fuel prices; margins held. "
)
_CODE = (
    "def merge(a: list[int], b: list[int]) -> list[int]:\n    out = []\n    while a and b:\n"
    "        out.append(a.pop(0) if a[0] < b[0] else b.pop(0))\n    return out + a + b\n"
)


def conversation_mix(n: int = 40, *, seed: int = 7) -> list[Messages]:
    """``n`` conversations: three in four short (one to three turns, 30-150 tokens), one in
    four long (a history of 1,000-3,500 tokens with prose and code), all within the
    context and the TPM limit with ``MAX_TOKENS`` reserved, so every request can be served.
    """
    rnd = random.Random(seed)
    out: list[Messages] = []
    for i in range(n):
        msgs: Messages = [{"role": "system", "content": "You are a helpful assistant."}]
        if i % 4 == 3:
            turns = rnd.randint(6, 22)
            for t in range(turns):
                body = (_LONG if t % 2 == 0 else _CODE) * rnd.randint(1, 3)
                msgs.append({"role": "user", "content": f"[{i}.{t}] {body}"})
                msgs.append({"role": "assistant", "content": f"[{i}.{t}] Noted. " + _LONG})
            msgs.append({"role": "user", "content": "Given all that, what should we do next?"})
        else:
            for t in range(rnd.randint(1, 3)):
                msgs.append({"role": "user", "content": f"[{i}.{t}] " + rnd.choice(_SHORT)})
                if t:
                    msgs.insert(-1, {"role": "assistant", "content": "Sure: " + _SHORT[t]})
        out.append(msgs)
    return out


@dataclass(frozen=True)
class Env:
    """What a tool's adapter is told about the server and the run (all picklable)."""

    base_url: str
    model: str = MODEL
    tpm: int = TPM
    rpm: int = RPM
    window: float = 2.0
    context: int = CONTEXT
    max_tokens: int = MAX_TOKENS
    refund: bool = True
    redis_url: str | None = None
    key: str = "bench"
    tg_algorithm: str | None = None  # tokenguard's limiter: None for its default
    # Attempts per call including the first (None: each tool's own default retries).
    attempts: int | None = None
    stream: bool = False  # stream=True, the stream read to its end by the caller
    tier: str = "free"  # the Groq tier a tool that knows tiers is told (tokenguard's ``tier=``)

    def retries(self, default: int) -> int:
        """The retries a tool is given: its own default, or the common budget less one."""
        return default if self.attempts is None else self.attempts - 1

    def request(self) -> dict[str, Any]:
        """What every adapter passes to ``chat.completions.create`` besides model and
        messages."""
        if self.stream:
            return {
                "max_tokens": self.max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        return {"max_tokens": self.max_tokens}

    @property
    def per_minute(self) -> float:
        """How many scaled windows fit in a real minute (tools that assume 60 s scale by it)."""
        return 60.0 / self.window


@dataclass(frozen=True)
class Traffic:
    """How requests arrive. ``closed``: workers back to back. ``poisson``: open-loop
    arrivals at ``load`` x the limit's request rate for the mix. ``burst``: every
    ``period`` windows, after idle, requests worth ``load`` x TPM at once."""

    kind: str = "closed"
    load: float = 1.0
    callers: int = 8  # open loop: each arrival belongs to one caller (seeded draw)
    period: int = 4
    seed: int = 11


def schedule(
    traffic: Traffic, duration: float, window: float, tpm: int, rpm: int, costs: Sequence[int]
) -> list[tuple[float, int, int]]:
    """Open-loop arrivals ``(seconds after the start, conversation, caller)``.

    ``costs`` are what each conversation of the mix is charged (prompt + completion); the
    limit's request rate is the smaller of TPM / mean cost and RPM, per window.
    """
    rnd = random.Random(traffic.seed)
    n = len(costs)
    out: list[tuple[float, int, int]] = []
    if traffic.kind == "poisson":
        per_window = traffic.load * min(tpm / statistics.fmean(costs), rpm)
        t, k = rnd.expovariate(per_window / window), 0
        while t < duration:
            out.append((t, k % n, rnd.randrange(traffic.callers)))
            t += rnd.expovariate(per_window / window)
            k += 1
    elif traffic.kind == "burst":
        k = 0
        start = 0.0
        while start < duration:
            spent = 0
            while spent < traffic.load * tpm:
                out.append((start, k % n, rnd.randrange(traffic.callers)))
                spent += costs[k % n]
                k += 1
            start += traffic.period * window
    else:
        raise ValueError(f"not an open-loop traffic kind: {traffic.kind!r}")
    return out


def jain(xs: Sequence[float]) -> float:
    """Jain's fairness index: 1 when every caller got the same share, 1/n when one got all."""
    total = sum(xs)
    squares = sum(x * x for x in xs)
    return total * total / (len(xs) * squares) if squares else float("nan")


def drain(resp: Any) -> Any:
    """Read a stream to its end (a caller that streams reads every chunk); else as is."""
    if hasattr(resp, "__next__") or type(resp).__name__ in ("Stream", "CustomStreamWrapper"):
        for _ in resp:
            pass
    return resp


async def adrain(resp: Any) -> Any:
    if hasattr(resp, "__anext__") or hasattr(resp, "__aiter__"):
        async for _ in resp:
            pass
    return resp


@dataclass
class CallerStats:
    """What the workers saw."""

    started: float = 0.0  # time.monotonic() when the workers started
    started_wall: float = 0.0  # the same instant by time.time() (another process's clock)
    issued: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    unfinished: int = 0
    # Prompt tokens per caller ("w3", "c1"): asked for, and served.
    offered: dict[str, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)

    def begin(self) -> None:
        self.started, self.started_wall = time.monotonic(), time.time()

    def ask(self, caller: str, tokens: int) -> None:
        self.issued += 1
        self.offered[caller] = self.offered.get(caller, 0) + tokens
        self.served.setdefault(caller, 0)

    def done(self, caller: str, tokens: int, seconds: float) -> None:
        self.ok += 1
        self.served[caller] += tokens
        self.latencies.append(seconds)

    def fairness(self, open_loop: bool) -> float:
        """Jain's index over the callers: of the tokens each was served (closed loop, where
        every worker asks for the same mix without end), or of the share of what each
        asked for that it was served (open loop)."""
        keys = sorted(self.offered)
        if open_loop:
            return jain([self.served[k] / self.offered[k] for k in keys if self.offered[k]])
        return jain([self.served[k] for k in keys])

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        status = getattr(exc, "status_code", None)
        key = f"{name} {status}" if status else name
        self.errors[key] = self.errors.get(key, 0) + 1

    def merge(self, other: CallerStats) -> None:
        self.issued += other.issued
        self.ok += other.ok
        self.unfinished += other.unfinished
        self.latencies.extend(other.latencies)
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        for mine, theirs in ((self.offered, other.offered), (self.served, other.served)):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n


def run_threads(
    make: Callable[[], SyncCaller],
    workers: int,
    duration: float,
    grace: float,
    costs: Sequence[int],
    offset: int = 0,
    arrivals: Sequence[tuple[float, int, int]] | None = None,
) -> CallerStats:
    """``workers`` threads through one caller (built first) for ``duration`` seconds, or
    with ``arrivals``, one thread per arrival at its time (open loop); a call still running
    ``grace`` seconds after the end counts as unfinished (its thread is abandoned)."""
    call = make()
    mix = conversation_mix()
    stats = CallerStats()
    lock = threading.Lock()
    busy = [0]

    def one(caller: str, k: int) -> None:
        with lock:
            stats.ask(caller, costs[k])
            busy[0] += 1
        t0 = time.perf_counter()
        try:
            drain(call([dict(m) for m in mix[k]]))
        except Exception as exc:
            with lock:
                stats.error(exc)
        else:
            with lock:
                stats.done(caller, costs[k], time.perf_counter() - t0)
        finally:
            with lock:
                busy[0] -= 1

    def work(w: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            one(f"w{offset + w}", (offset + w * 7 + i) % len(mix))
            i += 1

    stats.begin()
    stop_at = stats.started + duration
    if arrivals is None:
        threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
        for t in threads:
            t.start()
    else:
        threads = []
        for at, k, caller in arrivals:
            time.sleep(max(0.0, stats.started + at - time.monotonic()))
            t = threading.Thread(target=one, args=(f"c{caller}", k), daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join(max(0.0, stop_at + grace - time.monotonic()))
    with lock:
        stats.unfinished = busy[0]
    return stats


def run_tasks(
    make: Callable[[], AsyncCaller],
    workers: int,
    duration: float,
    grace: float,
    costs: Sequence[int],
    arrivals: Sequence[tuple[float, int, int]] | None = None,
) -> CallerStats:
    """``workers`` asyncio tasks through one caller (built inside the loop, first), or one
    task per arrival (open loop)."""

    async def main() -> CallerStats:
        call = make()
        return await tasks_in_loop(call, workers, duration, grace, costs, arrivals)

    return asyncio.run(main())


async def tasks_in_loop(
    call: AsyncCaller,
    workers: int,
    duration: float,
    grace: float,
    costs: Sequence[int],
    arrivals: Sequence[tuple[float, int, int]] | None = None,
) -> CallerStats:
    """``run_tasks`` in a running loop, through a caller built already."""
    mix = conversation_mix()
    stats = CallerStats()
    busy = [0]

    async def one(call: AsyncCaller, caller: str, k: int) -> None:
        stats.ask(caller, costs[k])
        busy[0] += 1
        t0 = time.perf_counter()
        try:
            await adrain(await call([dict(m) for m in mix[k]]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stats.error(exc)
        else:
            stats.done(caller, costs[k], time.perf_counter() - t0)
        finally:
            busy[0] -= 1

    async def work(call: AsyncCaller, w: int, stop_at: float) -> None:
        i = 0
        while time.monotonic() < stop_at:
            await one(call, f"w{w}", (w * 7 + i) % len(mix))
            i += 1

    stats.begin()
    stop_at = stats.started + duration
    if arrivals is None:
        tasks = [asyncio.ensure_future(work(call, w, stop_at)) for w in range(workers)]
    else:
        tasks = []
        for at, k, caller in arrivals:
            await asyncio.sleep(max(0.0, stats.started + at - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(call, f"c{caller}", k)))
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, stop_at + grace - time.monotonic()))
    stats.unfinished = busy[0]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)

    return stats


def _child(
    module: str,
    env: Env,
    costs: list[int],
    threads: int,
    grace: float,
    w: int,
    ready: Any,
    go: Any,
    q: Any,
) -> None:
    import logging

    import tokenguard as tg

    from .tools import load, warm

    logging.disable(logging.CRITICAL)
    tg.events.use_logging(False)  # as in the parent: no console rendering of events
    tool = load(module)
    warm(tool, conversation_mix()[0], env.model)

    def wait_for_start() -> float:
        """Tell the parent this child is ready, then sleep to the start line; the time left."""
        ready.put(w)
        # The parent's monotonic clock is not ours: start and stop travel as wall-clock times.
        start_wall, stop_wall = go.get()
        time.sleep(max(0.0, start_wall - time.time()))
        return float(stop_wall - time.time())

    if not getattr(tool, "ASYNC_ONLY", False):
        call = tool.sync_caller(env)  # built (imports, connections) before the start line
        left = wait_for_start()
        stats = run_threads(lambda: call, threads, left, grace, costs, offset=w * threads)
    else:  # asyncio only: tasks, in a loop where the caller is built before the start line

        async def main() -> CallerStats:
            acall = tool.async_caller(env)
            left = await asyncio.get_running_loop().run_in_executor(None, wait_for_start)
            return await tasks_in_loop(acall, threads, left, grace, costs)

        stats = asyncio.run(main())
        stats.offered = {f"p{w}{k}": v for k, v in stats.offered.items()}
        stats.served = {f"p{w}{k}": v for k, v in stats.served.items()}
    q.put(asdict(stats))


def run_processes(
    module: str,
    env: Env,
    costs: list[int],
    processes: int,
    threads: int,
    duration: float,
    grace: float,
    startup: float = 120.0,
) -> CallerStats:
    """``processes`` spawned interpreters with ``threads`` threads each, one shared limit.

    The start line is drawn only once every child has imported its tool and built its
    caller (on a loaded machine that takes from a few seconds to tens of them): a fixed
    head start would count the late children's start-up in the first measured windows.
    ``started`` is the start line on this process's ``time.monotonic()`` clock.
    """
    ctx = mp.get_context("spawn")
    q, ready, go = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(module, env, costs, threads, grace, w, ready, go, q))
        for w in range(processes)
    ]
    for p in procs:
        p.start()
    total = CallerStats()
    try:
        deadline = time.monotonic() + startup
        for _ in procs:
            ready.get(timeout=max(0.1, deadline - time.monotonic()))
    except Exception:  # a child that cannot start: no run, all its threads lost
        for p in procs:
            p.kill()
        raise RuntimeError(f"the {processes} processes were not ready in {startup:g} s") from None
    lead = 0.5  # for every child to read its start line before it
    start_wall = time.time() + lead
    total.started = time.monotonic() + lead
    total.started_wall = start_wall
    stop_wall = start_wall + duration
    for _ in procs:
        go.put((start_wall, stop_wall))
    for _ in procs:
        try:
            got = q.get(timeout=max(5.0, stop_wall + grace + 30 - time.time()))
            total.merge(CallerStats(**got))
        except Exception:
            total.unfinished += threads
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
    return total


# -- figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerFigures:
    requests: int
    ok: int
    s429: int
    s413: int
    s400: int
    per_window: list[int]  # tokens charged by the server, per window (all windows)
    useful_per_window: list[int]  # prompt + completion of admitted requests, per window

    def goodput(self, limit: int) -> tuple[float, float]:
        """Mean and min of charged tokens / limit over the steady windows (first and last
        left out: the first starts from a full bucket, the last is cut)."""
        steady = self.per_window[1:-1] or self.per_window
        return statistics.fmean(steady) / limit, min(steady) / limit

    def useful(self, limit: int) -> float:
        steady = self.useful_per_window[1:-1] or self.useful_per_window
        return statistics.fmean(steady) / limit


def server_figures(log: Sequence[Any], start: float, window: float, windows: int) -> ServerFigures:
    chat = [r for r in log if r.endpoint == "chat" and r.t >= start]
    per = [0] * windows
    useful = [0] * windows
    for r in chat:
        if r.status == 200:
            k = int((r.t - start) / window)
            if 0 <= k < windows:
                per[k] += r.charged_tokens
                useful[k] += r.prompt_tokens + r.completion_tokens
    return ServerFigures(
        requests=len(chat),
        ok=sum(r.status == 200 for r in chat),
        s429=sum(r.status == 429 for r in chat),
        s413=sum(r.status == 413 for r in chat),
        s400=sum(r.status == 400 for r in chat),
        per_window=per,
        useful_per_window=useful,
    )


def quantile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]
