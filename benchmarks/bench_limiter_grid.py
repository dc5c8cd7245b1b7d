"""The limiter's benchmark grid: every cell of the bucket's figures, bucket and window side
by side on the same runs, as one markdown table.

A cell is a server latency (0, 0.2, 0.5, 1 s) x a case ``max_tokens:completion``
(128:128, 256:64, 400:40, 1024:16) x a scenario (16 threads, 64 asyncio tasks, 4
processes x 4 threads on one Redis) x a server (refunding unused completion tokens or
not). Each cell is one run of ``bench_limiter``'s scenario per algorithm, the two runs at
the same time, each in its own process with its own emulator on its own port (and its
own redis-server for the processes rows), so both meet the same machine load.

The period of the limit (``window``) is chosen per latency and case so that the
server's own bucket can be filled: a request's whole estimate E = prompt + max_tokens
sits in the server's bucket while it is in flight (latency L), so at most limit / E
requests are in flight, and a refunding server, charging a = prompt + completion per
request, accepts at most (limit / E) x a / L tokens per second: a fraction
W x a / (E x L) of the limit per period W. Concurrency caps it too: C workers send at
most C / L requests per second (C x W x charge / (L x limit) of the limit). The
``ceiling`` is the smaller of the two, as a fraction of the limit, and the window is
the shortest of ``LADDER`` (at least 2 s) whose ceiling is at least ``MARGIN`` (1.5)
for the refunding server in every scenario; the ratios are against the limit, and
against the ceiling too whenever it is below 1.

Goals: refunding server >= 0.95 of the limit and zero 429s; non-refunding server 429s
<= 2% of requests and >= 0.9 of the limit (of the ceiling when that is lower).

Cells at latency 0 are CPU-bound (load on the shared machine moves them): they run with
only their two algorithms at a time, twice (``--passes``), one pass before and one after
the cells with latency, which wait on the server and run ``--jobs`` at a time.

Every run is appended to ``--results`` (default ``/tmp/limiter-grid.jsonl``; JSON lines:
the figures, the emulator's log, the load average and the last commit of
``tokenguard/limiter`` when it started);
``--algorithms bucket`` runs only the bucket (the window's rows then stay from earlier
runs); ``--render`` prints the table from that file (``--after`` a UTC time drops older runs,
e.g. those made before a change to the bucket's behaviour). ``--only`` re-runs the
cells whose name contains one of its comma-separated parts (e.g. ``--only
lat=1/1024:16,processes``); ``--stale`` re-runs the cells whose newest run was on
another limiter commit.

Run: ``.venv/bin/python benchmarks/bench_limiter_grid.py`` (10 periods per run, about an
hour on 2 cores), then
``--render``; ``--plan`` lists the cells, windows and ceilings without running.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_limiter as bl

from tokenguard.emulator import count_prompt_tokens

ROOT = Path(__file__).resolve().parent.parent
LATENCIES = (0.0, 0.2, 0.5, 1.0)
CASES = ((128, 128), (256, 64), (400, 40), (1024, 16))
# Scenario -> (workers sending at once, prompt indices of bench_limiter._messages).
SCENARIOS = {"threads": (16, range(16)), "async": (64, range(64)), "processes": (16, range(16))}
LADDER = (2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0)
MARGIN = 1.5
WINDOWS = 10
ALGORITHMS = ("bucket", "window")
# Spawned workers start together once all have imported (a barrier), this much later.
PROCESS_START_DELAY = 0.5


@dataclass(frozen=True)
class Cell:
    latency: float
    max_tokens: int
    completion: int
    scenario: str
    refund: bool
    window: float

    @property
    def name(self) -> str:
        server = "refund" if self.refund else "keep"
        return f"lat={self.latency:g}/{self.max_tokens}:{self.completion}/{self.scenario}/{server}"

    @property
    def cpu_bound(self) -> bool:
        return self.latency == 0

    def ceiling(self) -> float:
        return ceiling(
            self.latency, self.max_tokens, self.completion, self.scenario, self.refund, self.window
        )


def _mean_prompt(scenario: str) -> float:
    _, indices = SCENARIOS[scenario]
    sizes = [count_prompt_tokens(bl._messages(i), template="llama3") for i in indices]
    return sum(sizes) / len(sizes)


def ceiling(
    latency: float, max_tokens: int, completion: int, scenario: str, refund: bool, window: float
) -> float:
    """What the server itself can accept per period, as a fraction of the limit (see the
    module docstring); ``inf`` without latency."""
    if latency == 0:
        return float("inf")
    prompt = _mean_prompt(scenario)
    estimate = prompt + max_tokens
    used = prompt + min(max_tokens, completion)
    charge = used if refund else estimate
    workers, _ = SCENARIOS[scenario]
    by_workers = workers * window * charge / (latency * bl.TPM)
    by_rpm = bl.RPM * charge / bl.TPM
    # Only a refunding server gives the in-flight estimate back; one that keeps it has
    # charged it for good at arrival, so in-flight holds cost it nothing more.
    by_bucket = window * used / (estimate * latency) if refund else float("inf")
    return min(by_workers, by_rpm, by_bucket)


def choose_window(latency: float, max_tokens: int, completion: int) -> float:
    for w in LADDER:
        if all(ceiling(latency, max_tokens, completion, sc, True, w) >= MARGIN for sc in SCENARIOS):
            return w
    return LADDER[-1]


def all_cells() -> list[Cell]:
    cells = []
    for latency in LATENCIES:
        for max_tokens, completion in CASES:
            w = choose_window(latency, max_tokens, completion)
            for scenario in SCENARIOS:
                for refund in (True, False):
                    cells.append(Cell(latency, max_tokens, completion, scenario, refund, w))
    return cells


# -- one run, in a child process ------------------------------------------------------


def run_cell(
    cell: Cell, algorithm: str, windows: int, refunds: bool | None = None
) -> dict[str, Any]:
    s = bl.Setup(
        window=cell.window,
        windows=windows,
        max_tokens=cell.max_tokens,
        completion_tokens=cell.completion,
        latency=cell.latency,
        refund=cell.refund,
        algorithm=algorithm,
        threads=SCENARIOS[cell.scenario][0],
        refunds=refunds,
    )
    if cell.scenario == "threads":
        return bl.scenario_threads(s)
    if cell.scenario == "async":
        return bl.scenario_async(s)
    return bl.scenario_processes(s, start_delay=PROCESS_START_DELAY)


# -- the parent: git state, scheduling, results ----------------------------------------


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip()


def limiter_commit() -> str:
    """The last commit of tokenguard/limiter, with ``+dirty<hash>`` for uncommitted edits."""
    head = _git("log", "-1", "--format=%h", "--", "tokenguard/limiter")
    diff = _git("diff", "HEAD", "--", "tokenguard/limiter")
    if diff:
        head += "+dirty" + hashlib.sha256(diff.encode()).hexdigest()[:6]
    return head


def _run_child(
    cell: Cell, algorithm: str, windows: int, log: Path, refunds: bool | None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "cell": cell.name,
        "spec": dataclasses.asdict(cell),
        "algorithm": algorithm,
        "limiter_refunds": refunds,
        "windows": windows,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load": os.getloadavg()[0],
        "limiter_commit": limiter_commit(),
        "head": _git("rev-parse", "--short", "HEAD"),
    }
    arg = json.dumps(
        {
            "cell": dataclasses.asdict(cell),
            "algorithm": algorithm,
            "windows": windows,
            "refunds": refunds,
        }
    )
    # After the stop every worker still finishes the acquire it waits in: a queue of all
    # of them drains at the refill rate (64 x 1,100 tokens take 3 minutes at 15 s).
    workers = SCENARIOS[cell.scenario][0]
    drain = workers * (_mean_prompt(cell.scenario) + cell.max_tokens) * cell.window / bl.TPM
    timeout = windows * cell.window + 180 + drain
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", arg],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        with log.open("a") as f:
            f.write(f"== {cell.name} {algorithm}\n{out.stdout}{out.stderr}")
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            record["error"] = f"exit {out.returncode}: {tail[0][:200]}"
        else:
            record.update(json.loads(lines[-1][len("RESULT ") :]))
    except subprocess.TimeoutExpired:
        record["error"] = f"timed out after {timeout:.0f} s"
    return record


def _schedule(
    cells: list[Cell],
    jobs: int,
    windows: int,
    results: Path,
    log: Path,
    refunds: bool | None,
    algorithms: tuple[str, ...] = ALGORITHMS,
) -> None:
    """The ``algorithms`` of a cell at once; ``jobs`` runs at a time (longest first)."""
    cells = sorted(cells, key=lambda c: -c.window)
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_run_child, cell, algorithm, windows, log, refunds)
            for cell in cells
            for algorithm in algorithms
        ]
        for fut in cf.as_completed(futures):
            rec = fut.result()
            with results.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(_summary(rec), flush=True)


def _summary(rec: dict[str, Any]) -> str:
    head = f"{rec['cell']:38s} {rec['algorithm']:6s} W={rec['spec']['window']:g}"
    if "error" in rec:
        return f"{head} ERROR {rec['error']}"
    verdict = "PASS" if _passes(rec) else "FAIL"
    return (
        f"{head} ratio={rec['mean']:.3f} raw={rec['raw']:.3f} "
        f"429s={rec['429']}/"
        f"{rec['requests']} other={rec['other']} refunds={rec.get('refunds', '-')} "
        f"load={rec['load']:.1f} "
        f"{rec['limiter_commit']} {verdict}"
    )


def _passes(rec: dict[str, Any]) -> bool:
    if "error" in rec or rec["other"]:
        return False
    cap = min(1.0, Cell(**rec["spec"]).ceiling())
    if rec["spec"]["refund"]:
        return bool(rec["429"] == 0 and rec["mean"] >= 0.95 * cap)
    return bool(rec["429"] <= 0.02 * rec["requests"] and rec["mean"] >= 0.9 * cap)


# -- the table ---------------------------------------------------------------------------


def load_results(path: Path) -> list[dict[str, Any]]:
    """The runs of ``path``, their steady figures recomputed from their logs (so a change
    to ``bench_limiter.steady`` needs no new runs)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for rec in records:
        if "log" in rec:
            spec = rec["spec"]
            rec.update(
                bl.steady(
                    [tuple(row) for row in rec["log"]],
                    window=spec["window"],
                    windows=rec["windows"],
                    latency=spec["latency"],
                    refund=spec["refund"],
                )
            )
    return records


