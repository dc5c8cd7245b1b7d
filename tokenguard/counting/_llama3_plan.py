"""The exact plan: Groq's Llama 3 family, counted token for token offline.

A prompt is Meta's template encoded with the Llama 3 tokenizer; ``_llama3`` shows that
its count is a sum of fixed costs and message bodies counted alone, so a message costs
its header plus its body (plus ``image_tokens`` per image), the same wherever it sits,
except that a leading system message merges into the template's own system block
(Llama 3.1 always, Llama 3 with tools) and pays no header of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._tokenizer_data import available, get_encoding
from ..models import ModelInfo
from ._cache import TextCache
from ._llama3 import Llama3Costs
from ._messages import normalize_message, render_tools
from ._plan import NewText, Request, Resources, Settings, Tally
from ._tokenizers import server_counter

__all__ = ["Llama3Plan"]


class Llama3Plan:
    """Counting for one model with the Llama 3 tokenizer and a known template.

    Example::

        plan = Llama3Plan.build(get_model("llama3-8b-8192"), registry)
        plan.count_fast([{"role": "user", "content": "Hello"}])   # 11
    """

    __slots__ = ("_info", "cache", "costs", "settings")

    def __init__(
        self, info: ModelInfo, cache: TextCache[int], costs: Llama3Costs, settings: Settings
    ) -> None:
        self._info = info
        self.cache = cache
        self.costs = costs
        self.settings = settings

    @classmethod
    def build(cls, info: ModelInfo, resources: Resources) -> Llama3Plan | None:
        """The plan for ``info`` when it is an exact Llama 3 model and the data is at hand."""
        template = info.template
        if info.tokenizer != "llama3" or not info.exact or template is None:
            return None
        if not available("llama3"):
            return None
        cache = resources.text_cache(
            "llama3", lambda: server_counter(get_encoding("llama3"), strip=True)
        )
        costs = resources.shared(
            ("llama3 template", template),
            lambda: Llama3Costs(template, server_counter(get_encoding("llama3"))),
        )
        return cls(info, cache, costs, resources.settings)

    @property
    def info(self) -> ModelInfo:
        """The model table entry of this plan."""
        return self._info

    def count_fast(self, messages: Sequence[Any]) -> int | None:
        """The common path: plain ``{"role", "content": str}`` dicts (see :meth:`prompt_fast`)."""
        costs = self._fast_costs(messages)
        if costs is None:
            return None
        return self.costs.base + self.costs.plain_system_block + sum(costs)

    def prompt_fast(self, messages: Sequence[Any]) -> Tally | None:
        """:meth:`count_fast` broken down per message."""
        costs = self._fast_costs(messages)
        if costs is None:
            return None
        overhead = self.costs.base + self.costs.plain_system_block
        total = overhead + sum(costs)
        return Tally(costs, overhead, 0, total, total, True, None)

    def _fast_costs(self, messages: Sequence[Any]) -> list[int] | None:
        """Each plain message's cost; ``None`` as soon as anything needs the general path."""
        if type(messages) is not list or not messages:
            return None
        if len(messages) > self.settings.max_messages:
            return None
        role_cost: Mapping[Any, int] = self.costs.role_cost
        # Typed as never missing: a miss gives None, whose addition raises TypeError,
        # which is how the comprehension below leaves for the cold path. (An annotation,
        # not typing.cast: this runs on every guarded call, and cast is a call.)
        front_get: Callable[[Any], int] = self.cache.front.get  # type: ignore[assignment]
        try:
            # Warm: every text counted before. Anything else raises here (a text not in
            # the cache adds None, a role or key that is missing, unhashable content).
            costs = [
                role_cost[m["role"]] + front_get(m["content"])
                for m in messages
                if type(m) is dict and len(m) == 2
            ]
        except (KeyError, TypeError):
            costs_or_none = self._fast_costs_cold(messages)
            if costs_or_none is None:
                return None
            costs = costs_or_none
        else:
            if len(costs) != len(messages):
                return None
        if self.costs.consumes_system and messages[0]["role"] == "system":
            costs[0] -= role_cost["system"]
        return costs

    def _fast_costs_cold(self, messages: list[Any]) -> list[int] | None:
        """:meth:`_fast_costs` when some texts are new: they are counted in one batch."""
        role_cost: Mapping[Any, int] = self.costs.role_cost
        front_get = self.cache.front.get
        costs: list[int] = []
        new_at: list[int] = []
        new_texts: list[str] = []
        try:
            for m in messages:
                if type(m) is not dict or len(m) != 2:
                    return None
                rc = role_cost.get(m.get("role"))
                content = m.get("content")
                if rc is None or type(content) is not str:
                    return None
                n = front_get(content)
                if n is None:
                    new_at.append(len(costs))
                    new_texts.append(content)
                    n = 0
                costs.append(rc + n)
        except TypeError:  # an unhashable role; the general path explains it
            return None
        if new_texts:
            # Problems (too much new text, a lone surrogate) are left to the general
            # path, which names the message.
            if sum(map(len, new_texts)) > self.settings.max_new_chars:
                return None
            for text in new_texts:
                if not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        return None
            for i, n in zip(new_at, self.cache.get_many(new_texts), strict=True):
                costs[i] += n
        return costs

    def count(self, request: Request) -> Tally:
        """Any message form, tools and images; exact against the template."""
        template = self.costs
        header_cost = template.header_cost
        image_tokens = self.settings.image_tokens
        normalized = [normalize_message(m, i) for i, m in enumerate(request.messages)]
        defs = render_tools(request.tools, request.functions)
        block, consumes_system = template.system_block(defs)
        budget = NewText(self.settings.max_new_chars)
        # Groq's rendering of tool forms and images is not confirmed: not reported exact.
        exact = not defs
        costs: list[int] = []
        for i, msg in enumerate(normalized):
            cost = header_cost[msg.header] + budget.counted(self.cache, msg.body, i)
            if msg.images:
                cost += msg.images * image_tokens
                exact = False
            if msg.tool_form:
                exact = False
            costs.append(cost)
        if consumes_system and normalized[0].header == "system":
            # Merged into the template's own system block, whose header is in the overhead.
            costs[0] -= header_cost["system"]
        overhead = template.base + template.plain_system_block
        tools = block - template.plain_system_block
        total = overhead + tools + sum(costs)
        return Tally(costs, overhead, tools, total, total, exact, None)
