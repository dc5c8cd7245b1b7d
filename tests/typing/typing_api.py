"""The public API as its users write it: mypy (strict, in CI) must accept every line.

Its twin, ``typing_misuse.py``, holds what mypy must refuse (see ``tests/test_typing.py``).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from openai import AsyncOpenAI, OpenAI
from typing_extensions import assert_type

import tokenguard as tg

Messages = list[dict[str, str]]


@tg.guard
def ask(messages: Messages, model: str = "llama-3.1-8b-instant") -> str:
    return "answer"


@tg.guard(max_wait=30, on_overflow="error", tpm=6_000, rpm=30, window=60.0)
async def ask_async(messages: Messages, *, max_tokens: int = 256) -> str:
    return "answer"


def keep_only_the_last(messages: list[Any], room: tg.Room) -> list[Any]:
    return messages[-1:]


@tg.guard(
    model="llama-3.1-8b-instant",
    messages_arg="history",
    on_overflow=keep_only_the_last,
    clock=time.monotonic,
    sleep=time.sleep,
    retries=None,
    log_content=False,
)
def chat(history: Messages) -> str:
    return "answer"


async def decorated_functions_keep_their_signatures() -> None:
    assert_type(ask([{"role": "user", "content": "Hi"}]), str)
    assert_type(await ask_async([{"role": "user", "content": "Hi"}], max_tokens=64), str)
    assert_type(chat([{"role": "user", "content": "Hi"}]), str)


def instrumented_clients_keep_their_type() -> None:
    client = tg.instrument(OpenAI(api_key="x"), max_wait=60, retries=3, tier="dev")
    assert_type(client, OpenAI)
    backed = tg.instrument(OpenAI(api_key="x"), max_wait=5, fallback=["llama-3.1-8b-instant"])
    assert_type(backed, OpenAI)
    aclient = tg.instrument(AsyncOpenAI(api_key="x"), limiter=tg.Limiter(tpm=6_000))
    assert_type(aclient, AsyncOpenAI)
    assert_type(tg.uninstrument(client), OpenAI)
    batch = tg.instrument(OpenAI(api_key="x"), priority="batch")
    assert_type(batch, OpenAI)


def priorities_are_typed() -> None:
    lim = tg.Limiter(tpm=6_000, batch_share=0.2)
    kind: tg.Priority = "batch"
    lim.acquire(100, priority=kind).cancel()
    with tg.priority("interactive"):
        lim.acquire(100).cancel()


def options_can_be_kept_in_one_typed_value() -> None:
    shared: tg.InstrumentKwargs = {"max_wait": 10.0, "cap_max_tokens": 512}
    tg.instrument(OpenAI(api_key="x"), **shared)

    @tg.guard(**shared, messages_arg="msgs")
    def ask_with(msgs: Messages) -> str:
        return "answer"

    assert_type(ask_with([]), str)


def budgets_take_money_and_a_shared_key() -> None:
    import redis

    with tg.budget(usd="0.50", tokens=20_000) as b:
        assert_type(b.spent_usd, Decimal)
        assert_type(b.remaining_usd, Decimal | None)
    r = redis.Redis()
    with tg.budget(usd=5, key="tenant-42", per="day", redis=r):
        pass
    with tg.budget(requests=100, key="tenant-42", per=3_600.0, redis=r):
        pass
    status = tg.budget_status("tenant-42", redis=r)
    assert_type(status, tg.BudgetStatus)
    assert_type(status.remaining_usd, Decimal | None)
    price = tg.register_price("my-model", input="0.20", output=Decimal("0.40"))
    assert_type(tg.price_of("my-model"), tg.Price | None)
    assert_type(price.cost(100, 10, cached_tokens=50), Decimal)
