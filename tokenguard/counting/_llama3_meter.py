"""The exact meter for Groq's Llama 3 family (Llama 3.1/3.3 and the retired Llama 3).

Llama 3.1 and 3.3 (``template="llama3.1"``) are counted with Groq's ``llama31`` template,
tools included (Groq's own ``<function=NAME>`` tool prompt, every ``tool_choice``,
``parallel_tool_calls``, the prefill); Llama 3 (``template="llama3"``) with Groq's
GenericChat. The arithmetic is in ``_groq_llama``; this module only says which models
it serves.
"""

from __future__ import annotations

from .._tokenizer_data import available, get_encoding
from ..models import ModelInfo
from ._llama_meter import LlamaMeter
from ._meter import Resources
from ._tokenizers import server_counter, server_counter_many

__all__ = ["Llama3Meter"]


class Llama3Meter(LlamaMeter):
    """Counting for one model with the Llama 3 tokenizer and a Llama 3 template.

    Example::

        meter = Llama3Meter.build(get_model("llama-3.1-8b-instant"), registry)
        meter.count_fast([{"role": "user", "content": "Hello"}])   # 36
    """

    __slots__ = ()

    @classmethod
    def build(cls, info: ModelInfo, resources: Resources) -> Llama3Meter | None:
        """The meter for ``info`` when it is an exact Llama 3 model and the data is at hand."""
        template = info.template
        if info.tokenizer != "llama3" or not info.exact or template not in ("llama3", "llama3.1"):
            return None
        if not available("llama3"):
            return None
        enc = get_encoding("llama3")
        return cls(
            info,
            resources,
            dialect=template,
            tokenizer="llama3",
            count=server_counter(enc),
            count_many=server_counter_many(enc),
        )
