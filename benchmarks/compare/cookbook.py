"""(b) The OpenAI cookbook's parallel processor, rewritten from its description.

What the cookbook's ``api_request_parallel_processor.py`` describes: request and token
capacities that refill continuously at the per-minute limits, capped at one minute's
worth; each request takes its estimate (prompt counted with cl100k_base at 4 tokens per
message plus 2 for the reply's priming, plus ``max_tokens`` x n) before it is sent and
nothing is given back; after a 429 every worker pauses a fixed 15 s (a quarter of the
minute: scaled here to a quarter of the window) and the failed request is retried, up to
5 attempts. The SDK's own retries are off, as the cookbook sends raw HTTP.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import openai

from ._common import async_client, client
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "cookbook parallel processor"
CONFIG = (
    "own code from the cookbook's description: token + request capacity refilled at the "
    "limits (capped at one window), cl100k estimate + max_tokens taken before sending, "
    "never given back; requests sent in order; a 429 pauses all workers a quarter window; "
    "5 attempts (a retry queues again); full limits"
)
MODES = ("threads", "tasks")
NEEDS_REDIS = False
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = ("cookbook", "", "cl100k + 4 per message, + max_tokens")
RETRIES = "`attempts` in place of its 5"
POLL = 0.005  # the cookbook loops every 1 ms; 5 ms spares this 2-core machine
ATTEMPTS = 5


def unavailable() -> str | None:
    return None


def count(messages: Messages, model: str) -> int | None:
    from tokenguard._tokenizer_data import get_encoding

    enc = get_encoding("cl100k_base")
    n = 0
    for m in messages:
        n += 4
        for k, v in m.items():
            n += len(enc.encode(str(v)))
            if k == "name":
                n -= 1
    return n + 2


class _Capacity:
    """The processor's capacity counters, served in order: its one dispatch loop sends
    the next request only when there is room for it, so a large request is not passed by
    smaller ones (tickets give the workers here the same order)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.tokens = float(env.tpm)
        self.requests = float(env.rpm)
        self.last = time.monotonic()
        self.pause_until = 0.0
        self.lock = threading.Lock()
        self.issued = 0
        self.serving = 0

    def ticket(self) -> int:
        with self.lock:
            self.issued += 1
            return self.issued - 1

    def take(self, ticket: int, need: int) -> float:
        """0 when taken, else how long to sleep before trying again."""
        with self.lock:
            now = time.monotonic()
            dt, self.last = now - self.last, now
            self.tokens = min(self.env.tpm, self.tokens + dt * self.env.tpm / self.env.window)
            self.requests = min(self.env.rpm, self.requests + dt * self.env.rpm / self.env.window)
            if now < self.pause_until:
                return self.pause_until - now
            if ticket == self.serving and self.requests >= 1 and self.tokens >= need:
                self.requests -= 1
                self.tokens -= need
                self.serving += 1
                return 0.0
            return POLL

    def saw_429(self) -> None:
        with self.lock:
            self.pause_until = time.monotonic() + self.env.window / 4


def sync_caller(env: Env) -> SyncCaller:
    c = client(env, max_retries=0)
    cap = _Capacity(env)

    def call(messages: Messages) -> Any:
        need = (count(messages, env.model) or 0) + env.max_tokens
        attempts = env.attempts or ATTEMPTS
        for attempt in range(attempts):
            ticket = cap.ticket()  # a retry queues again, behind the requests waiting
            while (wait := cap.take(ticket, need)) > 0:
                time.sleep(wait)
            try:
                return c.chat.completions.create(
                    model=env.model,
                    messages=messages,
                    **env.request(),
                )
            except openai.RateLimitError:
                cap.saw_429()
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    return call


def async_caller(env: Env) -> AsyncCaller:
    c = async_client(env, max_retries=0)
    cap = _Capacity(env)

    async def call(messages: Messages) -> Any:
        need = (count(messages, env.model) or 0) + env.max_tokens
        attempts = env.attempts or ATTEMPTS
        for attempt in range(attempts):
            ticket = cap.ticket()
            while (wait := cap.take(ticket, need)) > 0:  # noqa: ASYNC110 (the cookbook polls)
                await asyncio.sleep(wait)
            try:
                return await c.chat.completions.create(
                    model=env.model,
                    messages=messages,
                    **env.request(),
                )
            except openai.RateLimitError:
                cap.saw_429()
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    return call
