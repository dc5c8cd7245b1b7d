"""LiteLLM: its own HTTP clients, guarded with tokenguard's httpx transport.

Needs: pip install litellm (or this project's `frameworks` extra). LiteLLM's Groq route
sends with HTTP clients of its own, out of ``tg.instrument``'s reach, and its callbacks
run around a request, not before it is sent; so the hook is the HTTP client: give each
call (or LiteLLM's Router) ``client=`` built on a guarding transport. Set
LITELLM_LOCAL_MODEL_COST_MAP=True to keep LiteLLM from fetching its price list at
import. Runs against Groq when GROQ_API_KEY is set, else the emulator.

    python examples/frameworks/litellm_recipe.py
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import litellm
from _endpoint import MODEL, Endpoint, endpoint, summary
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler

from tokenguard.integrations.httpx import AsyncGuardTransport, GuardTransport


def guarded_clients(at: Endpoint) -> tuple[HTTPHandler, AsyncHTTPHandler]:
    """LiteLLM's sync and async HTTP handlers, every chat request guarded."""
    sync = HTTPHandler(client=httpx.Client(transport=GuardTransport(limiter=at.limiter)))
    return sync, AsyncHTTPHandler(transport=AsyncGuardTransport(limiter=at.limiter))


def ask(at: Endpoint, client: HTTPHandler, question: str, max_tokens: int = 1_000) -> str:
    reply = litellm.completion(
        model=f"groq/{MODEL}",
        api_base=at.base_url,
        api_key=at.api_key,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        client=client,
    )
    return str(reply.choices[0].message.content)


async def burst(
    at: Endpoint, client: AsyncHTTPHandler, n: int, max_tokens: int = 1_000
) -> list[str]:
    """``n`` questions at once: the limiter holds what the server would refuse."""
    replies = await asyncio.gather(
        *(
            litellm.acompletion(
                model=f"groq/{MODEL}",
                api_base=at.base_url,
                api_key=at.api_key,
                messages=[{"role": "user", "content": f"Question {i}: what is Groq?"}],
                max_tokens=max_tokens,
                client=client,
            )
            for i in range(n)
        )
    )
    return [str(r.choices[0].message.content) for r in replies]


def main() -> None:
    with endpoint() as at, summary("LiteLLM"):
        sync, asynchronous = guarded_clients(at)
        print(ask(at, sync, "Say hello in five words."))
        asyncio.run(burst(at, asynchronous, 5))


if __name__ == "__main__":
    main()
