"""Prices per model: what a call costs in US dollars, as exact decimals.

A :class:`Price` is USD per million tokens for input, output and cached input (the
prompt tokens Groq served from its cache, billed at half the input price as its docs
say). Costs are :class:`~decimal.Decimal` and never floats, so totals add up exactly;
shared (Redis) budgets hold them as integer pico-dollars (:func:`to_pico`), which is
exact for any price given to six decimals per million tokens.

The table holds Groq's published on-demand prices as read on :data:`PRICES_READ_ON`
(``console.groq.com/docs/models``, ``console.groq.com/docs/prompt-caching``); models
whose price was not found there are left out rather than guessed. Override or add
with :func:`register_price`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from ..errors import ConfigurationError

__all__ = [
    "PRICES_READ_ON",
    "Price",
    "cost_of",
    "from_pico",
    "price_of",
    "register_price",
    "reset_prices",
    "to_pico",
    "usd",
]

#: When the built-in prices were read from Groq's documentation.
PRICES_READ_ON = "2026-12-05"

_MILLION = Decimal(1_000_000)
_PICO = Decimal(10) ** 12

Amount = Decimal | int | float | str


def usd(value: object, name: str) -> Decimal:
    """``value`` as an exact, finite, non-negative Decimal, or a clear error. A float is
    read by its shortest repr (``0.1`` is one tenth), never by its binary value."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise ConfigurationError(f"{name} must be a number of US dollars, got {value!r}")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ConfigurationError(f"{name} must be a number of US dollars, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{name} must be a finite amount >= 0, got {value!r}")
    return amount


@dataclass(frozen=True)
class Price:
    """USD per million tokens: ``input`` (prompt), ``output`` (completion) and
    ``cached_input`` (prompt tokens served from Groq's cache; ``None``: billed as input).

    Example::

        tg.Price(input="0.05", output="0.08", cached_input="0.025")
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    #: Where the price comes from (``"groq"`` for the built-in table, ``"user"``).
    source: str = "user"
    #: Pico-dollars per token (input, output, cached input) when all three are whole
    #: (any price to six decimals per million): a cost is then integer arithmetic.
    _pico: tuple[int, int, int] | None = field(default=None, repr=False, compare=False)

    def __init__(
        self,
        input: Amount,
        output: Amount,
        cached_input: Amount | None = None,
        source: str = "user",
    ) -> None:
        object.__setattr__(self, "input", usd(input, "input price"))
        object.__setattr__(self, "output", usd(output, "output price"))
        cached = None if cached_input is None else usd(cached_input, "cached input price")
        object.__setattr__(self, "cached_input", cached)
        object.__setattr__(self, "source", source)
        rates = (self.input, self.output, self.input if cached is None else cached)
        per_token = [rate * _MILLION for rate in rates]  # USD/M x 10^6 = pico-USD/token
        whole = all(p == p.to_integral_value() for p in per_token)
        object.__setattr__(self, "_pico", tuple(int(p) for p in per_token) if whole else None)

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> Decimal:
        """What a call of ``input_tokens`` prompt tokens (``cached_tokens`` of them from
        the cache) and ``output_tokens`` completion tokens costs, in USD, exactly."""
        cached = min(max(cached_tokens, 0), input_tokens)
        if self._pico is not None:  # exact either way; this way ~4x faster (every event)
            pi, po, pc = self._pico
            return Decimal((input_tokens - cached) * pi + cached * pc + output_tokens * po).scaleb(
                -12
            )
        rate = self.input if self.cached_input is None else self.cached_input
        micro = (input_tokens - cached) * self.input + cached * rate
        return (micro + output_tokens * self.output) / _MILLION


_GROQ = "groq"
# console.groq.com/docs/models, production models, "PRICE PER 1M TOKENS"; the cached
# input price is half the input price (console.groq.com/docs/prompt-caching: "50% for
# cached portions"). Not found there, so not listed: the preview models (Llama 4,
# Qwen3, Kimi K2), groq/compound, the safeguard model.
_BUILT_IN: dict[str, Price] = {
    "llama-3.1-8b-instant": Price("0.05", "0.08", "0.025", _GROQ),
    "llama-3.3-70b-versatile": Price("0.59", "0.79", "0.295", _GROQ),
    "openai/gpt-oss-120b": Price("0.15", "0.60", "0.075", _GROQ),
    "openai/gpt-oss-20b": Price("0.075", "0.30", "0.0375", _GROQ),
}

_lock = threading.Lock()
_table: dict[str, Price] = dict(_BUILT_IN)


def price_of(model: str) -> Price | None:
    """The price of ``model`` (a registered one first), or ``None`` when none is known."""
    return _table.get(model)


def register_price(
    model: str,
    price: Price | None = None,
    *,
    input: Amount | None = None,
    output: Amount | None = None,
    cached_input: Amount | None = None,
) -> Price:
    """Set the price of ``model`` (USD per million tokens), replacing the table's; give a
    :class:`Price` or its parts. Returns the price now in use.

    Example::

        tg.register_price("my-finetune", input="0.20", output="0.40")
    """
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
    if price is None:
        if input is None or output is None:
            raise ConfigurationError(
                f"register_price({model!r}) needs a Price or both input= and output= "
                "(USD per million tokens)"
            )
        price = Price(input, output, cached_input)
    elif not isinstance(price, Price):
        raise ConfigurationError(f"price must be a tokenguard.Price, got {price!r}")
    with _lock:
        _table[model] = price
    return price


def reset_prices() -> None:
    """Back to the built-in table (tests)."""
    with _lock:
        _table.clear()
        _table.update(_BUILT_IN)


def cost_of(
    model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> Decimal | None:
    """What a call to ``model`` cost, or ``None`` when its price is not known."""
    price = _table.get(model)
    return None if price is None else price.cost(input_tokens, output_tokens, cached_tokens)


def to_pico(amount: Decimal) -> int:
    """``amount`` USD as whole pico-dollars, rounded up (a budget is never under-charged)."""
    return int((amount * _PICO).to_integral_value(rounding=ROUND_CEILING))


def from_pico(pico: int) -> Decimal:
    """Whole pico-dollars as USD."""
    return Decimal(pico) / _PICO
