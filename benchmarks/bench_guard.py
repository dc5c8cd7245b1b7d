"""Guard benchmarks: what the guard costs per call, and what goodput it keeps under load.

``overhead``: p50 of a guarded call minus p50 of the bare SDK call, in the same run,
against a zero-latency emulator in a separate process (so the server does not share
this process's GIL). Samples alternate bare / decorated / instrumented, sync
(``openai.OpenAI``) and async (``openai.AsyncOpenAI``), in a rotating order, and all
three go through one connection pool (the instrumented client is a ``copy()`` of the
bare one): a call that follows a call on another keep-alive connection waits tens to
hundreds of microseconds longer for the threaded emulator, whatever sends it, and a
fixed order would charge that to whichever comes after a switch. The server sends
Groq's ``x-ratelimit-*`` headers with every answer (its limits too high to refuse
anything), as Groq does, so the instrumented calls pay for reading them;
``--no-headers`` leaves them out. Goal: <= 150 us.

``calls``: what the package's code does per guarded call in each mode, counted
through ``sys.setprofile`` (counts the load on the machine does not change): functions
entered, generator frames, generator resumes, effects of ``call_plan``.

``work``: the guard's own work per call, without the network: a decorated function
that returns a completion fetched once (``parsed``: no headers to read) or a raw
response fetched once (``raw``: its ``x-ratelimit-*`` headers read and adopted on
every call, as an instrumented client's are), sync and async, in a tight loop (the
best of 7 runs of 2,000 calls). Its caches stay warm, so it is several times below
``overhead``; it moves with the code rather than the machine's load, which makes it
the figure to compare two trees by.

``goodput``: 8 threads through one decorated function (decorator mode: the function
returns a parsed completion, so the guard sees no headers) and 64 asyncio tasks through
one instrumented ``AsyncOpenAI`` (instrument mode: headers read from every response),
each against an emulator that refunds unused completion tokens and one that does not
(tpm 6000 per 1 s window, ``max_tokens`` 100 with 40 generated, 20 ms latency). From
the emulator's log, per window (first and last left out): tokens charged / limit, 429s,
and the errors callers saw. Goals: refunding server >= 0.95 of the limit and zero 429s;
the other <= 2% 429s; zero errors to callers.

Run: ``.venv/bin/python benchmarks/bench_guard.py`` (about 1.5 minutes), or
``--scenario overhead|calls|work|goodput``, ``--samples N``, ``--windows N``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tokenguard as tg  # noqa: E402
from tokenguard import reset_defaults  # noqa: E402
from tokenguard.emulator import running  # noqa: E402
from tokenguard.limiter._headers import MAX_LIMIT  # noqa: E402

MODEL = "llama-3.1-8b-instant"
TPM = 6000
MESSAGES: Any = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the boiling point of water at sea level?"},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int, headers: bool) -> subprocess.Popen[bytes]:
    # With headers: TPM and RPD (the buckets Groq reports) too large to refuse anything,
    # yet believable (the limiter takes limits up to MAX_LIMIT; a larger one would be a
    # bad header on every answer, which Groq never sends).
    high = str(MAX_LIMIT) if headers else "0"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenguard.emulator",
            "--port",
            str(port),
            "--model",
            MODEL,
            "--tpm",
            high,
            "--rpm",
            "0",
            "--tpd",
            "0",
            "--rpd",
            high,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the emulator did not start")


#: Limits too high to hold any call of the overhead runs.
UNLIMITED: tg.InstrumentKwargs = {"tpm": 10**9, "rpm": 10**9, "window": 60.0}


def _p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _sync_calls(base: str) -> dict[str, Callable[[], Any]]:
    """The bare, decorated and instrumented sync calls, through one connection pool."""
    bare = openai.OpenAI(base_url=base, api_key="x")
    inst = tg.instrument(bare.copy(), **UNLIMITED)  # the same connection pool

    @tg.guard(**UNLIMITED)
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 16) -> Any:
        return bare.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    return {
        "bare": lambda: bare.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16),
        "decorated": lambda: ask(MESSAGES),
        "instrumented": lambda: inst.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=16
        ),
    }


def _async_calls(abare: openai.AsyncOpenAI) -> dict[str, Callable[[], Any]]:
    """The bare, decorated and instrumented async calls, through ``abare``'s pool."""
    ainst = tg.instrument(abare.copy(), **UNLIMITED)  # the same connection pool

    @tg.guard(**UNLIMITED)
    async def aask(messages: Any, model: str = MODEL, max_tokens: int = 16) -> Any:
        return await abare.chat.completions.create(
            messages=messages, model=model, max_tokens=max_tokens
        )

    return {
        "bare": lambda: abare.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=16
        ),
        "decorated": lambda: aask(MESSAGES),
        "instrumented": lambda: ainst.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=16
        ),
    }


