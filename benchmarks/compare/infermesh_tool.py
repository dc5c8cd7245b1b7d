"""(f4) ``infermesh``'s ``LMClient`` with its built-in limiter (``rpm=``, ``tpm=``).

Its buckets refill per 60 s (``time_period=60``), so with a scaled window the limits are
given per real minute (``limit x 60 / window``), like openlimit's. It estimates a
request as LiteLLM's ``token_counter`` for the model name plus ``max_tokens``, reads the
server's ``x-ratelimit-*`` headers, and retries 429s itself (3 times by default).
"""

from __future__ import annotations

from typing import Any

from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "infermesh limiter"
CONFIG = (
    "`LMClient(model='openai/<model>', api_base, rpm=rpm*60/window, tpm=tpm*60/window)`, "
    "`generate(messages, max_tokens=...)` / `agenerate`; its defaults (`max_retries=3`)"
)
RETRIES = "`LMClient(max_retries=attempts-1)`"
MODES = ("threads", "tasks")
NEEDS_REDIS = False
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = (
    "infermesh_tool",
    "",
    "`litellm.token_counter(model='openai/<model>')` + max_tokens",
)
MIN_PYTHON = (3, 12)  # every release's Requires-Python; its code uses PEP 695 generics
STREAMS = "its `generate` returns a finished result (no stream to read)"


def unavailable() -> str | None:
    try:
        import infermesh  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def count(messages: Messages, model: str) -> int | None:
    import litellm  # type: ignore[import-not-found, unused-ignore]

    # What infermesh reserves, less max_tokens: litellm.token_counter on its model name.
    return int(litellm.token_counter(model=f"openai/{model}", messages=messages))


def _client(env: Env) -> Any:
    from infermesh import LMClient  # type: ignore[import-not-found, unused-ignore]

    return LMClient(
        model=f"openai/{env.model}",
        api_base=env.base_url,
        api_key="bench",
        rpm=int(env.rpm * env.per_minute),
        tpm=int(env.tpm * env.per_minute),
        max_retries=env.retries(3),
    )


def sync_caller(env: Env) -> SyncCaller:
    c = _client(env)

    def call(messages: Messages) -> Any:
        return c.generate(messages, max_tokens=env.max_tokens)

    return call


def async_caller(env: Env) -> AsyncCaller:
    c = _client(env)

    async def call(messages: Messages) -> Any:
        return await c.agenerate(messages, max_tokens=env.max_tokens)

    return call
