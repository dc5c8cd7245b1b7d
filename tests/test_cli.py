"""The ``tokenguard`` command, tried as a new user would: each command as a subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from emulator_support import Serve

from tokenguard import __version__, count_request, count_tokens, get_model
from tokenguard.cli._plot import replay
from tokenguard.models import unseen_prompt_allowance


def run(
    *args: str, stdin: str | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GROQ_API_KEY"}
    env["CI"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "tokenguard.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        cwd=cwd,
    )


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "How many tokens is this?"},
]


# -- manners -----------------------------------------------------------------------------


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"tokenguard {__version__}"


@pytest.mark.parametrize("command", ["demo", "count", "report"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    done = run(command, "--help")
    assert done.returncode == 0
    assert "examples:" in done.stdout
    assert f"tokenguard {command}" in done.stdout.split("examples:", 1)[1]


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    done = run("count", "x.json", "--max-tokens", "zero")
    assert done.returncode == 2
    assert "positive integer" in done.stderr


# -- count -----------------------------------------------------------------------------


def test_count_a_messages_list_from_stdin() -> None:
    done = run(
        "count", "-", "--model", "llama3-8b-8192", "--max-tokens", "100", stdin=json.dumps(MESSAGES)
    )
    assert done.returncode == 0, done.stderr
    n = count_tokens(MESSAGES, model="llama3-8b-8192")
    assert f"<stdin>: {n} prompt tokens (exact) for llama3-8b-8192: 2 messages" in done.stdout
    assert f"with max_tokens=100: {n + 100} tokens requested" in done.stdout
    assert "fits the context window of 8,192" in done.stdout
    assert "fits the limit of 6,000 tokens per minute" in done.stdout


def test_count_json_for_a_body_that_does_not_fit(tmp_path: Path) -> None:
    # No blank at either end: whether Groq trims content is not confirmed, so such text
    # would be counted both ways and reported as a bound.
    messages = [{"role": "user", "content": "word " * 4999 + "word"}]
    path = tmp_path / "big.json"
    path.write_text(
        json.dumps({"model": "llama3-8b-8192", "messages": messages, "max_tokens": 2000})
    )
    done = run("count", str(path), "--json")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    prompt = count_tokens(messages, model="llama3-8b-8192")
    assert doc["prompt_tokens"] == prompt
    assert doc["exact"] is True
    assert doc["total"] == prompt + 2000
    assert doc["over_tpm"] == prompt + 2000 - 6000
    assert doc["over_context"] == max(0, prompt + 2000 - 8192)
    assert doc["fits"] is False
    assert doc["template_overhead"] + 0 < doc["prompt_tokens"]
    text = run("count", str(path)).stdout
    assert (
        f"does NOT fit the limit of 6,000 tokens per minute: {prompt + 2000 - 6000:,} too many"
        in text
    )


def test_count_context_window_overflow(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "word " * 9000}]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(messages))
    done = run("count", str(path), "--model", "llama3-8b-8192", "--json")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["over_context"] == count_tokens(messages, model="llama3-8b-8192") - 8192


def test_count_shows_the_allowance_the_guard_reserves_for_compound_tools(tmp_path: Path) -> None:
    path = tmp_path / "compound.json"
    path.write_text(json.dumps({"model": "groq/compound", "messages": MESSAGES}))
    done = run("count", str(path), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rc = count_request(MESSAGES, "groq/compound")
    allowance = unseen_prompt_allowance(
        get_model("groq/compound"), rc.prompt_tokens, rc.prompt_tokens
    )
    assert allowance > 0
    assert doc["unseen_prompt_allowance"] == allowance
    assert doc["total"] == rc.prompt_tokens + allowance + 1024
    text = run("count", str(path)).stdout
    # Not "conservative": the count is far below what the server's tools add to the bill.
    assert "conservative" not in text
    assert f"{rc.prompt_tokens} prompt tokens (estimate of what is sent)" in text
    assert f"+ {allowance:,} tokens the guard reserves for prompt text the server's tools" in text
    assert f"{doc['total']:,} tokens the guard reserves" in text


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        ([], None, "fits the limit of 6,000 tokens per minute (the free tier)"),
        (["--tier", "developer"], None, "250,000 tokens per minute (the developer tier)"),
        ([], "developer", "250,000 tokens per minute (the developer tier)"),
        (
            ["--tier", "developer", "--model", "meta-llama/llama-4-scout-17b-16e-instruct"],
            None,
            "30,000 tokens per minute (the free tier's: the developer tier's is not published)",
        ),
    ],
)
def test_count_checks_the_tier_s_per_minute_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: str | None, line: str
) -> None:
    request = tmp_path / "hi.json"
    request.write_text(json.dumps([{"role": "user", "content": "Hi"}]))
    monkeypatch.delenv("TOKENGUARD_TIER", raising=False)
    if env is not None:
        monkeypatch.setenv("TOKENGUARD_TIER", env)
    done = run("count", str(request), *args)
    assert done.returncode == 0, done.stderr
    assert line in done.stdout


def test_count_refuses_a_tier_the_variable_cannot_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = tmp_path / "hi.json"
    request.write_text(json.dumps([{"role": "user", "content": "Hi"}]))
    monkeypatch.setenv("TOKENGUARD_TIER", "bogus")
    done = run("count", str(request))
    assert done.returncode == 2
    assert "$TOKENGUARD_TIER must be one of ['free', 'developer']" in done.stderr


def test_the_guide_shows_what_count_prints_for_compound(tmp_path: Path) -> None:
    guide = Path(__file__).parent.parent / "docs" / "guide" / "cli.md"
    shown = guide.read_text("utf-8").split("```text\n", 1)[1].split("```", 1)[0]
    body = {"model": "groq/compound", "messages": [{"role": "user", "content": "Hi"}]}
    (tmp_path / "compound.json").write_text(json.dumps(body))
    done = run("count", "compound.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown


def test_count_takes_the_compound_allowance_from_the_model_table(tmp_path: Path) -> None:
    path = tmp_path / "compound.json"
    path.write_text(json.dumps({"model": "groq/compound", "messages": MESSAGES}))

    def count(*options: str) -> subprocess.CompletedProcess[str]:
        # The command where the table entry has another allowance (as a user registers it).
        code = (
            "import tokenguard as tg; "
            "tg.register_model('groq/compound', unseen_prompt_tokens=69_000); "
            "from tokenguard.cli import main; "
            f"raise SystemExit(main(['count', {str(path)!r}, *{options!r}]))"
        )
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )

    done = count("--json")
    # 69,000 on top of the prompt and the 1,024 reserved: over the free tier's 70,000.
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["unseen_prompt_allowance"] == 69_000
    assert doc["over_tpm"] == doc["total"] - 70_000 > 0
    assert doc["refused"] is None  # the server's 413 is about what is sent
    assert doc["fits"] is False
    assert (
        "does NOT fit the limit of 70,000 tokens per minute with the allowance: "
        f"{doc['over_tpm']:,} too many (the guard could never admit it)"
    ) in count().stdout


def test_count_jsonl_of_lists_and_bodies(tmp_path: Path) -> None:
    path = tmp_path / "reqs.jsonl"
    lines = [json.dumps(MESSAGES), json.dumps({"model": "llama3-8b-8192", "messages": MESSAGES})]
    path.write_text("\n".join(lines) + "\n")
    done = run("count", str(path), "--json")
    assert done.returncode == 0, done.stderr
    docs = json.loads(done.stdout)
    assert [d["source"] for d in docs] == [f"{path}:1", f"{path}:2"]
    assert docs[1]["model"] == "llama3-8b-8192"
    assert docs[1]["prompt_tokens"] == count_tokens(MESSAGES, model="llama3-8b-8192")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("not json", "is not JSON"),
        ('[{"content": "no role"}]', "messages[0]"),
        ('"a string"', "expected a list of messages or a request body"),
        ('{"model": "llama3-8b-8192"}', "needs a 'messages' list"),
        ('[{"role": "user", "content": "ok"}]\n{oops\n', "line 2: not JSON"),
        # Lines are counted as written, blank ones included.
        ('\n[{"role": "user", "content": "ok"}]\n\n{oops\n', "line 4: not JSON"),
        ("", "has no request: it is empty"),
        ("\n\n", "has no request: it is only blank lines"),
        # One document cut short: its last line, not the one after the final newline.
        ('{"messages": [{"role": "user", "content": "Hi"}]\n', "at the end of the text (line 1)"),
        # A pretty-printed body with an error on line 3 is one document, not JSON Lines.
        ('{\n  "messages": [\n    {"role": "user" "content": "x"}\n  ]\n}\n', "line 3, column 21"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_count_reports_bad_files_clearly(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, "utf-8")
    done = run("count", str(path))
    assert done.returncode == 2
    assert error in done.stderr
    assert str(path) in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("content", "got"),
    [
        ("null", "null"),
        ("42", "a number (42)"),
        ("2.5", "a number with a fraction or exponent (2.5)"),
        ('"hello"', 'a string ("hello")'),
        ("true", "true"),
    ],
)
def test_count_names_a_file_that_is_not_a_request_in_json_terms(
    tmp_path: Path, content: str, got: str
) -> None:
    path = tmp_path / "req.json"
    path.write_text(content)
    done = run("count", str(path))
    assert done.returncode == 2
    assert done.stderr.endswith(
        f'a request body ({{"model": ..., "messages": [...]}}), got {got}\n'
    )


@pytest.mark.parametrize(
    ("field", "value", "got"),
    [
        ("max_tokens", "100", 'got a string ("100")'),
        ("max_tokens", 1.5, "got a number with a fraction or exponent (1.5)"),
        ("max_tokens", True, "got true"),
        ("max_tokens", 1e3, "got a number with a fraction or exponent (1000.0)"),
        ("max_tokens", -5, "got a number (-5)"),
        ("max_completion_tokens", "100", 'got a string ("100")'),
        # The field the file used is named, not the one it is read as.
        ("max_completion_tokens", 0, "got a number (0)"),
    ],
)
def test_count_refuses_a_completion_cap_that_is_not_a_positive_integer(
    tmp_path: Path, field: str, value: object, got: str
) -> None:
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"messages": MESSAGES, field: value}))
    # --max-tokens overrides the file's cap, but does not make a wrong file right.
    for extra in ([], ["--max-tokens", "10"]):
        done = run("count", str(path), *extra)
        assert done.returncode == 2, done.stdout
        assert done.stderr == (
            f"tokenguard count: {path}: {field} must be an integer >= 1 or null, {got}\n"
        )


@pytest.mark.parametrize(
    ("value", "got"),
    [(42, "a number (42)"), (["llama3-8b-8192"], "an array"), ("", 'a string ("")')],
)
def test_count_refuses_a_model_that_is_not_a_name(tmp_path: Path, value: object, got: str) -> None:
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"model": value, "messages": MESSAGES}))
    done = run("count", str(path))
    assert done.returncode == 2, done.stdout
    assert done.stderr == (
        f"tokenguard count: {path}: model must be a model name (a non-empty string), got {got}\n"
    )


def test_count_reads_null_fields_as_not_given(tmp_path: Path) -> None:
    path = tmp_path / "req.json"
    body = {"model": None, "messages": MESSAGES, "max_tokens": None}
    path.write_text(json.dumps(body))
    done = run("count", str(path), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["model"], doc["max_tokens"], doc["reserve"]) == ("llama-3.1-8b-instant", None, 1024)


def test_count_missing_file() -> None:
    done = run("count", "/nonexistent/req.json")
    assert done.returncode == 2
    assert "cannot read /nonexistent/req.json: no such file" in done.stderr


# -- report ------------------------------------------------------------------------------


def _request(model: str, t: float, **over: Any) -> str:
    doc: dict[str, Any] = {
        "ts": t,
        "event": "tokenguard.guard.request",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "tokenguard.estimated_tokens": 356,
        "tokenguard.completion_reserve": 256,
        "tokenguard.limit_tokens": 120,
        "tokenguard.wait_s": 0.0,
        "tokenguard.retries": 0,
        "tokenguard.fit": "none",
    }
    doc.update(over)
    return json.dumps(doc)


def test_report_totals_skips_and_malformed_lines(tmp_path: Path) -> None:
    lines = [
        _request("m-a", 1.0),
        _request("m-a", 2.0, **{"tokenguard.wait_s": 3.0, "tokenguard.retries": 1}),
        json.dumps(
            {"ts": 1.5, "event": "tokenguard.guard.retry", "model": "m-a", "kind": "rate_limited"}
        ),
        _request("m-b", 3.0, **{"tokenguard.estimated_tokens": 361}),
        json.dumps({"event": "http.access", "path": "/"}),
        "",
        "{broken",
        "[1, 2]",
        json.dumps({"event": "tokenguard.guard.request", "tokenguard.estimated_tokens": 1}),
        _request("m-b", 4.0, **{"error.type": "RateLimitError", "gen_ai.usage.input_tokens": None}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = run("report", str(path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    a, b = out.split("m-b\n")
    assert re.search(r"calls\s+2\n", a)
    assert re.search(r"tokens in\s+200\n", a)
    assert "pre-flight vs server  2/2 exact" in a
    assert "p50 0.00 s, p99 3.00 s" in a
    assert "retries               1 (1 after a 429)" in a
    assert "calls                 2 (1 failed)" in b
    assert "0/1 exact (up to 5 over)" in b
    assert "refusals              1 (RateLimitError 1)" in b
    assert "skipped 1 lines that are not tokenguard events" in out
    assert "3 malformed lines skipped:" in out
    assert f"{path}, line 7: not JSON" in out
    assert f"{path}, line 8: an array, not an object" in out
    assert f"{path}, line 9: tokenguard.guard.request without a 'gen_ai.request.model'" in out
    as_json = json.loads(run("report", str(path), "--json").stdout)
    assert as_json["models"]["m-a"]["rate_limited"] == 1
    assert [m["line"] for m in as_json["malformed"]] == [7, 8, 9]


def test_report_missing_file_and_bad_window() -> None:
    done = run("report", "/nonexistent/events.jsonl")
    assert done.returncode == 2
    assert "cannot read /nonexistent/events.jsonl" in done.stderr
    assert run("report", "-", "--window", "0", stdin="").returncode == 2


@pytest.mark.parametrize(
    ("name", "magic"),
    [
        ("out.png", b"\x89PNG\r\n\x1a\n"),
        ("out.svg", b"<?xml"),
        ("out.pdf", b"%PDF-"),
        ("OUT.JPG", b"\xff\xd8\xff"),
    ],
)
def test_report_plot_is_written_in_the_format_its_extension_names(
    tmp_path: Path, name: str, magic: bytes
) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(_request("llama3-8b-8192", float(t)) for t in range(20)) + "\n")
    out = tmp_path / name
    done = run("report", str(path), "--window", "5", "--plot", str(out))
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert data.startswith(magic)
    assert len(data) > 10_000


@pytest.mark.parametrize(("name", "got"), [("out.txt", "got '.txt'"), ("out", "got no extension")])
def test_report_plot_to_a_format_matplotlib_does_not_write_is_refused_first(
    tmp_path: Path, name: str, got: str
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / name
    # The log does not exist: the plot's name is refused before anything is read.
    done = run("report", str(tmp_path / "missing.jsonl"), "--plot", str(out))
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"tokenguard report: --plot {out}: the extension names the image format; expected one of "
    )
    assert ".pdf, .png" in done.stderr
    assert ".svg" in done.stderr
    assert done.stderr.endswith(f", {got}\n")
    assert not out.exists()


def test_replay_takes_each_estimate_when_sent_and_refills_to_the_capacity() -> None:
    # 6,000 tokens refilled per 60 s: 100 a second.
    over = replay([(0.0, 4000), (1.0, 4000)], capacity=6000, window=60, end=2.0)
    assert list(zip(over.xs, over.ys, strict=True)) == [
        (0.0, 6000.0), (0.0, 6000.0), (0.0, 2000.0), (1.0, 2100.0), (1.0, -1900.0),
        (2.0, -1800.0),
    ]  # fmt: skip
    assert over.lowest == -1900  # the server would have refused the second call
    full = replay([(0.0, 3000)], capacity=6000, window=60, end=40.0)
    assert list(zip(full.xs, full.ys, strict=True)) == [
        (0.0, 6000.0), (0.0, 6000.0), (0.0, 3000.0), (30.0, 6000.0), (40.0, 6000.0),
    ]  # fmt: skip


def test_report_plot_takes_the_window_and_limit_from_the_log(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    limits = {"ts": 0.5, "event": "tokenguard.limiter.limits", "window_s": 2.0, "tpm": 900}
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(limits)] + [_request("my-model", float(t)) for t in range(1, 4)]
    path.write_text("\n".join(lines) + "\n")
    done = run("report", str(path), "--plot", str(tmp_path / "a.png"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("limits: 900 tokens per 2 s (the log's limiter)\n")
    # Three calls of 356 tokens a second apart, 450 refilled a second: the bucket is full
    # again before each call, so it never holds less than 900 - 356.
    assert "3 calls over 3 s through a 900-token bucket per 2 s, lowest 544" in done.stdout
    done = run("report", str(path), "--plot", str(tmp_path / "b.png"), "--tpm", "600")
    # 300 a second: 600 - 356 = 244, then 244 + 300 - 356 = 188, then 188 + 300 - 356.
    assert "through a 600-token bucket per 2 s, lowest 132" in done.stdout


def test_report_plot_without_a_known_limit_says_to_pass_tpm(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "events.jsonl"
    path.write_text(_request("my-model", 1.0) + "\n")
    done = run("report", str(path), "--plot", str(tmp_path / "a.png"))
    assert done.returncode == 2
    assert "no token limit to plot against" in done.stderr
    assert "pass --tpm" in done.stderr


def test_report_plot_without_matplotlib_says_how_to_install(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(_request("m", 1.0) + "\n")
    # The same command in an interpreter where matplotlib cannot be imported.
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from tokenguard.cli import main; "
        f"raise SystemExit(main(['report', {str(path)!r}, '--plot', 'x.png']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "pip install 'groq-tokenguard[plot]'" in done.stderr
    assert "Traceback" not in done.stderr


# -- demo --------------------------------------------------------------------------------


def _summary(out: str) -> dict[str, str]:
    rows = out.split("\nsummary\n", 1)[1].split("\nevents:", 1)[0]
    found: dict[str, str] = {}
    for line in rows.splitlines():
        match = re.match(r"\s+(.+?)\s{2,}(.+)", line)
        assert match is not None, line
        found[match.group(1)] = match.group(2)
    return found


@pytest.mark.slow
def test_demo_through_the_guard_then_report(tmp_path: Path) -> None:
    log = tmp_path / "demo.jsonl"
    # A one-second "minute": the limiter still holds requests, the run stays short.
    done = run("demo", "--window", "1", "--events", str(log), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "server: the embedded Groq emulator" in out
    # Nothing from the library beyond the demo's own display (its 429s, retries and fits
    # are warnings and info events: they go to the display and the log only).
    assert done.stderr == ""
    assert not re.search(r"^\S*tokenguard\.\w+\.\w+", out, re.MULTILINE)
    assert "gen_ai." not in out
    s = _summary(out)
    assert s["refusals that reached the caller"] == "0"
    calls = int(s["calls through the guard"])
    assert s["pre-flight count = server's usage"] == f"{calls}/{calls} calls"
    assert re.match(
        r"[1-9]\d* truncated, [1-9]\d* summarized \([1-9]\d* summary calls\)", s["fits"]
    )
    # The burst was held for the room the unguarded client left: by the limiter from the
    # server's headers, or after a 429 the guard absorbed (none reached the caller).
    waited = float(s["time waited (all calls, summed)"].split(" s", 1)[0])
    assert waited > 0 or int(s["429s absorbed by the guard"]) >= 1
    assert re.match(r"3 sent, \d+ refused", s["unguarded client"])
    assert f"events: {log}" in out
    # The window is in the log: the command the demo suggests needs no --window.
    assert f"next:   tokenguard report {log}" in out

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(r["event"].startswith("tokenguard.") and isinstance(r["ts"], float) for r in records)
    # The limiter ran on the one-second window asked for (what keeps the run short).
    assert {r["window_s"] for r in records if r["event"] == "tokenguard.limiter.limits"} == {1.0}
    requests = [r for r in records if r["event"] == "tokenguard.guard.request"]
    assert len(requests) == calls
    assert all("error.type" not in r for r in requests)
    for r in requests:
        counted = r["tokenguard.estimated_tokens"] - r["tokenguard.completion_reserve"]
        assert counted == r["gen_ai.usage.input_tokens"]
    assert sum(r["gen_ai.usage.input_tokens"] for r in requests) == int(
        s["tokens in / out"].split(" / ")[0].replace(",", "")
    )
    assert not any("content" in key for r in records for key in r)

    limits = [r for r in records if r["event"] == "tokenguard.limiter.limits"]
    assert [(r["window_s"], r["tpm"], r["rpm"]) for r in limits] == [(1.0, 6000, 30)]
    report = run("report", str(log))
    assert report.returncode == 0, report.stderr
    assert re.search(rf"calls\s+{calls}\n", report.stdout)
    assert f"{calls}/{calls} exact" in report.stdout
    assert "malformed" not in report.stdout
    assert "refusals              0" in report.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        plotted = run("report", str(log), "--plot", str(tmp_path / "demo.png"))
        assert plotted.returncode == 0, plotted.stderr
        # The bucket of the run's limits, refilled per its 1-second window.
        assert f"{calls} calls over" in plotted.stdout
        assert "through a 6,000-token bucket per 1 s" in plotted.stdout


def test_demo_port_busy_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("demo", "--port", str(port), "--events", str(tmp_path / "e.jsonl"))
    assert done.returncode == 2
    assert f"cannot start the emulator on port {port}" in done.stderr
    assert "--port 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_server_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    done = run(
        "demo",
        "--base-url",
        f"http://127.0.0.1:{port}/openai/v1",
        "--events",
        str(tmp_path / "e.jsonl"),
    )
    assert done.returncode == 1
    assert "cannot reach the server" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_a_server_that_refuses_the_model_is_a_clear_error(
    tmp_path: Path, serve: Serve
) -> None:
    em = serve(model="llama-3.1-8b-instant")  # not the demo's model: 404 model_not_found
    done = run("demo", "--base-url", em.base_url, "--events", str(tmp_path / "e.jsonl"))
    assert done.returncode == 1
    assert "tokenguard demo: the server answered 404" in done.stderr
    assert "llama3-8b-8192" in done.stderr
    assert "Traceback" not in done.stderr
    assert "events: " in done.stdout  # the event log is still closed and named


def _sigint_as_in_the_foreground() -> None:
    # Ctrl-C reaches a program started from a terminal, whose SIGINT is at its default.
    # A shell starts background jobs (`bash scripts/check &`, setsid, CI runners) with
    # SIGINT ignored, and children inherit that: reset it in the child before exec, so
    # the demo meets the signal as a user's Ctrl-C, wherever the suite runs.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_ctrl_c_exits_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GROQ_API_KEY"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenguard.cli",
            "demo",
            "--plain",
            "--events",
            str(tmp_path / "e.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_sigint_as_in_the_foreground,
    )
    assert proc.stdout is not None
    # Interrupt once the first guarded call has gone through (the second then waits).
    for line in proc.stdout:
        if "call   1" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err
    assert "summary" in out
