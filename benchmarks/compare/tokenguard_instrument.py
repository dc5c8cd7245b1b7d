"""(h) tokenguard's ``tg.instrument(client)``: the client's calls guarded, headers read."""

from __future__ import annotations

from typing import Any

import tokenguard as tg

from ._common import async_client, client
from .tokenguard_guard import options
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "tokenguard instrument"
CONFIG = (
    "`tg.instrument(OpenAI(), tpm=6000, rpm=30, window=window, context_window=8192)` "
    "(SDK defaults: the guard sends with max_retries=0 itself); the limiter's defaults "
    "(the refilling bucket)"
)
MODES = ("threads", "tasks")
NEEDS_REDIS = False
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = ("tokenguard_guard", "", "`tg.count_tokens` + max_tokens")
RETRIES = "`retries=attempts-1` (429 retries; its default is no bound)"


def unavailable() -> str | None:
    return None


def count(messages: Messages, model: str) -> int | None:
    return tg.count_tokens(messages, model)


def sync_caller(env: Env) -> SyncCaller:
    c = tg.instrument(client(env), **options(env))

    def call(messages: Messages) -> Any:
        return c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call


def async_caller(env: Env) -> AsyncCaller:
    c = tg.instrument(async_client(env), **options(env))

    async def call(messages: Messages) -> Any:
        return await c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call
