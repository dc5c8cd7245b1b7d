"""The ``tokenguard`` command, tried as a new user would: demo and count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenguard import count_tokens
from tokenguard.cli import main


def test_demo_against_the_embedded_emulator(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    # A one-second window keeps the run short while still making the limiter hold requests.
    assert main(["demo", "--turns", "6", "--window", "1"]) == 0
    out = capsys.readouterr().out
    assert "the embedded Groq emulator" in out
    rows = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert len(rows) == 6
    for row in rows:
        counted, server, match = int(row[1]), int(row[2]), row[3]
        assert counted == server
        assert match == "yes"
    assert "matched the server on 6/6 calls" in out
    # Six requests of ~1,300 tokens do not fit one 6,000-token window: some were held.
    assert sum(float(row[5]) for row in rows) > 0


def test_count_a_request_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "How many tokens is this?"},
    ]
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"messages": messages, "max_tokens": 100}), "utf-8")
    assert main(["count", str(path), "--model", "llama3-8b-8192"]) == 0
    out = capsys.readouterr().out
    expected = count_tokens(messages, model="llama3-8b-8192")
    assert f"{expected} prompt tokens (exact) for llama3-8b-8192" in out
    assert f"{expected + 100} tokens requested with max_tokens=100" in out


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("not json", "is not JSON"),
        ('[{"content": "no role"}]', "messages[0]"),
        ('"a string"', "list"),
    ],
)
def test_count_reports_bad_files_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, error: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, "utf-8")
    assert main(["count", str(path)]) != 0
    assert error in capsys.readouterr().err


def test_count_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "/nonexistent/req.json"]) == 2
    assert "cannot read /nonexistent/req.json" in capsys.readouterr().err
