"""Side by side: tokenguard and what users would pick instead, scenario by scenario.

Plan first (rows and expected duration), then run everything (about 10 hours on an
idle machine; --plan says how long), or in parts that add their rows to the same
results file (the page lists each command)::

    .venv-bench/bin/python -m benchmarks.compare.run --plan
    .venv-bench/bin/python -m benchmarks.compare.run
    .venv-bench/bin/python -m benchmarks.compare.run --scenarios real,real-equal
    .venv-bench/bin/python -m benchmarks.compare.run --scenarios defaults,equal,norefund \
        --skip-tables 3,4

It writes ``benchmarks/compare/results.json`` (every run of every row), then renders
``docs/benchmarks.md`` and ``docs/benchmarks-goodput.png`` from it; ``--render`` rebuilds
the document from the results file alone. Each row runs ``--repeats`` times (3), in
rounds (every row once, then again), so a drift in the machine's load spreads over all
rows. A short proof of every scenario, written apart from the committed results::

    .venv-bench/bin/python -m benchmarks.compare.run --smoke --out /tmp/smoke.json \
        --doc /tmp/smoke.md

Each row's callers run in a process of their own (row.py), on the Python its tool needs
(envs.py builds the environment of the peers that need 3.12); the emulator stays here
and its request log gives the server's side. ``--tools`` and ``--scenarios`` re-run some
rows and keep the others (the document lists the re-runs).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tokenguard as tg  # noqa: E402
from tokenguard.emulator import running  # noqa: E402

from . import compaction, envs, report  # noqa: E402
from ._redis import redis_server  # noqa: E402
from .scenarios import BY_KEY, SCENARIOS, Scenario  # noqa: E402
from .tools import ORDER, TOKENGUARD, load  # noqa: E402
from .workload import (  # noqa: E402
    COMPLETION,
    CONTEXT,
    GPT_OSS,
    MAX_TOKENS,
    MODEL,
    Env,
    conversation_mix,
    jain,
    quantile,
    server_figures,
)

RESULTS = Path(__file__).with_name("results.json")
STARTUP = 60.0  # a row's process: imports and caller built (loaded machine), at most


def _emulator(sc: Scenario, **kw: Any) -> Any:
    return running(
        model=MODEL,
        tpm=sc.tpm,
        rpm=sc.rpm,
        tpd=0,
        rpd=0,
        window=sc.window,
        context_window=CONTEXT,
        completion_tokens=COMPLETION,
        latency=sc.latency,
        refund_unused=sc.refund,
        **kw,
    )


def baseline(latency: float, samples: int = 60) -> dict[str, float]:
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
        latency=latency,
    ) as em:
        c = openai.OpenAI(base_url=em.base_url, api_key="bench")
        mix = conversation_mix()
        times = []
        for i in range(samples):
            t0 = time.perf_counter()
            c.chat.completions.create(
                model=MODEL, messages=mix[i % len(mix)], max_tokens=MAX_TOKENS
            )
            times.append(time.perf_counter() - t0)
    return {"p50": statistics.median(times[10:]), "p99": quantile(times[10:], 0.99)}


def grace_for(sc: Scenario) -> float:
    # After the last window, calls already made may finish (a queue drains): only those
    # still waiting after this long count as lost.
    return max(10.0, 8 * sc.window) if sc.window < 60 else 60.0


def modes_for(sc: Scenario, module: str) -> list[str]:
    have = [m for m in load(module).MODES if m in dict(sc.workers)]
    if sc.open_loop:  # arrivals come to one process (threads, or tasks if asyncio only)
        have = [m for m in have if m != "processes"]
    return have if sc.all_modes else have[:1]


def skip_reason(sc: Scenario, module: str) -> str | None:
    """Why a tool has no row in a scenario that it could otherwise run (a true reason)."""
    tool = load(module)
    streams = getattr(tool, "STREAMS", None)
    if sc.stream and streams:
        return f"does not stream: {streams}"
    if not modes_for(sc, module):
        return f"no mode fits ({', '.join(tool.MODES)})"
    return None


def plan(scenarios: list[Scenario], modules: list[str], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for sc in scenarios:
        for module in modules:
            if sc.tools is not None and module not in sc.tools:
                continue
            if skip_reason(sc, module):
                continue
            for mode in modes_for(sc, module):
                rows.append({"scenario": sc.key, "module": module, "mode": mode})
    seconds = sum(BY_KEY[r["scenario"]].window * BY_KEY[r["scenario"]].windows + 25 for r in rows)
    print(f"{len(rows)} rows x {repeats} runs, about {seconds * repeats / 3600:.1f} h")
    return rows


class LoadSampler:
    """The 1-minute load average every 10 s while the run goes on (the machine is shared)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(10.0):
            self.samples.append(os.getloadavg()[0])

    def since(self, n: int) -> list[float]:
        return self.samples[n:]

    def stop(self) -> None:
        self._stop.set()