def scenario_overhead(samples: int, headers: bool = True) -> None:
    tg.events.use_logging(False)  # measure the guard, not the application's logging
    port = _free_port()
    proc = _serve(port, headers)
    base = f"http://127.0.0.1:{port}/openai/v1"
    try:
        calls = _sync_calls(base)
        times: dict[str, list[float]] = {k: [] for k in calls}
        cpu: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(50):  # warm connections, caches, tokenizer
            for fn in calls.values():
                fn()
        for i in range(samples):
            for name in _rotated(calls, i):
                fn = calls[name]
                c0, t0 = time.thread_time(), time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.thread_time() - c0)
        _print_overhead("sync", times, cpu)

        async def run_async() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
            abare = openai.AsyncOpenAI(base_url=base, api_key="x")
            acalls = _async_calls(abare)
            atimes: dict[str, list[float]] = {k: [] for k in acalls}
            acpu: dict[str, list[float]] = {k: [] for k in acalls}
            for _ in range(50):
                for fn in acalls.values():
                    await fn()
            for i in range(samples):
                for name in _rotated(acalls, i):
                    fn = acalls[name]
                    c0, t0 = time.thread_time(), time.perf_counter()
                    await fn()
                    atimes[name].append(time.perf_counter() - t0)
                    acpu[name].append(time.thread_time() - c0)
            await abare.close()  # the pool both clients share, in this loop
            return atimes, acpu

        _print_overhead("async", *asyncio.run(run_async()))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        tg.events.use_logging(True)


class _CallCounter:
    """Counts, through ``sys.setprofile``, what the package's code does per guarded call:
    functions entered (a generator counted once, when it starts), generator frames,
    generator resumes, and the effects ``call_plan`` hands to its runner."""

    def __init__(self) -> None:
        from tokenguard._guard._pipeline import call_plan

        self._plan = call_plan.__code__
        self._package = str(ROOT / "tokenguard")
        self._emulator = str(ROOT / "tokenguard" / "emulator")
        self.calls = self.resumes = self.plan_returns = 0
        self.frames: set[Any] = set()  # kept alive, so that no frame's id is reused

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        code = frame.f_code
        if event == "call":
            path = code.co_filename
            if not path.startswith(self._package) or path.startswith(self._emulator):
                return
            if code.co_flags & inspect.CO_GENERATOR:
                self.resumes += 1
                if frame in self.frames:
                    return
                self.frames.add(frame)
            self.calls += 1
        elif event == "return" and code is self._plan:
            self.plan_returns += 1  # one per effect, and one when the plan is done

    def show(self, label: str, n: int) -> None:
        print(
            f"calls {label:18s} per call: functions={self.calls / n:5.1f} "
            f"generator frames={len(self.frames) / n:4.1f} resumes={self.resumes / n:4.1f} "
            f"effects={self.plan_returns / n - 1:4.1f}"
        )


