"""The examples run as a new user would run them, against the embedded emulator: every
one of them, and those that need an extra say so first and fail with its hint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GROQ_API_KEY"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_count_and_limit_counts_exactly_and_waits() -> None:
    out = _run("count_and_limit.py")
    pairs = re.findall(r"counted (\d+) / server (\d+) prompt tokens, held ([\d.]+) s", out)
    assert len(pairs) == 5
    assert all(a == b for a, b, _ in pairs)
    # 5 requests of ~2,000 tokens against 6,000 per 3 s: the later ones were held.
    assert sum(float(held) for _, _, held in pairs) > 0


def test_stream_with_groq_sdk_reads_x_groq_usage() -> None:
    out = _run("stream_with_groq_sdk.py")
    counted, server = re.findall(r"counted (\d+) / server (\d+)", out)[0]
    assert counted == server


def test_guard_function_reserves_the_default_and_reports_usage() -> None:
    out = _run("guard_function.py")
    calls = re.findall(r"call: estimated (\d+) tokens, used (\d+) in \+ (\d+) out", out)
    assert len(calls) == 3
    # No max_tokens: the documented default reserve (1,024) was held, then reconciled.
    assert all(int(est) == int(p) + 1024 for est, p, _ in calls)


def test_instrument_clients_reads_headers_for_each_client() -> None:
    out = _run("instrument_clients.py")
    sites = re.findall(
        r"^(\w+)\.chat\.completions\.create: \d+ in, \d+ out, server has (\d+)", out, re.MULTILINE
    )
    assert {s for s, _ in sites} == {"OpenAI", "Groq", "AsyncOpenAI", "AsyncGroq"}
    assert "raw response: status 200" in out
    assert re.search(r"streamed [1-9]\d* characters", out)


def test_budget_block_stops_before_sending() -> None:
    out = _run("budget_block.py")
    stopped = re.search(r"stopped before sending: needed (\d+), (\d+) remaining", out)
    assert stopped is not None
    assert int(stopped.group(1)) > int(stopped.group(2))
    used = re.search(r"budget: (\d+) of 1200 tokens", out)
    assert used is not None
    assert int(used.group(1)) <= 1200


def test_summarizing_conversation_stays_under_its_ceiling() -> None:
    out = _run("summarizing_conversation.py")
    turns = re.findall(r"(\d+) sent, +(\d+) tokens, +(\d+) summarized, (\d+) summary calls", out)
    assert len(turns) == 12
    assert all(int(tokens) <= 1500 for _, tokens, _, _ in turns)
    assert int(turns[-1][2]) > 0  # the oldest turns were summarized
    calls = re.search(r"guarded calls: (\d+)", out)
    assert calls is not None
    assert int(calls.group(1)) == 12 + int(turns[-1][3])  # summaries went through the guard


def test_threads_sharing_limit_answers_every_question() -> None:
    out = _run("threads_sharing_limit.py")
    assert re.search(r"^40 answers from 8 threads", out, re.MULTILINE)


@pytest.mark.slow
def test_redis_processes_share_one_limit() -> None:
    out = _run("redis_processes.py")
    assert "3 processes, 18 answers" in out


def test_events_to_jsonl_writes_a_log_that_report_reads_and_plots(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    out = _run("events_to_jsonl.py", str(log))
    found = re.search(r"wrote (\d+) events to .*: (\d+) requests, (\d+) tokens", out)
    assert found is not None
    assert int(found.group(2)) == 3
    assert "Name a prime" not in out  # events carry counts, never the messages
    png = tmp_path / "usage.png"
    done = subprocess.run(
        [sys.executable, "-m", "tokenguard.cli", "report", str(log), "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"calls\s+3\n", done.stdout)
    # The window and limit come from the log's limits line (the model table's, 60 s).
    assert "3 calls over" in done.stdout
    assert "through a 6,000-token bucket per 60 s" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_example_is_run_here() -> None:
    run_here = set(re.findall(r'_run\("(\w+\.py)"', Path(__file__).read_text()))
    assert run_here == {p.name for p in EXAMPLES.glob("*.py")}


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [
        ("instrument_clients.py", "groq", "groq"),
        ("stream_with_groq_sdk.py", "groq", "groq"),
        ("redis_processes.py", "redis", "redis"),
    ],
)
def test_an_example_says_its_extra_first_and_fails_with_that_hint(
    name: str, module: str, extra: str
) -> None:
    hint = f"pip install 'groq-tokenguard[{extra}]'"
    assert hint in (EXAMPLES / name).read_text().splitlines()[0]
    # The example run where the extra's package cannot be imported.
    code = (
        f"import runpy, sys; sys.modules[{module!r}] = None; "
        f"sys.argv = [{str(EXAMPLES / name)!r}]; "
        f"runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert hint in done.stderr
    assert "Traceback" not in done.stderr
