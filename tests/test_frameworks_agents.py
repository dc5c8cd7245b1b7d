"""pydantic-ai (Groq and OpenAI-compatible models) and the OpenAI Agents SDK on
instrumented async clients, against the emulator (the recipes in examples/frameworks/)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from framework_support import check_guarded, recipe, tight_endpoint

import tokenguard as tg

pydantic_ai_recipe = recipe("pydantic_ai")
openai_agents_recipe = recipe("openai_agents")


@pytest.mark.parametrize("build", [pydantic_ai_recipe.groq_agent, pydantic_ai_recipe.openai_agent])
def test_pydantic_ai_runs_are_counted_and_held(
    build: Callable[..., Any], events: list[tg.events.Event]
) -> None:
    with tight_endpoint() as (at, em):
        replies = asyncio.run(pydantic_ai_recipe.hello_then_burst(build(at), 5))
        assert len(replies) == 6
        assert all(replies)
        check_guarded(events, em, 6)


def test_agents_sdk_runs_on_the_instrumented_default_client(
    events: list[tg.events.Event],
) -> None:
    with tight_endpoint() as (at, em):
        openai_agents_recipe.use_guarded_default_client(at)
        replies = asyncio.run(
            openai_agents_recipe.hello_then_burst(openai_agents_recipe.agent(), 5)
        )
        assert len(replies) == 6
        assert all(replies)
        seen = check_guarded(events, em, 6)
    assert {f["tokenguard.site"] for f in seen} == {"AsyncOpenAI.chat.completions.create"}
