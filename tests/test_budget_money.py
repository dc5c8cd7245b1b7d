"""Budgets in US dollars: the price table, pre-flight refusals from the estimate, the
charge from the usage, ``tokenguard.cost_usd`` on every request event and the report's
totals, through the real openai SDK against the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import tokenguard as tg
from tokenguard._spend._prices import reset_prices, to_pico
from tokenguard.cli._report import read_log
from tokenguard.emulator import Emulator, running

MODEL = "llama-3.1-8b-instant"
PRICE = tg.price_of(MODEL)


@pytest.fixture(autouse=True)
def _fresh_prices() -> Iterator[None]:
    yield
    reset_prices()


@pytest.fixture
def em() -> Iterator[Emulator]:
    with running(model=MODEL, tpm=1_000_000, rpm=10_000, window=1.0) as server:
        yield server


def sent(em: Emulator) -> int:
    return sum(1 for r in em.log if r.endpoint == "chat")


def requests(events: list[tg.events.Event]) -> list[dict[str, Any]]:
    return [e.fields() for e in events if e.name == "tokenguard.guard.request"]


def question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}: what is {i} times {i + 3}?"}]


# -- the price table --------------------------------------------------------------------


def test_the_table_holds_groqs_published_prices_with_cached_input_at_half() -> None:
    assert tg.Price("0.05", "0.08", "0.025", source="groq") == PRICE
    gpt = tg.price_of("openai/gpt-oss-120b")
    assert gpt is not None
    assert (gpt.input, gpt.output) == (Decimal("0.15"), Decimal("0.60"))
    # Not on the page the table was read from: left out, not guessed.
    assert tg.price_of("qwen/qwen3-32b") is None


def test_a_cost_is_exact_and_prices_cached_prompt_tokens_at_the_cached_rate() -> None:
    assert PRICE is not None
    # 600 fresh at 0.05, 400 cached at 0.025, 200 out at 0.08 (USD per million).
    assert PRICE.cost(1_000, 200, cached_tokens=400) == Decimal("0.000056")
    total = sum((PRICE.cost(333, 17) for _ in range(10_000)), Decimal(0))
    assert total == Decimal("0.1801")  # 10,000 x 18.01 micro-dollars, to the last digit
    assert to_pico(PRICE.cost(1, 0)) == 50_000


def test_prices_can_be_registered_and_bad_ones_are_refused() -> None:
    assert tg.Price(0.1, 0.2).input == Decimal("0.1")  # a float by its repr, not its binary
    tg.register_price("my-finetune", input="0.20", output="0.40")
    assert tg.price_of("my-finetune") == tg.Price("0.20", "0.40")
    tg.register_price(MODEL, tg.Price(1, 2))
    assert tg.price_of(MODEL) == tg.Price(1, 2)
    for bad in ("-1", "nan", "abc", True, None, float("inf")):
        with pytest.raises(tg.ConfigurationError, match="input price"):
            tg.Price(bad, 1)  # type: ignore[arg-type]
    with pytest.raises(tg.ConfigurationError, match="needs a Price or both"):
        tg.register_price("half", input=1)
    with pytest.raises(tg.ConfigurationError, match="budget usd"):
        tg.budget(usd="-0.01")


# -- through the guard --------------------------------------------------------------------


def test_a_money_budget_is_charged_each_calls_cost_and_events_carry_it(
    em: Emulator, events: list[tg.events.Event]
) -> None:
    client = openai.OpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 40) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    with tg.budget(usd="0.01") as b:
        replies = [ask(question(i)) for i in range(12)]
    assert PRICE is not None
    costs = [PRICE.cost(r.usage.prompt_tokens, r.usage.completion_tokens) for r in replies]
    assert b.spent_usd == sum(costs, Decimal(0)) > 0
    assert b.reserved_usd == 0
    assert b.remaining_usd == Decimal("0.01") - b.spent_usd
    logged = [Decimal(repr(e["tokenguard.cost_usd"])) for e in requests(events)]
    assert logged == costs


def test_a_call_whose_estimate_costs_more_than_is_left_is_refused_before_sending(
    em: Emulator,
) -> None:
    client = openai.OpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 1_000) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    count = tg.count_tokens(question(1), model=MODEL)
    assert PRICE is not None
    estimate = PRICE.cost(count, 1_000)  # the prompt exact, the completion at max_tokens
    short = estimate - Decimal("0.000000001")
    with (
        tg.budget(usd=short, name="tiny") as b,
        pytest.raises(tg.BudgetExceeded, match="'tiny'") as exc,
    ):
        ask(question(1))
    assert (exc.value.unit, exc.value.needed) == ("usd", estimate)
    assert "nothing was sent" in str(exc.value)
    assert sent(em) == 0
    assert b.spent_usd == 0
    assert b.reserved_usd == 0
    with tg.budget(usd=estimate) as b:
        ask(question(1))  # exactly the estimate fits
    assert sent(em) == 1
    assert 0 < b.spent_usd <= estimate


def test_a_money_budget_on_a_model_without_a_price_is_a_clear_error(
    events: list[tg.events.Event],
) -> None:
    unpriced = "llama3-8b-8192"  # in the model table, not in the price table
    assert tg.price_of(unpriced) is None
    with running(model=unpriced, tpm=100_000, rpm=1_000, window=1.0) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")

        @tg.guard
        def ask(messages: Any, model: str = unpriced, max_tokens: int = 8) -> Any:
            return client.chat.completions.create(
                messages=messages, model=model, max_tokens=max_tokens
            )

        with tg.budget(usd=1) as b, pytest.raises(tg.UnknownPrice, match="register_price"):
            ask(question(1))
        assert sent(server) == 0
        assert b.reserved == 0
        with tg.budget(tokens=1_000) as b:  # without a money cap the call goes, uncosted
            reply = ask(question(1))
    assert b.used == reply.usage.total_tokens
    assert b.spent_usd == 0
    [event] = requests(events)
    assert "tokenguard.cost_usd" not in event


async def test_async_calls_are_charged_their_cost_too(em: Emulator) -> None:
    client = openai.AsyncOpenAI(base_url=em.base_url, api_key="x")

    @tg.guard
    async def ask(messages: Any, model: str = MODEL, max_tokens: int = 30) -> Any:
        return await client.chat.completions.create(
            messages=messages, model=model, max_tokens=max_tokens
        )

    async with tg.budget(usd="0.001") as b:
        replies = await asyncio.gather(*(ask(question(i)) for i in range(8)))
    assert PRICE is not None
    costs = [PRICE.cost(r.usage.prompt_tokens, r.usage.completion_tokens) for r in replies]
    assert b.spent_usd == sum(costs, Decimal(0))


def test_the_report_totals_cost_per_model_exactly(em: Emulator, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=em.base_url, api_key="x")
    log = tmp_path / "events.jsonl"
    sink = tg.sinks.JsonlSink(str(log))
    undo = tg.events.add_sink(sink)

    @tg.guard
    def ask(messages: Any, model: str = MODEL, max_tokens: int = 25) -> Any:
        return client.chat.completions.create(messages=messages, model=model, max_tokens=max_tokens)

    try:
        with tg.budget() as b:
            for i in range(30):
                ask(question(i))
    finally:
        undo()
        sink.close()
    rep = read_log(log.read_text(), str(log))
    totals = rep.by_model[MODEL]
    assert (totals.cost_usd, totals.priced) == (b.spent_usd, 30)
    doc = json.loads(json.dumps({"c": f"{totals.cost_usd:f}"}))
    assert Decimal(doc["c"]) == b.spent_usd
