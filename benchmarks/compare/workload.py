"""The one workload every tool runs, and the figures read from the emulator's request log.

N workers (threads, or asyncio tasks, or threads in several processes) each send
conversations from one fixed mix of short and long chats, back to back, until the run's
windows are over. Each worker calls the tool's caller; the tool decides when to send.
What the server saw comes from the emulator's log; what the callers saw (errors,
latency) from the workers.
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

    @property
    def per_minute(self) -> float:
        """How many scaled windows fit in a real minute (tools that assume 60 s scale by it)."""
        return 60.0 / self.window


@dataclass
class CallerStats:
    """What the workers saw."""

    started: float = 0.0  # time.monotonic() when the workers started
    issued: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    unfinished: int = 0

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


def run_threads(
    make: Callable[[], SyncCaller], workers: int, duration: float, grace: float, offset: int = 0
) -> CallerStats:
    """``workers`` threads through one caller (built first) for ``duration`` seconds; a call
    still running ``grace`` seconds later counts as unfinished (its thread is abandoned)."""
    call = make()
    mix = conversation_mix()
    stats = CallerStats(started=time.monotonic())
    stop_at = stats.started + duration
    lock = threading.Lock()
    busy = [0]

    def work(w: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            msgs = mix[(offset + w * 7 + i) % len(mix)]
            i += 1
            with lock:
                stats.issued += 1
                busy[0] += 1
            t0 = time.perf_counter()
            try:
                call([dict(m) for m in msgs])
            except Exception as exc:
                with lock:
                    stats.error(exc)
            else:
                with lock:
                    stats.ok += 1
                    stats.latencies.append(time.perf_counter() - t0)
            finally:
                with lock:
                    busy[0] -= 1

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at + grace - time.monotonic()))
    with lock:
        stats.unfinished = busy[0]
    return stats


def run_tasks(
    make: Callable[[], AsyncCaller], workers: int, duration: float, grace: float
) -> CallerStats:
    """``workers`` asyncio tasks through one caller (built inside the loop, first)."""
    mix = conversation_mix()
    stats = CallerStats()
    busy = [0]

    async def main() -> None:
        call = make()
        stats.started = time.monotonic()
        stop_at = stats.started + duration

        async def work(w: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                msgs = mix[(w * 7 + i) % len(mix)]
                i += 1
                stats.issued += 1
                busy[0] += 1
                t0 = time.perf_counter()
                try:
                    await call([dict(m) for m in msgs])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    stats.error(exc)
                else:
                    stats.ok += 1
                    stats.latencies.append(time.perf_counter() - t0)
                finally:
                    busy[0] -= 1

        tasks = [asyncio.ensure_future(work(w)) for w in range(workers)]
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, stop_at + grace - time.monotonic()))
        stats.unfinished = busy[0]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    asyncio.run(main())
    return stats


def _child(
    module: str,
    env: Env,
    threads: int,
    grace: float,
    w: int,
    ready: Any,
    go: Any,
    q: Any,
) -> None:
    import logging

    import tokenguard as tg

    from .tools import load

    logging.disable(logging.CRITICAL)
    tg.events.use_logging(False)  # as in the parent: no console rendering of events
    tool = load(module)
    call = tool.sync_caller(env)  # built (imports, connections) before the start line
    tool.count(conversation_mix()[0], env.model)  # tokenizer data loaded before it, too
    ready.put(w)
    # The parent's monotonic clock is not ours: start and stop travel as wall-clock times.
    start_wall, stop_wall = go.get()
    time.sleep(max(0.0, start_wall - time.time()))
    stats = run_threads(lambda: call, threads, stop_wall - time.time(), grace, offset=w * 3)
    q.put(asdict(stats))


def run_processes(
    module: str,
    env: Env,
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
        ctx.Process(target=_child, args=(module, env, threads, grace, w, ready, go, q))
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