def scenario_calls(samples: int) -> None:
    """What the package's code does per guarded call, in each mode (see _CallCounter):
    counts, unlike times, that the load on the machine does not change."""
    tg.events.use_logging(False)
    port = _free_port()
    proc = _serve(port, True)
    base = f"http://127.0.0.1:{port}/openai/v1"
    try:
        calls = _sync_calls(base)
        for name in ("decorated", "instrumented"):
            calls[name]()  # the site worked out, the tokenizer warm
            counter = _CallCounter()
            sys.setprofile(counter.profile)
            for _ in range(samples):
                calls[name]()
            sys.setprofile(None)
            counter.show(f"sync {name}", samples)

        async def run_async() -> None:
            abare = openai.AsyncOpenAI(base_url=base, api_key="x")
            acalls = _async_calls(abare)
            for name in ("decorated", "instrumented"):
                await acalls[name]()
                counter = _CallCounter()
                sys.setprofile(counter.profile)
                for _ in range(samples):
                    await acalls[name]()
                sys.setprofile(None)
                counter.show(f"async {name}", samples)
            await abare.close()

        asyncio.run(run_async())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        tg.events.use_logging(True)


def scenario_work() -> None:
    """The guard's own work per call (see the module): the best of 7 tight runs."""
    tg.events.use_logging(False)
    port = _free_port()
    proc = _serve(port, True)
    base = f"http://127.0.0.1:{port}/openai/v1"
    try:
        client = openai.OpenAI(base_url=base, api_key="x", max_retries=0)
        ask = client.chat.completions
        raw = ask.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=16)
        raw.parse()  # the SDK keeps the parse: the loop measures the guard
        parsed = ask.create(model=MODEL, messages=MESSAGES, max_tokens=16)
        for kind, answer in (("parsed", parsed), ("raw", raw)):
            for label, run in _work_runs(answer).items():
                run(300)  # the site worked out, the tokenizer warm
                best = min(_timed(run, 2000) for _ in range(7))
                print(f"work {label:5s} {kind:6s} {best * 1e6 / 2000:6.1f} us per call")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        tg.events.use_logging(True)


def _work_runs(answer: Any) -> dict[str, Callable[[int], Any]]:
    """``n`` calls of a decorated function returning ``answer``, in a thread and in a task."""

    @tg.guard(**UNLIMITED)
    def guarded(messages: Any, model: str = MODEL, max_tokens: int = 16) -> Any:
        return answer

    @tg.guard(**UNLIMITED)
    async def aguarded(messages: Any, model: str = MODEL, max_tokens: int = 16) -> Any:
        return answer

    def run_sync(n: int) -> None:
        for _ in range(n):
            guarded(MESSAGES)

    async def run_async(n: int) -> None:
        for _ in range(n):
            await aguarded(MESSAGES)

    return {"sync": run_sync, "async": lambda n: asyncio.run(run_async(n))}


def _timed(run: Callable[[int], Any], n: int) -> float:
    t0 = time.perf_counter()
    run(n)
    return time.perf_counter() - t0


def _rotated(calls: dict[str, Any], i: int) -> list[str]:
    """The names of ``calls`` starting at the ``i``-th: each comes after each other equally
    often, so what one call leaves behind (a warm or cold cache) is shared out evenly."""
    names = list(calls)
    k = i % len(names)
    return names[k:] + names[:k]