def one_run(
    sc: Scenario,
    module: str,
    mode: str,
    redis_url: str,
    run_id: int,
    python: str,
    tg_algorithm: str | None,
) -> dict[str, Any]:
    """One run of one row: the emulator here, the callers in a process on ``python``."""
    variant = tg_algorithm if module in TOKENGUARD else None
    grace = grace_for(sc)
    with _emulator(sc) as em:
        env = Env(
            base_url=em.base_url,
            tpm=sc.tpm,
            rpm=sc.rpm,
            window=sc.window,
            refund=sc.refund,
            redis_url=redis_url,
            key=f"run{run_id}",
            tg_algorithm=variant,
            attempts=sc.attempts,
            stream=sc.stream,
            tier=sc.tier,
        )
        spec = {
            "module": module,
            "mode": mode,
            "env": asdict(env),
            "traffic": asdict(sc.traffic),
            "duration": sc.window * sc.windows,
            "grace": grace,
            "workers": sc.workers_for(mode),
            "threads_per_process": sc.threads_per_process,
        }
        got = _in_row_process(python, spec, STARTUP + sc.window * sc.windows + grace + 60)
        if "failed" in got or "unavailable" in got:
            return dict(got)
        # The emulator's clock is this process's time.monotonic(); the row's start came
        # as wall-clock time.
        start = got["started_wall"] - (time.time() - time.monotonic())
        time.sleep(0.05)
        fig = server_figures(list(em.log), start, sc.window, sc.windows)
    return _figures(sc, got, fig)


def _figures(sc: Scenario, got: dict[str, Any], fig: Any) -> dict[str, Any]:
    mean, low = fig.goodput(sc.tpm)
    lat = got["latencies"]
    offered, served = got["offered"], got["served"]
    keys = sorted(offered)
    if sc.open_loop:
        shares = [served[k] / offered[k] for k in keys if offered[k]]
    else:
        shares = [served[k] for k in keys]
    return {
        "goodput": mean,
        "goodput_min": low,
        "useful": fig.useful(sc.tpm),
        "per_window": fig.per_window,
        "server_requests": fig.requests,
        "server_ok": fig.ok,
        "s429": fig.s429,
        "s413": fig.s413,
        "s400": fig.s400,
        "issued": got["issued"],
        "ok": got["ok"],
        "errors": got["errors"],
        "unfinished": got["unfinished"],
        "arrivals": got.get("arrivals"),
        "lat_p50": quantile(lat, 0.5),
        "lat_p99": quantile(lat, 0.99),
        "fairness": jain(shares) if shares else None,
        "python": got["python"],
    }


# -- table 4: pre-flight counts against the server's ------------------------------------------


