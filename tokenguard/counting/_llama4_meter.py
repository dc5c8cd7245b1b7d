"""The meter for Llama 4 Scout and Maverick (Groq's ``quattro-v2`` template).

It serves every model whose table entry says ``tokenizer="llama4"`` and
``template="llama4"``. With Meta's Llama 4 tokenizer data installed (the optional extra
``groq-tokenguard[llama4]``, sha256-verified) the count is exact as Groq bills it. Without it
one ``tokenguard.counting.tokenizer_missing`` event says how to get it, and the same
rendering is counted with o200k_base (a dependency) at :data:`BOUND_FACTOR` times its
count, capped by the UTF-8 bytes (no byte-level BPE token is shorter than a byte): on
English, code, Cyrillic, CJK and Devanagari samples Llama 4 counts at most 1.12 times
o200k, so the bound sits above the server; it is reported as not exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .._extras import install_hint
from .._tokenizer_data import available, get_encoding
from ..models import ModelInfo
from ._llama_meter import LlamaMeter
from ._meter import Request, Resources, Tally
from ._tokenizers import report_missing, server_counter, server_counter_many

__all__ = ["BOUND_FACTOR", "Llama4Meter"]

#: How far above o200k_base's count the bound without Llama 4 data is set.
BOUND_FACTOR = 1.25


class Llama4Meter(LlamaMeter):
    """Counting for Llama 4 Scout/Maverick (see the module docstring).

    Example::

        meter = Llama4Meter.build(get_model("meta-llama/llama-4-scout-17b-16e-instruct"), reg)
        meter.count_fast([{"role": "user", "content": "What is the capital of France?"}])  # 17
    """

    __slots__ = ("bound",)

    def __init__(self, info: ModelInfo, resources: Resources, *, bound: bool) -> None:
        if bound:
            tokenizer, count, count_many = "llama4-bound", _bound_counter(), None
        else:
            enc = get_encoding("llama4")
            tokenizer, count, count_many = "llama4", server_counter(enc), server_counter_many(enc)
        super().__init__(
            info,
            resources,
            dialect="llama4",
            tokenizer=tokenizer,
            count=count,
            count_many=count_many,
        )
        self.bound = bound

    @classmethod
    def build(cls, info: ModelInfo, resources: Resources) -> Llama4Meter | None:
        """The meter for ``info`` when it is a Llama 4 model (exact, or bounded without
        the tokenizer data)."""
        if info.tokenizer != "llama4" or info.template != "llama4":
            return None
        if available("llama4"):
            return cls(info, resources, bound=False)
        _report_missing(info.name)
        return cls(info, resources, bound=True)

    def _fast(self, messages: Sequence[Any], costs: list[int] | None) -> int | None:
        """Exact counts only: without the tokenizer data every count takes the general
        path, which marks it as a bound."""
        return None if self.bound else super()._fast(messages, costs)

    def count(self, request: Request) -> Tally:
        """The general path; never exact without the tokenizer data."""
        tally = super().count(request)
        return tally._replace(exact=False) if self.bound else tally


def _bound_counter() -> Callable[[str], int]:
    """Counts a text as ``min(bytes, ceil(BOUND_FACTOR * o200k tokens))``: stands in for
    the Llama 4 tokenizer when its data is missing."""
    o200k = server_counter(get_encoding("o200k_base"))

    def count(text: str) -> int:
        return min(len(text.encode("utf-8")), math.ceil(BOUND_FACTOR * o200k(text)))

    return count


def _report_missing(model: str) -> None:
    report_missing(
        "llama4",
        model,
        (
            "Llama 4 counts are upper bounds (o200k_base times "
            f"{BOUND_FACTOR}); for exact ones {install_hint('llama4')} "
            "(llama-models==0.3.0), or give Meta's Llama 4 tokenizer.model with "
            "tokenguard.register_tokenizer_path('llama4', PATH) or the "
            "TOKENGUARD_LLAMA4_TOKENIZER environment variable"
        ),
    )
