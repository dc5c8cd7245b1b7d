"""Small pieces several adapters share: an openai client on the emulator, offline tiktoken."""

from __future__ import annotations

from typing import Any

import openai

from .workload import Env


def client(env: Env, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=env.base_url, api_key="bench", **kw)


def async_client(env: Env, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=env.base_url, api_key="bench", **kw)


def offline_tiktoken() -> None:
    """Give tiktoken's registry the encodings without a download (this machine is offline).

    ``cl100k_base`` is tiktoken's own file, read from the package tokenguard verifies by
    sha256. Tools that load ``p50k_base`` at import only use it for completion and
    embedding requests, never here; that slot gets cl100k_base so the import succeeds.
    """
    import tiktoken.registry

    from tokenguard._tokenizer_data import get_encoding

    cl100k = get_encoding("cl100k_base")
    tiktoken.registry.ENCODINGS.setdefault("cl100k_base", cl100k)
    tiktoken.registry.ENCODINGS.setdefault("p50k_base", cl100k)
