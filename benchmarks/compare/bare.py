"""(a) The bare openai SDK with its own retries (defaults: 2 retries, honouring retry-after)."""

from __future__ import annotations

from typing import Any

from ._common import async_client, client
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "openai SDK alone"
CONFIG = "`openai.OpenAI()` defaults: `max_retries=2`, waits the server's `retry-after` on 429"
MODES = ("threads", "tasks")
NEEDS_REDIS = False
RETRIES = "`max_retries=attempts-1`"


def unavailable() -> str | None:
    return None


def sync_caller(env: Env) -> SyncCaller:
    c = client(env, max_retries=env.retries(2))

    def call(messages: Messages) -> Any:
        return c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call


def async_caller(env: Env) -> AsyncCaller:
    c = async_client(env, max_retries=env.retries(2))

    async def call(messages: Messages) -> Any:
        return await c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call


def count(messages: Messages, model: str) -> int | None:
    return None