def _print_overhead(label: str, times: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """Wall-clock p50s (the goal) and two checks on a loaded machine: the p50 of the
    difference of each guarded call and the bare call of its own round (the load drifts
    over a run; a round's calls are a few milliseconds apart and share it), and the p50
    of the CPU time this thread spent per call (the guard's own work, without waits for
    the CPU)."""
    bare, bare_cpu = _p50_us(times["bare"]), _p50_us(cpu["bare"])
    for name in ("decorated", "instrumented"):
        p50 = _p50_us(times[name])
        over = p50 - bare
        paired = _p50_us([g - b for g, b in zip(times[name], times["bare"], strict=True)])
        over_cpu = _p50_us(cpu[name]) - bare_cpu
        verdict = "PASS" if over <= 150 else "FAIL"
        print(
            f"overhead {label:5s} {name:12s} p50={p50:8.1f} us  bare p50={bare:8.1f} us  "
            f"overhead={over:7.1f} us  (per round: {paired:6.1f} us, cpu: {over_cpu:6.1f} us)  "
            f"samples={len(times[name])} [{verdict} <= 150 us]"
        )


# -- goodput ------------------------------------------------------------------------------


def _report(label: str, em: Any, start: float, windows: int, refund: bool, errors: int) -> None:
    log = [r for r in em.log if r.endpoint == "chat"]
    n429 = sum(1 for r in log if r.status == 429)
    per = [0] * windows
    for r in log:
        if r.status == 200:
            k = int(r.t - start)
            if 0 <= k < windows:
                per[k] += r.charged_tokens
    steady = per[1:-1]
    ratio = statistics.fmean(steady) / TPM
    share = n429 / max(len(log), 1)
    ok = errors == 0 and (n429 == 0 and ratio >= 0.95 if refund else share <= 0.02)
    goals = "0 429s, ratio>=0.95" if refund else "<=2% 429s"
    print(
        f"goodput {label:34s} requests={len(log):5d} 429s={n429} ({100 * share:.1f}%) "
        f"caller_errors={errors} ratio mean={ratio:.3f} min={min(steady) / TPM:.3f} "
        f"[{'PASS' if ok else 'FAIL'} {goals}, 0 caller errors]"
    )


def _question(i: int) -> Any:
    return [{"role": "user", "content": f"Question {i}: why is the sky blue today?"}]


def goodput_decorated(refund: bool, windows: int) -> None:
    reset_defaults()
    with running(
        model=MODEL,
        tpm=TPM,
        rpm=10_000,
        window=1.0,
        completion_tokens=40,
        latency=0.02,
        refund_unused=refund,
    ) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="x", max_retries=0)

        @tg.guard(tpm=TPM, rpm=10_000, window=1.0)
        def ask(messages: Any, model: str = MODEL, max_tokens: int = 100) -> Any:
            return client.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        errors = 0
        lock = threading.Lock()
        start = em.config.clock()
        stop = start + windows

        def work(w: int) -> None:
            nonlocal errors
            i = 0
            while em.config.clock() < stop:
                try:
                    ask(_question(w * 10_000 + i))
                except Exception:
                    with lock:
                        errors += 1
                i += 1

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _report(
            f"decorator 8 threads refund={'yes' if refund else 'no'}",
            em,
            start,
            windows,
            refund,
            errors,
        )


def goodput_instrumented(refund: bool, windows: int) -> None:
    reset_defaults()
    with running(
        model=MODEL,
        tpm=TPM,
        rpm=10_000,
        window=1.0,
        completion_tokens=40,
        latency=0.02,
        refund_unused=refund,
    ) as em:

        async def main() -> int:
            client = tg.instrument(
                openai.AsyncOpenAI(base_url=em.base_url, api_key="x", max_retries=0),
                tpm=TPM,
                rpm=10_000,
                window=1.0,
            )
            errors = 0
            stop = em.config.clock() + windows

            async def work(w: int) -> None:
                nonlocal errors
                i = 0
                while em.config.clock() < stop:
                    try:
                        await client.chat.completions.create(
                            model=MODEL, messages=_question(w * 10_000 + i), max_tokens=100
                        )
                    except Exception:
                        errors += 1
                    i += 1

            await asyncio.gather(*(work(w) for w in range(64)))
            await client.close()  # in this loop, not when collected after it closed
            return errors

        start = em.config.clock()
        errors = asyncio.run(main())
        _report(
            f"instrument 64 tasks refund={'yes' if refund else 'no'}",
            em,
            start,
            windows,
            refund,
            errors,
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--scenario", choices=["overhead", "calls", "work", "goodput", "all"], default="all"
    )
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--windows", type=int, default=10)
    p.add_argument(
        "--no-headers",
        action="store_true",
        help="overhead: the server sends no x-ratelimit-* headers (Groq always does)",
    )
    args = p.parse_args(argv)
    if args.scenario in ("overhead", "all"):
        scenario_overhead(args.samples, headers=not args.no_headers)
    if args.scenario == "calls":
        scenario_calls(min(args.samples, 200))
    if args.scenario == "work":
        scenario_work()
    if args.scenario in ("goodput", "all"):
        tg.events.use_logging(False)
        for refund in (True, False):
            goodput_decorated(refund, args.windows)
            goodput_instrumented(refund, args.windows)


if __name__ == "__main__":
    main()
