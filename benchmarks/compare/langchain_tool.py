"""(e) LangChain's ``InMemoryRateLimiter`` (requests per second) with ``trim_messages``.

The limiter counts requests only, not tokens: it is set to the RPM limit spread over the
window. ``trim_messages`` (approximate counter, as LangChain's docs show) keeps each
conversation within the context less ``max_tokens``. The SDK keeps its own retries.
"""

from __future__ import annotations

from typing import Any

from ._common import async_client, client
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "LangChain InMemoryRateLimiter"
CONFIG = (
    "`InMemoryRateLimiter(requests_per_second=rpm/window, check_every_n_seconds=0.1, "
    "max_bucket_size=10)` + `trim_messages(max_tokens=context-max_tokens, "
    "token_counter=count_tokens_approximately, strategy='last', include_system=True, "
    "start_on='human')`, SDK defaults"
)
MODES = ("threads", "tasks")
NEEDS_REDIS = False
RETRIES = "the SDK's `max_retries=attempts-1` (the limiter does not retry)"


def unavailable() -> str | None:
    try:
        import langchain_core  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def count(messages: Messages, model: str) -> int | None:
    from langchain_core.messages.utils import (  # type: ignore[import-not-found, unused-ignore]
        count_tokens_approximately,
    )

    return int(count_tokens_approximately(messages))


def _parts(env: Env) -> tuple[Any, Any]:
    from langchain_core.messages import (  # type: ignore[import-not-found, unused-ignore]
        convert_to_openai_messages,
        trim_messages,
    )
    from langchain_core.messages.utils import (  # type: ignore[import-not-found, unused-ignore]
        count_tokens_approximately,
    )
    from langchain_core.rate_limiters import (  # type: ignore[import-not-found, unused-ignore]
        InMemoryRateLimiter,
    )

    lim = InMemoryRateLimiter(
        requests_per_second=env.rpm / env.window, check_every_n_seconds=0.1, max_bucket_size=10
    )

    def trim(messages: Messages) -> Any:
        kept = trim_messages(
            messages,
            max_tokens=env.context - env.max_tokens,
            token_counter=count_tokens_approximately,
            strategy="last",
            include_system=True,
            start_on="human",
        )
        return convert_to_openai_messages(kept)

    return lim, trim


def sync_caller(env: Env) -> SyncCaller:
    c = client(env, max_retries=env.retries(2))
    lim, trim = _parts(env)

    def call(messages: Messages) -> Any:
        lim.acquire()
        return c.chat.completions.create(model=env.model, messages=trim(messages), **env.request())

    return call


def async_caller(env: Env) -> AsyncCaller:
    c = async_client(env, max_retries=env.retries(2))
    lim, trim = _parts(env)

    async def call(messages: Messages) -> Any:
        await lim.aacquire()
        return await c.chat.completions.create(
            model=env.model, messages=trim(messages), **env.request()
        )

    return call
