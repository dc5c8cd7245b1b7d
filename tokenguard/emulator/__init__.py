"""A local Groq server: the real ``openai`` and ``groq`` SDKs cannot tell it from Groq.

Chat completions (JSON and SSE) and the models list on loopback, prompts billed as Groq
bills them, Groq's rate limits, error bodies and ``x-ratelimit-*`` headers, and a log of
every request (docs/internals.md, "The emulator").

Example::

    with running(model="llama3-8b-8192", tpm=6000, rpm=30) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="anything")
        client.chat.completions.create(model="llama3-8b-8192", messages=[...])

Command line: ``python -m tokenguard.emulator --port 8000 --model llama3-8b-8192 --tpm 6000``.
"""

from __future__ import annotations

from ._chatml import count_chatml_tokens
from ._config import DEFAULT_MAX_TOKENS, EmulatorConfig
from ._harmony import count_harmony_tokens, render_harmony
from ._llama4 import count_llama4_tokens, render_llama4
from ._log import RequestRecord, max_requests_in_any_window, max_tokens_in_any_window
from ._models import BUILTIN_MODELS, ModelSpec, builtin_model
from ._prompt import count_prompt_tokens, render_prompt
from ._server import Emulator, running

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MAX_TOKENS",
    "Emulator",
    "EmulatorConfig",
    "ModelSpec",
    "RequestRecord",
    "builtin_model",
    "count_chatml_tokens",
    "count_harmony_tokens",
    "count_llama4_tokens",
    "count_prompt_tokens",
    "max_requests_in_any_window",
    "max_tokens_in_any_window",
    "render_harmony",
    "render_llama4",
    "render_prompt",
    "running",
]
