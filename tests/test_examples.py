"""The examples run as a new user would run them, against the embedded emulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GROQ_API_KEY"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
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
