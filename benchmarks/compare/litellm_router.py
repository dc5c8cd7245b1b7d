"""(d) LiteLLM's ``Router`` with ``tpm``/``rpm`` on the deployment, usage-based routing.

The Router counts usage per real clock minute, so the scaled window's limits are given
per real minute (``limit x 60 / window``): the Router can hold a minute's total but not
the server's refill inside it. When the deployment is over its limits the Router raises
instead of waiting; ``num_retries`` retries that (and 429s) with its own backoff.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .workload import AsyncCaller, Env, Messages, SyncCaller

NAME = "LiteLLM Router"
CONFIG = (
    "`Router(model_list=[{litellm_params: {model: openai/<model>, api_base, tpm: "
    "tpm*60/window, rpm: rpm*60/window}}], routing_strategy='usage-based-routing-v2', "
    "num_retries=3)`, `router.completion(...)` / `acompletion`"
)
MODES = ("threads", "tasks")
NEEDS_REDIS = False


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download
    import litellm  # type: ignore[import-not-found, unused-ignore]

    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)
    litellm.suppress_debug_info = True
    return litellm


def unavailable() -> str | None:
    try:
        _litellm()
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


def count(messages: Messages, model: str) -> int | None:
    return int(_litellm().token_counter(model=f"groq/{model}", messages=messages))


def _router(env: Env) -> Any:
    from litellm import Router  # type: ignore[import-not-found, attr-defined, unused-ignore]

    _litellm()
    return Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {
                    "model": f"openai/{env.model}",
                    "api_base": env.base_url,
                    "api_key": "bench",
                    "tpm": int(env.tpm * env.per_minute),
                    "rpm": int(env.rpm * env.per_minute),
                },
            }
        ],
        routing_strategy="usage-based-routing-v2",
        num_retries=3,
    )


def sync_caller(env: Env) -> SyncCaller:
    r = _router(env)

    def call(messages: Messages) -> Any:
        return r.completion(model="bench", messages=messages, max_tokens=env.max_tokens)

    return call


def async_caller(env: Env) -> AsyncCaller:
    r = _router(env)

    async def call(messages: Messages) -> Any:
        return await r.acompletion(model="bench", messages=messages, max_tokens=env.max_tokens)

    return call
