"""(f2) ``plsno429``: a decorator that retries 429s (``algorithm="retry"``, its default).

Its TPM awareness counts real clock minutes (``time.time() // 60``), which a scaled
window cannot follow; the limit is given per real minute (``tpm x 60 / window``) with
its default safety margin. The SDK's retries are off so that 429s reach the decorator.
It declares Python >= 3.12 and runs on one (envs.py).
"""

from __future__ import annotations

from typing import Any

from . import cookbook
from ._common import async_client, client
from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "plsno429"
CONFIG = (
    "`@throttle_openai(algorithm='retry', tpm_limit=tpm*60/window, "
    "token_estimate_func=<cl100k count + max_tokens>)` (retry-after honoured, 3 retries), "
    "SDK `max_retries=0`"
)
MODES = ("threads", "tasks")
NEEDS_REDIS = False
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = ("cookbook", "", "cl100k count + max_tokens, as `token_estimate_func`")
RETRIES = (
    "`throttle_openai(max_retries=attempts-1)` (one counter shared by every call: its own design)"
)
MIN_PYTHON = (3, 12)  # its release's Requires-Python


def unavailable() -> str | None:
    try:
        import plsno429  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def count(messages: Messages, model: str) -> int | None:
    from plsno429.utils import estimate_tokens  # type: ignore[import-not-found, unused-ignore]

    # Its own estimator (characters / 4), over the messages' text.
    return sum(int(estimate_tokens(str(m.get("content") or ""))) for m in messages)


def _decorator(env: Env) -> Any:
    from plsno429 import throttle_openai  # type: ignore[import-not-found, unused-ignore]

    def estimate(messages: Messages) -> int:
        return (cookbook.count(messages, env.model) or 0) + env.max_tokens

    return throttle_openai(
        algorithm="retry",
        tpm_limit=int(env.tpm * env.per_minute),
        token_estimate_func=estimate,
        max_retries=env.retries(3),
    )


def sync_caller(env: Env) -> SyncCaller:
    c = client(env, max_retries=0)

    @_decorator(env)  # type: ignore[untyped-decorator, unused-ignore]
    def call(messages: Messages) -> Any:
        return c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call  # type: ignore[no-any-return, unused-ignore]


def async_caller(env: Env) -> AsyncCaller:
    c = async_client(env, max_retries=0)

    @_decorator(env)  # type: ignore[untyped-decorator, unused-ignore]
    async def call(messages: Messages) -> Any:
        return await c.chat.completions.create(
            model=env.model,
            messages=messages,
            **env.request(),
        )

    return call  # type: ignore[no-any-return, unused-ignore]
