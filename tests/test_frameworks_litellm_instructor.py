"""LiteLLM through the guarding httpx transport, and instructor on an instrumented
client, against the emulator (the recipes in examples/frameworks/)."""

from __future__ import annotations

import asyncio

import pytest
from framework_support import check_guarded, recipe, tight_endpoint
from instructor.core.exceptions import InstructorRetryException

import tokenguard as tg

litellm_recipe = recipe("litellm")
instructor_recipe = recipe("instructor")


def test_litellm_calls_go_through_the_transport_and_are_held(
    events: list[tg.events.Event],
) -> None:
    with tight_endpoint() as (at, em):
        sync, asynchronous = litellm_recipe.guarded_clients(at)
        assert litellm_recipe.ask(at, sync, "Say hello.")
        replies = asyncio.run(litellm_recipe.burst(at, asynchronous, 5))
        assert len(replies) == 5
        assert all(replies)
        check_guarded(events, em, 6)


def test_every_instructor_attempt_goes_through_the_guard(
    events: list[tg.events.Event],
) -> None:
    with tight_endpoint() as (at, em):
        client = instructor_recipe.structured_client(at)
        # The emulator writes words, not JSON: instructor validates, fails and retries.
        with pytest.raises(InstructorRetryException):
            instructor_recipe.city(client, "Paris, France.", retries=2)
        seen = [e.fields() for e in events if e.name == "tokenguard.guard.request"]
        assert len(seen) == 3 == len(em.log)
        # Each retry carries the failed answer and the error back: a longer prompt,
        # still counted exactly.
        prompts = [f["gen_ai.usage.input_tokens"] for f in seen]
        assert prompts == sorted(prompts)
        assert prompts[0] < prompts[-1]
        for f in seen:
            counted = f["tokenguard.estimated_tokens"] - f["tokenguard.completion_reserve"]
            assert counted == f["gen_ai.usage.input_tokens"]
        # A burst of structured calls is held like any other.
        for _ in range(3):
            with pytest.raises(InstructorRetryException):
                instructor_recipe.city(client, "Oslo, Norway.", retries=1)
        assert [r.status for r in em.log] == [200] * 9
        later = [e.fields() for e in events if e.name == "tokenguard.guard.request"]
        assert sum(f["tokenguard.wait_s"] for f in later) > 0
