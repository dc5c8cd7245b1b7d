"""Side by side: tokenguard and what users would pick instead, on one workload.

Run (about 16 minutes on 2 cores; ``--quick`` about 6)::

    .venv-bench/bin/python -m benchmarks.compare.run

It writes ``benchmarks/compare/results.json`` (every figure), ``docs/benchmarks.md`` and
``docs/benchmarks-goodput.png``. tokenguard's rows use the library's defaults. Re-run
some rows and keep the others (the document then lists the rows that do not come from
the main run), e.g. tokenguard's after a limiter change, or extra rows with the sliding
window labelled [window]::

    .venv-bench/bin/python -m benchmarks.compare.run --tools tokenguard
    .venv-bench/bin/python -m benchmarks.compare.run --tools tokenguard --tg-algorithm window

``--render`` rebuilds the markdown and the plot from results.json alone. The tools other
than tokenguard are installed only in the benchmark environment (see
benchmarks/requirements-compare.txt); a tool that is missing gets a row saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import json
import logging
import os
import signal
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tokenguard as tg  # noqa: E402
from tokenguard import reset_defaults  # noqa: E402
from tokenguard.emulator import running  # noqa: E402

from . import compaction, report  # noqa: E402
from ._redis import redis_server  # noqa: E402
from .tools import ORDER, TOKENGUARD, load  # noqa: E402
from .workload import (  # noqa: E402
    COMPLETION,
    CONTEXT,
    GPT_OSS,
    LATENCY,
    MAX_TOKENS,
    MODEL,
    RPM,
    TPM,
    CallerStats,
    Env,
    conversation_mix,
    quantile,
    run_processes,
    run_tasks,
    run_threads,
    server_figures,
)

RESULTS = Path(__file__).with_name("results.json")
WORKERS = {"threads": 8, "tasks": 32, "processes": 4}
THREADS_PER_PROCESS = 2


def _emulator(window: float, refund: bool, **kw: Any) -> Any:
    return running(
        model=MODEL,
        tpm=TPM,
        rpm=RPM,
        tpd=0,
        rpd=0,
        window=window,
        context_window=CONTEXT,
        completion_tokens=COMPLETION,
        latency=LATENCY,
        refund_unused=refund,
        **kw,
    )


def baseline(samples: int = 200) -> dict[str, float]:
    """The bare SDK call on an unlimited emulator with the same latency: what "added
    latency" is measured against."""
    with running(
        model=MODEL,
        tpm=0,
        rpm=0,
        tpd=0,
        rpd=0,
        context_window=CONTEXT,
        completion_tokens=COMPLETION,
        latency=LATENCY,
    ) as em:
        c = openai.OpenAI(base_url=em.base_url, api_key="bench")
        mix = conversation_mix()
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            c.chat.completions.create(
                model=MODEL,
                messages=mix[i % len(mix)],
                max_tokens=MAX_TOKENS,
            )
            times.append(time.perf_counter() - t0)
    return {"p50": statistics.median(times[20:]), "p99": quantile(times[20:], 0.99)}


def one_run(
    module: str,
    mode: str,
    refund: bool,
    window: float,
    windows: int,
    redis_url: str | None,
    run_id: int,
    tg_algorithm: str | None = None,
) -> dict[str, Any]:
    tool = load(module)
    variant = tg_algorithm if module in TOKENGUARD else None
    reset_defaults()  # tokenguard's process-wide limiters: each run starts clean
    # After the last window, calls already made may finish (a queue drains): only those
    # still waiting after this long count as lost.
    grace = max(10.0, 8 * window)
    if tool.unavailable():  # imports the tool before the clock starts
        raise RuntimeError(tool.unavailable())
    with _emulator(window, refund) as em:
        env = Env(
            base_url=em.base_url,
            window=window,
            refund=refund,
            redis_url=redis_url,
            key=f"run{run_id}",
            tg_algorithm=variant,
        )
        duration = windows * window
        if mode == "processes":
            stats = run_processes(module, env, WORKERS[mode], THREADS_PER_PROCESS, duration, grace)
        elif mode == "threads":
            stats = run_threads(lambda: tool.sync_caller(env), WORKERS[mode], duration, grace)
        else:
            stats = run_tasks(lambda: tool.async_caller(env), WORKERS[mode], duration, grace)
        start = stats.started  # the emulator's clock is time.monotonic too
        time.sleep(0.05)
        fig = server_figures(list(em.log), start, window, windows)
    name = f"{tool.NAME} [{variant}]" if variant else tool.NAME
    row = _row(module, name, mode, refund, window, windows, stats, fig)
    row["variant"] = variant
    return row


