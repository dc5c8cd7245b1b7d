"""``tokenguard report`` on a long log: 100,000 events written by the JSONL sink.

Run: ``.venv/bin/python benchmarks/bench_report.py [--events 100000] [--runs 5]``. Prints
the medians of the whole command (a fresh process each run, import included), as wall
time and as the CPU time it used (what the wall time is on an idle core; a loaded
machine stretches only the wall time), and of parsing the JSON alone for scale; asserts
nothing. Goal (tokenguard issue 22): under 2 s for 100,000 events.

The log is what a busy application writes: guarded calls to two models, some failed,
retried or waiting, with fits and waits between them, and the limits line first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tokenguard as tg
from tokenguard.cli._report import read_log
from tokenguard.events import FitTruncated, GuardRequest, GuardRetry, GuardWait


def write_log(path: Path, events: int, seed: int = 22) -> None:
    """``events`` events through a real :class:`tokenguard.sinks.JsonlSink`."""
    rng = random.Random(seed)
    t = [1_700_000_000.0]

    def clock() -> float:
        t[0] += rng.uniform(0.0, 0.05)
        return t[0]

    lim = tg.Limiter(tpm=6000, rpm=30, window=60)
    with tg.sinks.JsonlSink(path, limiter=lim, clock=clock) as sink:
        for i in range(events - 1):
            model = "llama-3.1-8b-instant" if i % 3 else "llama3-8b-8192"
            roll = rng.random()
            if roll < 0.02:
                sink(GuardRetry(model=model, site="ask", kind="rate_limited", status=429,
                                attempt=1, wait_s=1.5))  # fmt: skip
            elif roll < 0.04:
                sink(GuardWait(model=model, site="ask", wait_s=2.0, reason="limiter", tokens=900))
            elif roll < 0.05:
                sink(FitTruncated(model=model, strategy="truncate", requested="truncate",
                                  tokens_before=9000, tokens_after=5000, allowed=5500,
                                  bound_by="tpm", dropped=4))  # fmt: skip
            else:
                prompt = rng.randint(20, 4000)
                failed = rng.random() < 0.01
                sink(
                    GuardRequest(
                        request_model=model,
                        site="app.ask",
                        estimated_tokens=prompt + 256,
                        completion_reserve=256,
                        max_tokens=256,
                        response_model=None if failed else model,
                        response_id=None if failed else f"chatcmpl-{i:08x}",
                        input_tokens=None if failed else prompt,
                        output_tokens=None if failed else rng.randint(1, 256),
                        limit_tokens=None if failed else prompt + 100,
                        error_type="RateLimitError" if failed else None,
                        wait_s=rng.choice((0.0, 0.0, 0.0, 0.4)),
                        server_remaining_tokens=rng.randint(0, 6000),
                        server_remaining_requests=rng.randint(0, 30),
                        duration_s=rng.uniform(0.1, 2.0),
                    )
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        write_log(path, args.events)
        size = path.stat().st_size
        text = path.read_text()
        reads, parses = [], []
        for _ in range(args.runs):
            started = time.process_time()
            with path.open(encoding="utf-8") as lines:
                read_log(lines, str(path))
            reads.append(time.process_time() - started)
            started = time.process_time()
            for line in text.splitlines():
                json.loads(line)
            parses.append(time.process_time() - started)
        command = [sys.executable, "-m", "tokenguard.cli", "report", str(path)]
        walls, cpus = [], []
        for _ in range(args.runs):
            before = os.times()
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            walls.append(time.perf_counter() - started)
            after = os.times()
            cpus.append(
                after.children_user
                - before.children_user
                + after.children_system
                - before.children_system
            )
    runs = f"median of {args.runs}"
    print(f"log: {args.events:,} events, {size / 1e6:.1f} MB")
    print(f"json.loads of each line alone: {statistics.median(parses):.2f} s CPU ({runs})")
    print(f"read_log in-process: {statistics.median(reads):.2f} s CPU ({runs})")
    print(
        f"tokenguard report, whole command: {statistics.median(cpus):.2f} s CPU, "
        f"{statistics.median(walls):.2f} s wall ({runs}; goal < 2 s)"
    )


if __name__ == "__main__":
    main()
