"""Needs the 'redis' extra: pip install 'groq-tokenguard[redis]' (from a clone: '.[redis]').

Several processes, one limit: a Redis limiter shared by 3 worker processes, each
with its own guarded function. Uses REDIS_URL if set, else starts a redis-server.

Runs against Groq when GROQ_API_KEY is set, else against the embedded emulator with
the rate "minute" shortened to 2 seconds.

    python examples/redis_processes.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from openai import OpenAI

import tokenguard as tg

try:
    import redis
except ImportError:
    raise SystemExit(
        "this example needs the redis client, the 'redis' extra: "
        "pip install 'groq-tokenguard[redis]' (from a clone: pip install '.[redis]')"
    ) from None

MODEL = "llama-3.1-8b-instant"


@contextmanager
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "this example needs a Redis server: set REDIS_URL, or install redis-server "
            "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(100):
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait()


def worker(index: int, base_url: str, key: str, url: str, window: float) -> int:
    limiter = tg.Limiter.from_model(
        MODEL, redis=redis.Redis.from_url(url), key="example-team", window=window
    )
    client = OpenAI(base_url=base_url, api_key=key)

    @tg.guard(limiter=limiter)
    def ask(messages: list[Any], model: str = MODEL, max_tokens: int = 400) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    used = 0
    for i in range(6):
        reply = ask([{"role": "user", "content": f"Worker {index}, question {i}: why?"}])
        used += reply.usage.total_tokens
    return used


def main() -> None:
    key = os.environ.get("GROQ_API_KEY")
    with redis_url() as url:
        if key:
            base, window, em_cm = "https://api.groq.com/openai/v1", 60.0, None
        else:
            from tokenguard.emulator import running

            em_cm = running(model=MODEL, window=2.0)
            em = em_cm.__enter__()
            base, key, window = em.base_url, "emulator", 2.0
        try:
            started = time.monotonic()
            with mp.get_context("spawn").Pool(3) as pool:
                used = pool.starmap(worker, [(i, base, key, url, window) for i in range(3)])
            took = time.monotonic() - started
            print(f"3 processes, 18 answers in {took:.1f} s, tokens used per process: {used}")
            if em_cm is not None:
                refused = sum(1 for r in em.log if r.endpoint == "chat" and r.status == 429)
                print(f"server refusals (429): {refused}")
        finally:
            if em_cm is not None:
                em_cm.__exit__(None, None, None)


if __name__ == "__main__":
    main()
