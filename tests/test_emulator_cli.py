"""``python -m tokenguard.emulator`` as a subprocess: prints its URL, serves, exits cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from emulator_support import HELLO


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenguard.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "log.jsonl"
    proc, url = start(
        "--model", "llama-3.1-8b-instant", "--model", "llama3-8b-8192",
        "--tpm", "1000", "--window", "2", "--completion-tokens", "3", "--log", str(log),
    )  # fmt: skip
    try:
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/openai/v1")
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=10)
        reply = client.chat.completions.create(
            model="llama-3.1-8b-instant", messages=HELLO, max_tokens=10
        )
        assert reply.usage is not None
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (36, 3)
        raw = client.chat.completions.with_raw_response.create(
            model="llama3-8b-8192", messages=HELLO, max_tokens=89
        )
        assert raw.headers["x-ratelimit-remaining-tokens"] == "900"
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert [json.loads(line)["status"] for line in log.read_text().splitlines()] == [200, 200]


def test_cli_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenguard.emulator", "--window", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "window must be > 0" in result.stderr
