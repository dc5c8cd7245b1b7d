"""Many connections at once: no hangs, no lost answers, never more admitted than allowed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from emulator_support import HELLO, client_for

from tokenguard.emulator import max_requests_in_any_window, max_tokens_in_any_window, running

MODEL = "llama3-8b-8192"


async def test_64_asyncio_tasks_share_one_pooled_client() -> None:
    with running(model=MODEL, tpm=0, rpm=0, tpd=0, rpd=0, latency=0.02) as em:
        async with openai.AsyncOpenAI(
            base_url=em.base_url, api_key="x", max_retries=0, timeout=30
        ) as client:

            async def one(i: int) -> int:
                if i % 2:
                    stream = await client.chat.completions.create(
                        model=MODEL, messages=HELLO, max_tokens=4, stream=True
                    )
                    return len([c async for c in stream])
                reply = await client.chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=4
                )
                assert reply.usage is not None
                return reply.usage.completion_tokens

            results = await asyncio.gather(*(one(i) for i in range(64)))
    # A stream is the role chunk, one chunk per token, and the final chunk.
    assert results == [4 if i % 2 == 0 else 6 for i in range(64)]
    assert len(em.log) == 64
    assert all(r.status == 200 for r in em.log)


def test_16_threads_with_rate_limits_never_exceed_the_buckets() -> None:
    tpm, rpm, window = 3000, 40, 0.5
    with running(model=MODEL, tpm=tpm, rpm=rpm, window=window) as em:
        client = client_for(em, timeout=30)

        def worker(_: int) -> list[int]:
            statuses = []
            for _ in range(12):
                try:
                    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=89)
                    statuses.append(200)
                except openai.RateLimitError as exc:
                    retry_after = int(exc.response.headers["retry-after"])
                    assert retry_after >= 1
                    statuses.append(429)
            return statuses

        with ThreadPoolExecutor(16) as pool:
            statuses = [s for batch in pool.map(worker, range(16)) for s in batch]
    assert len(statuses) == 16 * 12
    assert 200 in statuses
    log = em.log
    assert len(log) == len(statuses)
    assert sorted(r.status for r in log) == sorted(statuses)
    # A token bucket admits at most capacity + refill over any interval, whatever the timing.
    for span in (window / 4, window, 2 * window):
        assert max_tokens_in_any_window(log, span) <= tpm + tpm * span / window + 1e-6
        assert max_requests_in_any_window(log, span) <= rpm + rpm * span / window + 1e-6


def test_log_file_gets_one_json_line_per_request(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    with running(model=MODEL, rpm=1, log_path=str(path)) as em:
        client = client_for(em)
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        with contextlib.suppress(openai.RateLimitError):
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        # Each line is flushed as it is written, so it is readable while serving.
        lines = path.read_text().splitlines()
        assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["status"] == 200
    assert (first["prompt_tokens"], first["requested_tokens"], first["completion_tokens"]) == (
        11,
        13,
        2,
    )
    assert (second["status"], second["error"], second["limit"]) == (
        429,
        "rate_limit_exceeded",
        "RPM",
    )
    assert first["t"] <= second["t"]
