"""Counting says what the server will reserve: a request without ``max_tokens`` costs its
prompt and the reserve the server holds for it, and ``count_request`` / ``tokenguard
count`` say "refused: 413" exactly where the emulator refuses it, through the real
openai and groq SDKs over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import groq
import openai
import pytest

import tokenguard as tg
from tokenguard.emulator import Emulator, running
from tokenguard.emulator._config import DEFAULT_MAX_TOKENS

MODEL = "llama-3.1-8b-instant"  # exact counting; the free tier's TPM is 6,000
TPM = 6_000


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running(model=MODEL, tpm=TPM, rpm=0, tpd=0, rpd=0) as em:
        yield em


def _messages(words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["word"] * words)}]


def _status(call: object) -> int:
    try:
        call()  # type: ignore[operator]
    except (openai.APIStatusError, groq.APIStatusError) as exc:
        return exc.status_code
    return 200


def test_the_reserve_counted_is_what_the_emulator_holds() -> None:
    assert tg.models.DEFAULT_RESERVE == DEFAULT_MAX_TOKENS
    rc = tg.count_request(_messages(10), model=MODEL)
    assert rc.completion_reserve == tg.models.DEFAULT_RESERVE
    assert rc.total == rc.prompt_tokens + tg.models.DEFAULT_RESERVE


@pytest.mark.parametrize("sdk", ["openai", "groq"])
def test_refused_413_exactly_where_the_emulator_refuses(emulator: Emulator, sdk: str) -> None:
    client: openai.OpenAI | groq.Groq
    if sdk == "openai":
        client = openai.OpenAI(base_url=emulator.base_url, api_key="t", max_retries=0)
    else:
        client = groq.Groq(base_url=emulator.root_url, api_key="t", max_retries=0)
    # Around the edge: prompt + 1,024 reserved against 6,000 (one "word" is one token).
    edge = TPM - tg.models.DEFAULT_RESERVE
    seen = set()
    for words in (edge - 40, edge - 13, edge - 12, edge - 11, edge - 10, edge + 5, edge + 500):
        messages = _messages(words)
        rc = tg.count_request(messages, model=MODEL)
        status = _status(lambda m=messages: client.chat.completions.create(model=MODEL, messages=m))
        # A 429 (the bucket spent by the request before) is not a refusal of the size.
        served = status in (200, 429)
        assert (rc.refusal(TPM) is None) == served, (words, rc, status)
        assert rc.refusal() == rc.refusal(TPM)  # the model table's free tier: 6,000
        seen.add(served)
    assert seen == {True, False}  # both sides of the edge were tried


def test_tokenguard_count_says_refused_413_without_max_tokens(tmp_path: Path) -> None:
    prompt_words = TPM - tg.models.DEFAULT_RESERVE + 100  # fits 6,000 alone, not with the reserve
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"model": MODEL, "messages": _messages(prompt_words)}))
    env = {k: v for k, v in os.environ.items() if k != "GROQ_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "tokenguard.cli", "count", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    rc = tg.count_request(_messages(prompt_words), model=MODEL)
    assert rc.prompt_tokens < TPM < rc.total
    assert f"the server reserves 1,024 completion tokens, {rc.total:,} tokens requested" in (
        done.stdout
    )
    assert "refused: 413" in done.stdout
    doc = json.loads(
        subprocess.run(
            [sys.executable, "-m", "tokenguard.cli", "count", str(path), "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        ).stdout
    )
    assert (doc["reserve"], doc["total"], doc["refused"], doc["fits"]) == (
        1024,
        rc.total,
        413,
        False,
    )
