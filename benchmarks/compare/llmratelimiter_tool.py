"""(f) ``llmratelimiter``: a Redis sliding window with a FIFO queue (asyncio only).

Configured as its README shows: ``RateLimiter(url, model, tpm=, rpm=)``; input tokens
counted by the caller (here with the cookbook's cl100k counter: the library does not
count), output tokens estimated as ``max_tokens``, then ``adjust`` to the real output.
Its RPS smoothing derives a per-second rate from a 60 s minute, which the scaled window
does not have, so it is off (Groq does not smooth per second either).
It declares Python >= 3.12 and runs on one (envs.py).
"""

from __future__ import annotations

from typing import Any

from . import cookbook
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "llmratelimiter (Redis)"
CONFIG = (
    "`RateLimiter(redis_url, model, tpm=6000, rpm=30, window_seconds=window, "
    "smooth_requests=False)`; `acquire(input_tokens=<cl100k count>, output_tokens=max_tokens)`"
    ", then `adjust(record_id, actual_output=usage.completion_tokens)`; SDK defaults"
)
MODES = ("tasks", "processes")
ASYNC_ONLY = True  # its processes run asyncio tasks
NEEDS_REDIS = True
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = ("cookbook", "", "the caller's cl100k count + max_tokens")
RETRIES = "the SDK's `max_retries=attempts-1` (llmratelimiter does not retry)"
MIN_PYTHON = (3, 12)  # its release's Requires-Python


def unavailable() -> str | None:
    try:
        import llmratelimiter  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def count(messages: Messages, model: str) -> int | None:
    return None  # the caller counts; here with cookbook.count (its row in table 4)


def sync_caller(env: Env) -> SyncCaller:
    raise NotImplementedError("llmratelimiter has an asyncio API only")


def async_caller(env: Env) -> AsyncCaller:
    import openai
    from llmratelimiter import RateLimiter  # type: ignore[import-not-found, unused-ignore]

    assert env.redis_url is not None
    c = openai.AsyncOpenAI(base_url=env.base_url, api_key="bench", max_retries=env.retries(2))
    lim = RateLimiter(
        env.redis_url,
        f"{env.key}-{env.model}",
        tpm=env.tpm,
        rpm=env.rpm,
        window_seconds=round(env.window),
        smooth_requests=False,
    )

    async def call(messages: Messages) -> Any:
        got = await lim.acquire(
            input_tokens=cookbook.count(messages, env.model) or 0, output_tokens=env.max_tokens
        )
        resp = await c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )
        usage = resp.usage if not env.stream else None
        if env.stream:  # the usage comes in the last chunk
            async for chunk in resp:
                usage = chunk.usage or usage
        await lim.adjust(got.record_id, actual_output=usage.completion_tokens if usage else 0)
        return resp

    return call
