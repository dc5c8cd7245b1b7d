"""(c) ``openlimit``: ``ChatRateLimiter`` used as its README shows (``with limiter.limit(...)``).

openlimit counts a minute as 60 s and takes per-minute limits, so the scaled window's
limits are given per real minute (``limit x 60 / window``). Its buckets hold one
second's refill at most (``limit / 60``), so a request whose estimate is above that
never passes: its caller waits until the run ends (counted as unfinished, i.e. lost).
Its dependency aioredis 2.0.1 does not import on Python >= 3.11; see ``_mod``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ._common import async_client, client, offline_tiktoken
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "openlimit"
CONFIG = (
    "`ChatRateLimiter(request_limit=rpm*60/window, token_limit=tpm*60/window)`, "
    "`with limiter.limit(model=..., messages=..., max_tokens=...)`, SDK defaults"
)
MODES = ("threads", "tasks")
NEEDS_REDIS = False
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = ("openlimit_tool", "", "`num_tokens_consumed_by_chat_request` + max_tokens")
RETRIES = "the SDK's `max_retries=attempts-1` (openlimit does not retry)"


def unavailable() -> str | None:
    try:
        _mod()
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def _mod() -> Any:
    offline_tiktoken()
    if "aioredis" not in sys.modules:
        try:
            import aioredis  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
        except (TypeError, ImportError):
            # aioredis 2.0.1 (openlimit's dependency, unmaintained) fails to import on
            # Python >= 3.11 ("duplicate base class TimeoutError"). openlimit imports it for
            # its Redis buckets only, which are not run here: an empty module stands in.
            sys.modules["aioredis"] = types.ModuleType("aioredis")
    import openlimit  # type: ignore[import-not-found, unused-ignore]

    return openlimit


def _limiter(env: Env) -> Any:
    return _mod().ChatRateLimiter(
        request_limit=env.rpm * env.per_minute, token_limit=env.tpm * env.per_minute
    )


def count(messages: Messages, model: str) -> int | None:
    _mod()
    from openlimit.utilities import (  # type: ignore[import-not-found, unused-ignore]
        num_tokens_consumed_by_chat_request,
    )

    return int(num_tokens_consumed_by_chat_request(messages=messages, max_tokens=0))


def sync_caller(env: Env) -> SyncCaller:
    c = client(env, max_retries=env.retries(2))
    lim = _limiter(env)

    def call(messages: Messages) -> Any:
        with lim.limit(model=env.model, messages=messages, max_tokens=env.max_tokens):
            return c.chat.completions.create(
                model=env.model,
                messages=messages,
                **env.request(),
            )

    return call


def async_caller(env: Env) -> AsyncCaller:
    c = async_client(env, max_retries=env.retries(2))
    lim = _limiter(env)

    async def call(messages: Messages) -> Any:
        async with lim.limit(model=env.model, messages=messages, max_tokens=env.max_tokens):
            return await c.chat.completions.create(
                model=env.model,
                messages=messages,
                **env.request(),
            )

    return call
