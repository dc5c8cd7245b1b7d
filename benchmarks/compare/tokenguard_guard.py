"""(g) tokenguard's ``@tg.guard`` on the caller's function, in-memory limiter.

Configured as the README says for a decorated function: the SDK's ``max_retries=0`` so
the guard owns 429s; the limits and window given explicitly (the scaled window).
"""

from __future__ import annotations

from typing import Any

import tokenguard as tg

from ._common import async_client, client
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "tokenguard @guard"
CONFIG = (
    "`@tg.guard(tpm=6000, rpm=30, window=window, context_window=8192)` on a function "
    "calling `OpenAI(max_retries=0)`; the limiter's defaults (the refilling bucket)"
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


def options(env: Env) -> dict[str, Any]:
    # The library's default (no bound on 429 retries) unless the run sets a common budget.
    common: dict[str, Any] = {"context_window": env.context}
    if env.tier != "free":  # its model table's day limits are the free tier's by default
        common["tier"] = env.tier
    if env.attempts is not None:
        common["retries"] = env.attempts - 1
    if env.tg_algorithm:  # a limiter built with another algorithm than the default
        lim = tg.Limiter(tpm=env.tpm, rpm=env.rpm, window=env.window, algorithm=env.tg_algorithm)
        return {"limiter": lim, **common}
    return {"tpm": env.tpm, "rpm": env.rpm, "window": env.window, **common}


def sync_caller(env: Env) -> SyncCaller:
    c = client(env, max_retries=0)
    extra = {k: v for k, v in env.request().items() if k != "max_tokens"}  # stream or not

    @tg.guard(**options(env))
    def ask(messages: Messages, model: str = env.model, max_tokens: int = env.max_tokens) -> Any:
        return c.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            **extra,
        )

    return ask


def async_caller(env: Env) -> AsyncCaller:
    c = async_client(env, max_retries=0)
    extra = {k: v for k, v in env.request().items() if k != "max_tokens"}

    @tg.guard(**options(env))
    async def ask(
        messages: Messages, model: str = env.model, max_tokens: int = env.max_tokens
    ) -> Any:
        return await c.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            **extra,
        )

    return ask
