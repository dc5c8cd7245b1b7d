"""(f3) ``token-throttle`` (Redis): reserve before the call, refund after, shared by processes.

Configured from its "any provider" pattern with the per-window quotas its README shows
(``Quota(metric, limit, per_seconds)``), so the window is the emulator's own, scaled or
real: requests and tokens per window, on its synchronous Redis backend. It does not
count: the caller reserves the cookbook's cl100k count + ``max_tokens`` (its OpenAI
counter refuses model names it does not know), then refunds to the response's
``usage`` (prompt + completion). It does not retry; the SDK's retries stay on.
"""

from __future__ import annotations

from typing import Any

from . import cookbook
from ._common import client
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "token-throttle (Redis)"
CONFIG = (
    "`SyncRateLimiter(PerModelConfig(quotas=UsageQuotas([Quota('requests', rpm, "
    "per_seconds=window), Quota('tokens', tpm, per_seconds=window)])), "
    "backend=SyncRedisBackendBuilder(redis, key_prefix=...))`; `acquire_capacity({'requests': "
    "1, 'tokens': <cl100k count> + max_tokens})`, then `refund_capacity` to the usage; "
    "SDK defaults"
)
RETRIES = "the SDK's `max_retries` (token-throttle does not retry)"
MODES = ("threads", "processes")
NEEDS_REDIS = True
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = ("cookbook", "", "the caller's cl100k count + max_tokens")
MIN_PYTHON = (3, 12)  # every release's Requires-Python; its code uses PEP 695 generics


def unavailable() -> str | None:
    try:
        import token_throttle  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def count(messages: Messages, model: str) -> int | None:
    return None  # the caller counts; here with cookbook.count (its row in table 4)


def _limiter(env: Env) -> Any:
    import redis
    from token_throttle import (  # type: ignore[import-not-found, unused-ignore]
        PerModelConfig,
        Quota,
        SyncRateLimiter,
        SyncRedisBackendBuilder,
        UsageQuotas,
    )

    assert env.redis_url is not None
    # per_seconds takes whole seconds: the scaled windows used here are whole seconds.
    quotas = UsageQuotas(
        [
            Quota(metric="requests", limit=env.rpm, per_seconds=round(env.window)),
            Quota(metric="tokens", limit=env.tpm, per_seconds=round(env.window)),
        ]
    )
    return SyncRateLimiter(
        PerModelConfig(quotas=quotas),
        backend=SyncRedisBackendBuilder(
            redis.Redis.from_url(env.redis_url), key_prefix=f"{env.key}-tt"
        ),
    )


def sync_caller(env: Env) -> SyncCaller:
    c = client(env, max_retries=env.retries(2))
    lim = _limiter(env)

    def call(messages: Messages) -> Any:
        need = (cookbook.count(messages, env.model) or 0) + env.max_tokens
        got = lim.acquire_capacity({"requests": 1, "tokens": need}, model=env.model)
        used = 0
        try:
            resp = c.chat.completions.create(model=env.model, messages=messages, **env.request())
            if env.stream:  # the usage comes in the last chunk
                for chunk in resp:
                    if chunk.usage:
                        used = chunk.usage.total_tokens
            elif resp.usage:
                used = resp.usage.total_tokens
            return resp
        finally:
            # A failed call refunds all (its README's pattern; the server kept nothing).
            lim.refund_capacity({"requests": 1, "tokens": used}, got)

    return call


def async_caller(env: Env) -> AsyncCaller:
    raise NotImplementedError("the benchmark runs token-throttle's synchronous API")