def _row(
    module: str,
    name: str,
    mode: str,
    refund: bool,
    window: float,
    windows: int,
    stats: CallerStats,
    fig: Any,
) -> dict[str, Any]:
    mean, low = fig.goodput(TPM)
    workers = (
        f"{WORKERS[mode]}x{THREADS_PER_PROCESS} threads"
        if mode == "processes"
        else f"{WORKERS[mode]} {mode}"
    )
    return {
        "module": module,
        "tool": name,
        "mode": mode,
        "workers": workers,
        "refund": refund,
        "window": window,
        "windows": windows,
        "goodput": mean,
        "goodput_min": low,
        "useful": fig.useful(TPM),
        "per_window": fig.per_window,
        "server_requests": fig.requests,
        "server_ok": fig.ok,
        "s429": fig.s429,
        "s413": fig.s413,
        "s400": fig.s400,
        "issued": stats.issued,
        "ok": stats.ok,
        "errors": stats.errors,
        "unfinished": stats.unfinished,
        "lat_p50": quantile(stats.latencies, 0.5),
        "lat_p99": quantile(stats.latencies, 0.99),
    }


# -- table 4: pre-flight counts against the server's ------------------------------------------


def count_errors() -> list[dict[str, Any]]:
    """Each counting tool's prompt count against the emulator's ``usage.prompt_tokens``
    (Groq's billing: Llama 3 template, harmony for gpt-oss) on the workload's mix and on
    long chats in four scripts (benchmarks/bench_fitting.py's)."""
    bench_fitting = _bench_fitting()

    chats = conversation_mix() + [
        bench_fitting.conversation(kind, n) for kind in bench_fitting.TEXTS for n in (5, 30)
    ]
    out: list[dict[str, Any]] = []
    with running(model=[MODEL, GPT_OSS], tpm=0, rpm=0, tpd=0, rpd=0) as em:
        c = openai.OpenAI(base_url=em.base_url, api_key="bench", max_retries=0)
        truth: dict[tuple[str, int], int] = {}
        for model in (MODEL, GPT_OSS):
            for i, chat in enumerate(chats):
                usage = c.chat.completions.create(model=model, messages=chat, max_tokens=1).usage
                assert usage is not None
                truth[(model, i)] = usage.prompt_tokens
    for module in ORDER:
        tool = load(module)
        if tool.unavailable() or module in ("tokenguard_instrument", "tokenguard_redis"):
            continue  # the last two count as tokenguard_guard does (tg.count_tokens)
        for model in (MODEL, GPT_OSS):
            errs: list[float] = []
            raised: list[str] = []
            for i, chat in enumerate(chats):
                try:
                    n = tool.count([dict(m) for m in chat], model)
                except Exception as exc:  # a counter that cannot read the conversation
                    raised.append(type(exc).__name__)
                    continue
                if n is None:
                    break
                errs.append(n / truth[(model, i)] - 1)
            if errs or raised:
                out.append(
                    {
                        "tool": tool.NAME,
                        "model": model,
                        "n": len(errs),
                        "median": statistics.median(errs) if errs else None,
                        "min": min(errs) if errs else None,
                        "max": max(errs) if errs else None,
                        "under": sum(e < 0 for e in errs),
                        "raised": len(raised),
                        "raised_kind": sorted(set(raised)),
                    }
                )
    return out


def _bench_fitting() -> Any:
    # benchmarks/ is not a package to mypy (its scripts are top-level modules there).
    return importlib.import_module("benchmarks.bench_fitting")


