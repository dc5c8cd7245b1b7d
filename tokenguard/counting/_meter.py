"""What a meter is: how one model's prompts are counted, behind one small protocol.

A meter (not a plan: plans are the guard's effect generators) is built once per model
by a :data:`MeterFactory` and answers every request for that model: :meth:`Meter.count`
on the general path (any message form, tools, images), :meth:`Meter.count_fast` and
:meth:`Meter.prompt_fast` for plain messages (with tool definitions seen before) in a
few microseconds, or ``None``.

Invariant: a fast path answers as the general path would, or not at all (Hypothesis
properties in tests/test_counting_prompt.py and test_counting_estimate.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from ..errors import InvalidMessages
from ..models import ModelInfo
from ._cache import TextCache
from ._calibration import Calibration
from ._result import CalibrationBasis
from ._sendable import check_field, check_messages
from ._tokenizers import is_utf8

__all__ = [
    "FastPath",
    "Meter",
    "MeterFactory",
    "NewText",
    "Request",
    "Resources",
    "Settings",
    "Tally",
    "ToolsMemo",
    "count_new",
]

V = TypeVar("V")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """The bounds every meter counts within (the options of :class:`~tokenguard.Counter`)."""

    cache_bytes: int
    front_chars: int
    max_new_chars: int
    max_messages: int
    image_tokens: int


@dataclass(frozen=True)
class Request:
    """One request to count: its messages (a non-empty sequence, checked by :meth:`of`),
    its tool definitions as given, and any other keyword that may change the prompt."""

    messages: Sequence[Any]
    tools: Sequence[Any] | None = None
    functions: Sequence[Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        messages: Sequence[Any],
        *,
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
        max_messages: int,
        options: Mapping[str, Any] | None = None,
    ) -> Request:
        """Check the shape of ``messages`` (each message is read by the meter) and that
        every value of the messages and tools can be sent (``_sendable``)."""
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise InvalidMessages(
                f"messages must be a list of message dicts, got {type(messages).__name__}"
            )
        if not messages:
            raise InvalidMessages("messages is empty; expected at least one message")
        if len(messages) > max_messages:
            raise InvalidMessages(f"{len(messages)} messages; at most {max_messages} are accepted")
        # Every family's reader then meets only values the SDKs can send.
        check_messages(messages)
        if tools is not None:
            check_field(tools, "tools")
        if functions is not None:
            check_field(functions, "functions")
        return cls(messages, tools, functions, options or {})


class Tally(NamedTuple):
    """One request counted, broken down: ``total`` is the prompt tokens.

    For an exact meter ``total == overhead + tools + sum(costs)``; for an estimate
    ``total`` may be lower (see :class:`~tokenguard.PromptCount`).
    """

    costs: list[int]
    overhead: int
    tools: int
    total: int
    #: The estimate before calibration (``total`` when exact).
    raw: int
    exact: bool
    basis: CalibrationBasis | None


class NewText:
    """Bounds the characters of not-yet-counted text that one request may bring."""

    __slots__ = ("chars", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chars = 0

    def counted(self, cache: TextCache[V], text: str, index: int) -> V:
        """``cache``'s value for ``text``, charging ``text`` to the bound on a miss."""
        value = cache.front.get(text)
        if value is None:
            self.chars += len(text)
            if self.chars > self.limit:
                raise InvalidMessages(
                    f"the request brings {self.chars:,} characters not counted before by "
                    f"this message; at most {self.limit:,} are accepted per request",
                    index=index,
                )
            value = cache.get_or_compute(text)
        return value


def count_new(cache: TextCache[V], texts: list[str], settings: Settings) -> list[V] | None:
    """The values of ``texts``, which a fast path did not find, counted in one batch;
    ``None`` when they are more new text than ``settings`` allow or not valid UTF-8
    (the general path then names the message)."""
    if sum(map(len, texts)) > settings.max_new_chars:
        return None
    # One scan of all of them in the common case (ASCII), each one's otherwise.
    if not "".join(texts).isascii() and not all(map(is_utf8, texts)):
        return None
    return cache.get_many(texts)


