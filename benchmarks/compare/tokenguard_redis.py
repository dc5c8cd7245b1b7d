"""(i) tokenguard on Redis: several processes, each instrumenting its own client, sharing
one ``tg.Limiter(redis=...)``."""

from __future__ import annotations

from typing import Any

import tokenguard as tg

from ._common import async_client, client
from .tokenguard_guard import options
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "tokenguard Redis"
CONFIG = (
    "`tg.instrument(OpenAI(), limiter=tg.Limiter(tpm=6000, rpm=30, window=window, "
    "redis=redis.Redis.from_url(url), key=...), context_window=8192)` in each process; "
    "the limiter's defaults (the refilling bucket)"
)
MODES = ("processes", "tasks")
NEEDS_REDIS = True
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = ("tokenguard_guard", "", "`tg.count_tokens` + max_tokens")
RETRIES = "`retries=attempts-1` (429 retries; its default is no bound)"


def unavailable() -> str | None:
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        return f"redis client not installed ({exc})"
    return None


def count(messages: Messages, model: str) -> int | None:
    return tg.count_tokens(messages, model)


def _limiter(env: Env) -> tg.Limiter:
    import redis

    assert env.redis_url is not None
    # The library's defaults unless a run asks for another algorithm (an extra row).
    extra: dict[str, Any] = {"algorithm": env.tg_algorithm} if env.tg_algorithm else {}
    return tg.Limiter(
        tpm=env.tpm,
        rpm=env.rpm,
        window=env.window,
        redis=redis.Redis.from_url(env.redis_url),
        key=f"{env.key}-tokenguard",
        **extra,
    )


def _common(env: Env) -> dict[str, Any]:
    out = options(env)  # context window and retries as the in-memory rows have them
    return {k: out[k] for k in ("context_window", "retries") if k in out}


def sync_caller(env: Env) -> SyncCaller:
    c = tg.instrument(client(env), limiter=_limiter(env), **_common(env))

    def call(messages: Messages) -> Any:
        return c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call


def async_caller(env: Env) -> AsyncCaller:
    c = tg.instrument(async_client(env), limiter=_limiter(env), **_common(env))

    async def call(messages: Messages) -> Any:
        return await c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call