def fitting_table() -> str:
    """Table 3 is benchmarks/bench_fitting.py's comparison, run as it is (its output)."""
    bench_fitting = _bench_fitting()

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bench_fitting.comparison(turns=100, samples=4)
    # pydantic-ai-harness's compaction on the same chats, in the same format (compaction.py).
    return buf.getvalue() + compaction.table(turns=100, samples=4)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 s windows, one mode per tool")
    p.add_argument("--tools", default="all", help="all, tokenguard, none, or modules")
    p.add_argument("--window", type=float, default=None, help="seconds per scaled minute")
    p.add_argument("--windows", type=int, default=12)
    p.add_argument("--render", action="store_true", help="only rebuild docs from results.json")
    p.add_argument(
        "--tg-algorithm",
        choices=["bucket", "window"],
        default=None,
        help="extra tokenguard rows with this limiter algorithm, labelled [window] (the main "
        "rows use the library's default)",
    )
    p.add_argument("--skip-tables", default="", help="e.g. 3,4: keep those from results.json")
    args = p.parse_args(argv)
    default_algorithm = str(tg.Limiter(tpm=TPM, rpm=RPM).algorithm)
    if args.tg_algorithm == default_algorithm:  # the default's rows are the main rows
        args.tg_algorithm = None
    # A terminated run still stops its redis-server and emulators (finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    window = args.window or (1.0 if args.quick else 2.0)
    old: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.render:
        report.render(old)
        return
    logging.disable(logging.CRITICAL)  # libraries' retry warnings would flood the output
    warnings.simplefilter("ignore")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    tg.events.use_logging(False)
    if args.tools == "all":
        modules = ORDER
    elif args.tools == "tokenguard":
        modules = TOKENGUARD
    elif args.tools == "none":  # tables 3 and 4 only
        modules = []
    else:
        names = [m.strip() for m in args.tools.split(",")]
        modules = [m for n in names for m in (TOKENGUARD if n == "tokenguard" else [n])]
    command = "python -m benchmarks.compare.run " + " ".join(argv or sys.argv[1:])
    res: dict[str, Any] = {
        "command": command.strip(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "window": window,
        "windows": args.windows,
        "quick": args.quick,
        "tokenguard_commit": _git_head(),
        "load": list(os.getloadavg()),  # the machine is shared: how busy it was
        # The limiter tokenguard's rows ran with (its default for these options).
        "limiter": args.tg_algorithm or default_algorithm,
    }
    t_start = time.monotonic()
    res["baseline"] = baseline()
    print(f"bare call on an unlimited emulator: p50 {res['baseline']['p50'] * 1e3:.1f} ms")
    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    run_id = 0
    with redis_server() as redis_url:
        for refund in (True, False):
            for module in modules:
                tool = load(module)
                why = tool.unavailable()
                if why:
                    unavailable[module] = why
                    continue
                modes = tool.MODES[:1] if (args.quick or not refund) else tool.MODES
                for mode in modes:
                    run_id += 1
                    t0 = time.monotonic()
                    try:
                        row = one_run(
                            module,
                            mode,
                            refund,
                            window,
                            args.windows,
                            redis_url,
                            run_id,
                            args.tg_algorithm,
                        )
                    except Exception as exc:
                        row = {
                            "module": module,
                            "tool": tool.NAME,
                            "mode": mode,
                            "refund": refund,
                            "failed": repr(exc)[:200],
                        }
                    rows.append(row)
                    print(report.line(row), f"({time.monotonic() - t0:.0f} s)", flush=True)
    res["rows"] = rows
    res["unavailable"] = unavailable
    skip = set(args.skip_tables.split(","))
    res["fitting"] = old.get("fitting", "") if "3" in skip else fitting_table()
    res["counts"] = old.get("counts", []) if "4" in skip else count_errors()
    res["elapsed_s"] = time.monotonic() - t_start
    # Spawned processes import the working tree when they start, not when the run did.
    res["tokenguard_changed_during_run"] = _changed_since(res["tokenguard_commit"])
    merged = _merge(old, res, modules, args.tg_algorithm)
    RESULTS.write_text(json.dumps(merged, indent=1) + "\n")
    report.render(merged)
    print(f"done in {res['elapsed_s']:.0f} s; wrote {RESULTS.relative_to(ROOT)} and docs/")


def _merge(
    old: dict[str, Any], new: dict[str, Any], modules: list[str], variant: str | None
) -> dict[str, Any]:
    """A partial run replaces its tools' rows and keeps the others (with their command);
    tokenguard's rows with another limiter algorithm are kept apart from the default's."""
    if not old or (set(modules) >= set(ORDER) and variant is None):
        return new
    replaced = {(m, variant if m in TOKENGUARD else None) for m in modules}
    kept = [r for r in old.get("rows", []) if (r["module"], r.get("variant")) not in replaced]
    out = dict(old)
    out["rows"] = kept + new["rows"]
    out["unavailable"] = {
        **{k: v for k, v in old.get("unavailable", {}).items() if k not in modules},
        **new["unavailable"],
    }
    out.setdefault("reruns", []).append(
        {
            "command": new["command"],
            "started": new["started"],
            "tools": modules,
            "tokenguard_commit": new["tokenguard_commit"],
            "limiter": new["limiter"],
        }
    )
    out["fitting"], out["counts"] = new["fitting"], new["counts"]
    return out


def _changed_since(commit: str) -> list[str]:
    """Files under tokenguard/ that differ now from ``commit`` (the run's start) in the
    working tree: edited while the run went on, if the start was clean."""
    import subprocess

    head = commit.split()[0]
    try:
        out = subprocess.run(
            ["git", "diff", "--name-only", head, "--", "tokenguard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        return []
    return out.split()


def _git_head() -> str:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        # The run imports the working tree: say when it differs from the commit.
        dirty = git("status", "--porcelain", "--", "tokenguard")
    except OSError:
        return "?"
    return head + (" with uncommitted changes in tokenguard/" if dirty else "")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
