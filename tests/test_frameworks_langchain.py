"""LangChain's ChatGroq and ChatOpenAI on instrumented clients, against the emulator
(examples/frameworks/langchain_recipe.py, as written)."""

from __future__ import annotations

import asyncio

import pytest
from framework_support import check_guarded, recipe, tight_endpoint

import tokenguard as tg

langchain_recipe = recipe("langchain")


@pytest.mark.parametrize("build", [langchain_recipe.chat_groq, langchain_recipe.chat_openai])
def test_a_burst_of_langchain_calls_is_counted_and_held(
    build: object, events: list[tg.events.Event]
) -> None:
    with tight_endpoint() as (at, em):
        llm = build(at)  # type: ignore[operator]
        assert llm.invoke("Say hello.").content  # sync
        replies = asyncio.run(langchain_recipe.burst(llm, 5))  # async, all at once
        assert len(replies) == 5
        assert all(replies)
        seen = check_guarded(events, em, 6)
    assert {f["gen_ai.request.max_tokens"] for f in seen} == {1_000}