def current_runs(
    records: list[dict[str, Any]], after: str = "", refunds: bool | None = None
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Per (cell, algorithm), the runs with ``Limiter(refunds=refunds)`` started at or
    after ``after`` (UTC, ISO 8601)."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        if rec["started"] >= after and rec.get("limiter_refunds") == refunds:
            runs.setdefault((rec["cell"], rec["algorithm"]), []).append(rec)
    return runs


def _base(commit: str) -> str:
    return commit.split("+", 1)[0]


def _figures(recs: list[dict[str, Any]]) -> tuple[str, str, str, str]:
    if not recs:
        return "-", "-", "-", "-"
    ratio, n429, err, verdict = [], [], [], []
    for r in recs:
        if "error" in r:
            ratio.append("-")
            n429.append("-")
            err.append(r["error"][:40])
            verdict.append("ERROR")
            continue
        # Steady windows later than the second (a slow start): say from which.
        late = f" (w{r['first'] + 1}+)" if r.get("first", 1) > 1 else ""
        ratio.append(f"{r['mean']:.3f}{late}")
        pct = 100 * r["429"] / max(r["requests"], 1)
        n429.append(f"{r['429']} ({pct:.1f}%)" if r["429"] else "0")
        err.append(str(r["other"]))
        verdict.append("pass" if _passes(r) else "**FAIL**")
    return " · ".join(ratio), " · ".join(n429), " · ".join(err), " · ".join(verdict)


def render(path: Path, after: str = "", refunds: bool | None = None) -> str:
    runs = current_runs(load_results(path), after, refunds)
    lines = [
        "| cell (latency / case / scenario / server) | W s | ceiling | bucket ratio | "
        "bucket 429s | bucket errors | bucket | window ratio | window 429s | "
        "window errors | window | limiter commit | bucket's refunds at the end |",
        "|" + " --- |" * 13,
    ]
    for cell in all_cells():
        b = runs.get((cell.name, "bucket"), [])
        w = runs.get((cell.name, "window"), [])
        if not b and not w:
            continue
        ceil = cell.ceiling()
        ceil_s = "∞" if ceil == float("inf") else f"{ceil:.2f}"
        commits = sorted({_base(r["limiter_commit"]) for r in b + w})
        lines.append(
            f"| {cell.name} | {cell.window:g} | {ceil_s} | "
            + " | ".join(_figures(b))
            + " | "
            + " | ".join(_figures(w))
            + f" | {', '.join(commits)} | "
            + " · ".join(str(r.get("refunds", "-")) for r in b)
            + " |"
        )
    return "\n".join(lines)


def _select(
    cells: list[Cell], only: str | None, stale: bool, results: Path, refunds: bool | None
) -> list[Cell]:
    if only:
        parts = [p for p in only.split(",") if p]
        cells = [c for c in cells if any(p in c.name for p in parts)]
    if stale:
        now = _base(limiter_commit())
        runs = current_runs(load_results(results), refunds=refunds)
        cells = [
            c
            for c in cells
            if any(
                not runs.get((c.name, a)) or _base(runs[(c.name, a)][-1]["limiter_commit"]) != now
                for a in ALGORITHMS
            )
        ]
    return cells


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--plan", action="store_true", help="list cells, windows and ceilings")
    p.add_argument("--render", action="store_true", help="print the table from --results")
    p.add_argument("--after", default="", help="render only runs started at/after (UTC ISO)")
    p.add_argument("--only", help="comma-separated parts of cell names to run")
    p.add_argument("--stale", action="store_true", help="cells last run on an older limiter")
    p.add_argument("--jobs", type=int, default=6, help="I/O-light runs at a time (6)")
    p.add_argument("--passes", type=int, default=2, help="runs of each CPU-bound cell (2)")
    p.add_argument(
        "--refunds",
        choices=["none", "yes", "no"],
        default="none",
        help="Limiter(refunds=...): none (learn, the default) | yes | no",
    )
    p.add_argument(
        "--algorithms",
        default=",".join(ALGORITHMS),
        help="comma-separated algorithms to run per cell (bucket,window); e.g. bucket "
        "alone when only the bucket changed (the window's rows stay from earlier runs)",
    )
    p.add_argument("--windows", type=int, default=WINDOWS, help=f"periods per run ({WINDOWS})")
    p.add_argument(
        "--results",
        type=Path,
        default=Path("/tmp/limiter-grid.jsonl"),
        help="JSON lines, one per run, with the emulator's log",
    )
    p.add_argument("--log", type=Path, default=Path("/tmp/limiter-grid.log"), help="raw output")
    args = p.parse_args(argv)
    refunds = {"none": None, "yes": True, "no": False}[args.refunds]
    algorithms = tuple(a for a in args.algorithms.split(",") if a)
    if not algorithms or any(a not in ALGORITHMS for a in algorithms):
        p.error(
            f"--algorithms: comma-separated among {', '.join(ALGORITHMS)}, got {args.algorithms!r}"
        )
    if args.child:
        spec = json.loads(args.child)
        rec = run_cell(
            Cell(**spec["cell"]), spec["algorithm"], spec["windows"], spec.get("refunds")
        )
        print("RESULT " + json.dumps(rec), flush=True)
        return
    if args.render:
        print(render(args.results, args.after, refunds))
        return
    cells = _select(all_cells(), args.only, args.stale, args.results, refunds)
    if args.plan:
        total = 0.0
        for c in cells:
            runs = args.passes if c.cpu_bound else 1
            total += runs * (args.windows * c.window + 5)
            print(
                f"{c.name:38s} W={c.window:g} ceiling={c.ceiling():.2f} "
                f"{'cpu-bound' if c.cpu_bound else ''}"
            )
        print(
            f"{len(cells)} cells, about {total / 60:.0f} min of runs "
            f"(x{len(algorithms)} algorithms at once)"
        )
        return
    heavy = [c for c in cells if c.cpu_bound]
    light = [c for c in cells if not c.cpu_bound]
    print(f"limiter commit {limiter_commit()}, load {os.getloadavg()}", flush=True)
    t0 = time.monotonic()
    if heavy:
        _schedule(heavy, 2, args.windows, args.results, args.log, refunds, algorithms)
    if light:
        _schedule(light, args.jobs, args.windows, args.results, args.log, refunds, algorithms)
    for _ in range(args.passes - 1):
        if heavy:
            _schedule(heavy, 2, args.windows, args.results, args.log, refunds, algorithms)
    print(f"done in {(time.monotonic() - t0) / 60:.1f} min; limiter commit {limiter_commit()}")


if __name__ == "__main__":
    main()