def count_errors(pythons: dict[str, str]) -> list[dict[str, Any]]:
    """Each counting tool's prompt count against the emulator's ``usage.prompt_tokens``
    (Groq's billing: Llama 3 template, harmony for gpt-oss) on the workload's mix and on
    long chats in four scripts (benchmarks/bench_fitting.py's); each tool counts in a
    process on its own Python (row.py)."""
    bench_fitting = _bench_fitting()

    chats = conversation_mix() + [
        bench_fitting.conversation(kind, n) for kind in bench_fitting.TEXTS for n in (5, 30)
    ]
    models = [MODEL, GPT_OSS]
    with running(model=models, tpm=0, rpm=0, tpd=0, rpd=0) as em:
        c = openai.OpenAI(base_url=em.base_url, api_key="bench", max_retries=0)
        truth: dict[tuple[str, int], int] = {}
        for model in models:
            for i, chat in enumerate(chats):
                usage = c.chat.completions.create(model=model, messages=chat, max_tokens=1).usage
                assert usage is not None
                truth[(model, i)] = usage.prompt_tokens
    out: list[dict[str, Any]] = []
    for module, python in pythons.items():
        if module in ("tokenguard_instrument", "tokenguard_redis"):
            continue  # they count as tokenguard_guard does (tg.count_tokens)
        got = _in_row_process(python, {"counts": module, "chats": chats, "models": models}, 300)
        for label, per_model in got.get("counters", {}).items():
            for model, counted in per_model.items():
                errs = [
                    n / truth[(model, i)] - 1 for i, n in enumerate(counted) if isinstance(n, int)
                ]
                raised = [n for n in counted if isinstance(n, str)]
                out.append(
                    {
                        "tool": load(module).NAME,
                        "counter": label,
                        "note": got.get("notes", {}).get(label, {}).get(model),
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


def _in_row_process(python: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run row.py on ``spec`` with ``python``; its JSON answer, or ``{"failed": why}``."""
    with tempfile.TemporaryDirectory(prefix="bench-row-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        try:
            subprocess.run(
                [python, "-m", "benchmarks.compare.row", str(spec_path), str(out_path)],
                cwd=ROOT,
                timeout=timeout,
                check=False,
                stdout=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return {"failed": f"the row's process did not end in {timeout:.0f} s"}
        if not out_path.exists():
            return {"failed": "the row's process ended without a result"}
        answer: dict[str, Any] = json.loads(out_path.read_text())
        return answer


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


SMOKE_WINDOWS = {2.0: 5, 10.0: 4, 60.0: 3}  # --smoke: short runs, still one steady window


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tools", default="all", help="all, tokenguard, none, or modules")
    p.add_argument(
        "--scenarios", default="all", help="all or keys: " + ",".join(s.key for s in SCENARIOS)
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per row (median, min-max)")
    p.add_argument("--windows", type=int, default=None, help="windows per run (override)")
    p.add_argument("--smoke", action="store_true", help="1 run per row, few windows")
    p.add_argument("--plan", action="store_true", help="list the rows and the duration; no run")
    p.add_argument("--render", action="store_true", help="only rebuild the doc from --out")
    p.add_argument("--out", type=Path, default=RESULTS, help="the results file")
    p.add_argument("--doc", type=Path, default=report.DOC, help="the document to write")
    p.add_argument(
        "--tg-algorithm",
        choices=["bucket", "window"],
        default=None,
        help="extra tokenguard rows with this limiter algorithm, labelled [window] (the main "
        "rows use the library's default)",
    )
    p.add_argument("--skip-tables", default="", help="e.g. 3,4: keep those from --out")
    args = p.parse_args(argv)
    default_algorithm = str(tg.Limiter(tpm=1000, rpm=10).algorithm)
    if args.tg_algorithm == default_algorithm:  # the default's rows are the main rows
        args.tg_algorithm = None
    # A terminated run still stops its redis-server and emulators (finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    old: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.render:
        report.render(old, args.doc, args.out.resolve())
        return
    if args.tools == "all":
        modules = ORDER
    elif args.tools == "tokenguard":
        modules = TOKENGUARD
    elif args.tools == "none":  # tables 3 and 4 only
        modules = []
    else:
        names = [m.strip() for m in args.tools.split(",")]
        modules = [m for n in names for m in (TOKENGUARD if n == "tokenguard" else [n])]
    keys = [s.key for s in SCENARIOS] if args.scenarios == "all" else args.scenarios.split(",")
    scenarios = [BY_KEY[k] for k in keys]
    repeats = 1 if args.smoke else args.repeats
    if args.smoke or args.windows:
        scenarios = [
            replace(sc, windows=args.windows or SMOKE_WINDOWS.get(sc.window, 4)) for sc in scenarios
        ]
    rows = plan(scenarios, modules, repeats)
    if args.plan:
        for r in rows:
            print(f"  {r['scenario']:<12} {r['module']:<22} {r['mode']}")
        return
    tg.events.use_logging(False)
    command = "python -m benchmarks.compare.run " + " ".join(argv or sys.argv[1:])
    load_now = os.getloadavg()
    res: dict[str, Any] = {
        "command": command.strip(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "smoke": args.smoke,
        "repeats": repeats,
        "tokenguard_commit": _git_head(),
        "cores": os.cpu_count(),
        # The limiter tokenguard's rows ran with (its default for these options).
        "limiter": args.tg_algorithm or default_algorithm,
        "scenarios": {sc.key: {**asdict(sc), "traffic": asdict(sc.traffic)} for sc in scenarios},
    }
    t_start = time.monotonic()
    latencies = sorted({sc.latency for sc in scenarios})
    res["baseline"] = {str(lat): baseline(lat) for lat in latencies}
    pythons: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for module in dict.fromkeys([*modules, *([] if "4" in args.skip_tables else ORDER)]):
        python, note = envs.python_for(getattr(load(module), "MIN_PYTHON", None))
        if python is None:
            unavailable[module] = note
        else:
            pythons[module] = python
    sampler = LoadSampler()
    by_key = {sc.key: sc for sc in scenarios}
    done: dict[tuple[str, str, str], dict[str, Any]] = {}
    run_id = 0
    with redis_server() as redis_url:
        for rep in range(repeats):  # rounds: every row once, then again
            for r in rows:
                sc, module, mode = by_key[r["scenario"]], r["module"], r["mode"]
                if module in unavailable:
                    continue
                key = (sc.key, module, mode)
                row = done.setdefault(
                    key,
                    {
                        "scenario": sc.key,
                        "module": module,
                        "tool": load(module).NAME,
                        "mode": mode,
                        "workers": _workers(sc, module, mode),
                        "variant": args.tg_algorithm if module in TOKENGUARD else None,
                        "runs": [],
                    },
                )
                run_id += 1
                t0, n0 = time.monotonic(), len(sampler.samples)
                one = one_run(
                    sc, module, mode, redis_url, run_id, pythons[module], args.tg_algorithm
                )
                one["load"] = statistics.fmean(sampler.since(n0) or [os.getloadavg()[0]])
                one["seconds"] = time.monotonic() - t0
                row["runs"].append(one)
                print(
                    f"[{rep + 1}/{repeats}] {sc.key:<11}",
                    report.line(row["tool"], row["workers"], one),
                    flush=True,
                )
    res["rows"] = list(done.values())
    res["unavailable"] = unavailable
    res["pythons"] = {m: _python_name(py) for m, py in pythons.items()}
    res["load"] = {
        "start": list(load_now),
        "samples": len(sampler.samples),
        "min": min(sampler.samples, default=load_now[0]),
        "median": statistics.median(sampler.samples or [load_now[0]]),
        "max": max(sampler.samples, default=load_now[0]),
    }
    sampler.stop()
    skip = set(args.skip_tables.split(","))
    res["fitting"] = old.get("fitting", "") if "3" in skip else fitting_table()
    res["counts"] = old.get("counts", []) if "4" in skip else count_errors(pythons)
    res["elapsed_s"] = time.monotonic() - t_start
    # Spawned processes import the working tree when they start, not when the run did.
    res["tokenguard_changed_during_run"] = _changed_since(res["tokenguard_commit"])
    merged = _merge(old, res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    report.render(merged, args.doc, args.out.resolve())
    print(f"done in {res['elapsed_s']:.0f} s; wrote {args.out} and {args.doc}")


def _workers(sc: Scenario, module: str, mode: str) -> str:
    n = sc.workers_for(mode)
    if mode == "processes":
        inner = "tasks" if getattr(load(module), "ASYNC_ONLY", False) else "threads"
        return f"{n}x{sc.threads_per_process} {inner}"
    if sc.open_loop:
        return f"{sc.traffic.callers} callers ({mode})"
    return f"{n} {mode}"


def _python_name(python: str) -> str:
    if python == sys.executable:
        return "Python " + ".".join(map(str, sys.version_info[:3]))
    out = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:3], sep='.')"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "Python " + out.stdout.strip()


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A partial run replaces the rows it ran and keeps the others (the re-run is listed);
    tokenguard's rows with another limiter algorithm are kept apart from the default's."""
    if not old or old.get("format") != report.FORMAT:
        return {"format": report.FORMAT, **new}
    ran = {(r["scenario"], r["module"], r["mode"], r.get("variant")) for r in new["rows"]}
    kept = [
        r
        for r in old.get("rows", [])
        if (r["scenario"], r["module"], r["mode"], r.get("variant")) not in ran
    ]
    if not kept:  # nothing of the old run is left: the new run stands alone
        return {"format": report.FORMAT, **new}
    out = dict(old)
    out["rows"] = kept + new["rows"]
    out["scenarios"] = {**old.get("scenarios", {}), **new["scenarios"]}
    out["unavailable"] = {**old.get("unavailable", {}), **new["unavailable"]}
    out["pythons"] = {**old.get("pythons", {}), **new["pythons"]}
    out["baseline"] = {**old.get("baseline", {}), **new["baseline"]}
    out.setdefault("reruns", []).append(
        {
            k: new[k]
            for k in ("command", "started", "tokenguard_commit", "limiter", "load", "repeats")
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
    main()
