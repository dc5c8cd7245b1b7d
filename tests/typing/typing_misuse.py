"""What mypy must refuse: each line whose comment starts with ``E:`` (and a part of the
message) is an error, and no other line is (checked by ``tests/test_typing.py``; left out
of the main mypy run).
"""

from __future__ import annotations

from openai import OpenAI

import tokenguard as tg

Messages = list[dict[str, str]]


@tg.guard
def ask(messages: Messages) -> str:
    return "answer"


def misspelt_and_mistyped_options() -> None:
    tg.guard(max_wiat=30)  # E: Unexpected keyword argument "max_wiat"
    tg.guard(on_overflow="drop")  # E: No overload variant of "guard"
    tg.guard(tpm="6000")  # E: No overload variant of "guard"
    tg.instrument(OpenAI(api_key="x"), max_wait="60")  # E: incompatible type "str"
    tg.instrument(OpenAI(api_key="x"), messages_arg="history")  # E: Unexpected keyword
    tg.instrument(OpenAI(api_key="x"), 60)  # E: Too many positional arguments
    tg.instrument(OpenAI(api_key="x"), fallback="llama-3.1-8b-instant")  # E: incompatible type
    tg.instrument(OpenAI(api_key="x"), priority="low")  # E: incompatible type "Literal['low']"


def decorated_signatures_are_kept() -> int:
    ask("Hi")  # E: incompatible type "str"
    ask([{"role": "user", "content": "Hi"}], model="x")  # E: Unexpected keyword argument
    return ask([])  # E: Incompatible return value type


def typed_options_values() -> None:
    shared: tg.InstrumentKwargs = {"max_wiat": 1.0}  # E: Extra key "max_wiat"
    tg.instrument(OpenAI(api_key="x"), **shared)