class FastPath:
    """:meth:`Meter.count_fast` and :meth:`Meter.prompt_fast` of a meter with a fast path.

    A meter defines ``_fast(messages, costs)``: plain messages counted as ``2 * tokens +
    unsure`` (``unsure``: the count is a bound, so the breakdown is not exact), each
    message's cost appended to ``costs`` when it is a list; ``None`` sends the request
    to the general path. :attr:`fast_overhead` is what such a count holds besides the
    messages. A meter that answers requests with tools or options as fast overrides
    :meth:`_fast_request`.
    """

    __slots__ = ()

    def _fast(self, messages: Sequence[Any], costs: list[int] | None) -> int | None:
        raise NotImplementedError

    def _fast_request(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None,
        options: Mapping[str, Any],
        costs: list[int] | None,
    ) -> tuple[int, int, int] | None:
        """``(2 * tokens + unsure, overhead, tools)`` of a request with tools or prompt
        options, as :meth:`_fast` counts it, or ``None``."""
        return None

    #: The tokens of a fast-path count that belong to no message (set by each meter).
    fast_overhead: int

    def count_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> int | None:
        """The prompt tokens of plain messages, or ``None`` (general path)."""
        if tools is None and not options:
            v = self._fast(messages, None)
        else:
            counted = self._fast_request(messages, tools, options or {}, None)
            v = None if counted is None else counted[0]
        return None if v is None else v >> 1

    def prompt_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Tally | None:
        """:meth:`count_fast` broken down per message, with whether it is exact."""
        costs: list[int] = []
        if tools is None and not options:
            v = self._fast(messages, costs)
            overhead, tools_cost = self.fast_overhead, 0
        else:
            counted = self._fast_request(messages, tools, options or {}, costs)
            v, overhead, tools_cost = (None, 0, 0) if counted is None else counted
        if v is None:
            return None
        total = v >> 1
        return Tally(costs, overhead, tools_cost, total, total, not v & 1, None)


class ToolsMemo(Generic[V]):
    """What a meter worked out for tool definitions and options, found again cheaply.

    Keyed by the definitions' JSON (two equal lists share an entry). A list seen again is
    found by its identity and confirmed equal to a copy (its JSON read back) taken when it
    was first seen, so it is not serialised on every call, and a list changed in place is
    worked out anew. Bounded: emptied when full.
    """

    __slots__ = ("_by_id", "_values", "limit")

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        # id(tools) -> (tools, a copy, options, key): holding ``tools`` keeps its id.
        self._by_id: dict[int, tuple[object, object, object, str]] = {}
        self._values: dict[str, V] = {}

    def key(self, tools: object, options: tuple[object, ...]) -> str | None:
        """The key of ``tools`` with ``options``, or ``None`` when they are not plain JSON."""
        seen = self._by_id.get(id(tools))
        if seen is not None and seen[0] is tools and seen[1] == tools and seen[2] == options:
            return seen[3]
        try:
            key = json.dumps([tools, options], separators=(",", ":"))
        except (TypeError, ValueError):
            return None  # SDK objects or a bad definition: the general path reads them
        # A copy lets the next call with this list skip the serialising. The key is one
        # already (plain JSON: reading it back costs a fraction of a deep copy or of the
        # serialising); a tuple stays a tuple so that it compares equal.
        tools_copy, options_copy = json.loads(key)
        if type(tools) is tuple:
            tools_copy = tuple(tools_copy)
        if len(self._by_id) >= self.limit:
            self._by_id.clear()
        self._by_id[id(tools)] = (tools, tools_copy, tuple(options_copy), key)
        return key

    def get(self, key: str) -> V | None:
        """The value kept for ``key``, if any."""
        return self._values.get(key)

    def put(self, key: str, value: V) -> None:
        """Keep ``value`` for ``key``."""
        if len(self._values) >= self.limit:
            self._values.clear()
            self._by_id.clear()
        self._values[key] = value


class Meter(Protocol):
    """How one model's prompts are counted."""

    @property
    def info(self) -> ModelInfo:
        """The model table entry the meter was built from."""
        ...

    def count_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> int | None:
        """The prompt tokens of plain messages (tools and options the meter renders
        itself, definitions seen before), or ``None`` (general path)."""
        ...

    def prompt_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Tally | None:
        """:meth:`count_fast` broken down, or ``None`` (general path)."""
        ...

    def count(self, request: Request) -> Tally:
        """Validate and count one request (any form the SDKs accept)."""
        ...


class Resources(Protocol):
    """What the registry shares between meters: settings, caches and calibrations."""

    @property
    def settings(self) -> Settings:
        """The counter's bounds."""
        ...

    def text_cache(
        self,
        key: Hashable,
        compute: Callable[[], Callable[[str], V]],
        compute_many: Callable[[], Callable[[list[str]], list[V]]] | None = None,
    ) -> TextCache[V]:
        """The cache of per-text values named ``key`` (one per tokenizer and rule),
        created with ``compute()`` (and ``compute_many()``: the same for many texts at
        once) on first use."""
        ...

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        """A value shared by the meters (fixed template costs, say), made on first use."""
        ...

    def calibration(self, model: str) -> Calibration:
        """The calibration of ``model``."""
        ...


#: Builds the meter for a model, or ``None`` when the model is not of its kind (the
#: registry then asks the next factory).
MeterFactory = Callable[[ModelInfo, Resources], Meter | None]
