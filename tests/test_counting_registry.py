"""The meter registry: which meter counts a model, what meters share, and how a new one plugs in."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.counting._calibration import BUCKET_EDGES, Calibration
from tokenguard.counting._estimate_meter import EstimateMeter
from tokenguard.counting._llama3_meter import Llama3Meter
from tokenguard.counting._messages import normalize_message
from tokenguard.counting._meter import Meter, NewText, Request, Resources, Settings, Tally
from tokenguard.counting._qwen3_meter import Qwen3Meter
from tokenguard.counting._registry import DEFAULT_FACTORIES, MeterRegistry
from tokenguard.models import ModelInfo, unregister_model

SETTINGS = Settings(
    cache_bytes=1 << 20,
    front_chars=1 << 16,
    max_new_chars=100_000,
    max_messages=1_000,
    image_tokens=100,
)


class CharacterMeter:
    """A meter of a made-up family: one token per character of each message, plus 3."""

    def __init__(self, info: ModelInfo, resources: Resources) -> None:
        self._info = info
        self.cache = resources.text_cache("characters", lambda: len)

    @classmethod
    def build(cls, info: ModelInfo, resources: Resources) -> CharacterMeter | None:
        return cls(info, resources) if info.tokenizer == "characters" else None

    @property
    def info(self) -> ModelInfo:
        return self._info

    def count_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> int | None:
        return None

    def prompt_fast(
        self,
        messages: Sequence[Any],
        tools: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Tally | None:
        return None

    def count(self, request: Request) -> Tally:
        budget = NewText(SETTINGS.max_new_chars)
        costs = [
            3 + budget.counted(self.cache, normalize_message(m, i).body, i)
            for i, m in enumerate(request.messages)
        ]
        return Tally(costs, 1, 0, 1 + sum(costs), 1 + sum(costs), True, None)


def test_a_new_family_plugs_in_as_one_more_factory() -> None:
    registry = MeterRegistry(SETTINGS, factories=(CharacterMeter.build, *DEFAULT_FACTORIES))
    info = ModelInfo("char-model", 1_000, 1_000, tokenizer="characters")
    meter: Meter = registry.meter(info)
    assert isinstance(meter, CharacterMeter)
    tally = meter.count(Request.of([{"role": "user", "content": "abcd"}], max_messages=10))
    assert tally.total == 1 + 3 + 4
    # The other models still reach their own meters.
    assert isinstance(registry.meter("llama-3.1-8b-instant"), Llama3Meter)
    assert isinstance(registry.meter("qwen/qwen3-32b"), Qwen3Meter)
    assert isinstance(registry.meter("example/estimated-qwen2"), EstimateMeter)


def test_meters_are_kept_until_the_model_entry_changes() -> None:
    registry = MeterRegistry(SETTINGS)
    meter = registry.meter("llama3-8b-8192")
    assert registry.meter("llama3-8b-8192") is meter
    tg.register_model("registry-test-model", context_window=8_192, tokenizer="llama3")
    try:
        first = registry.meter("registry-test-model")
        assert isinstance(first, EstimateMeter)  # a Llama 3 tokenizer but no template
        tg.register_model(
            "registry-test-model", context_window=8_192, tokenizer="llama3", template="llama3"
        )
        second = registry.meter("registry-test-model")
        assert isinstance(second, Llama3Meter)
    finally:
        unregister_model("registry-test-model")


def test_one_tokenizer_shares_one_cache_and_calibrations_survive_clearing() -> None:
    registry = MeterRegistry(SETTINGS)
    a = registry.meter("llama3-8b-8192")
    b = registry.meter("llama-3.3-70b-versatile")
    assert isinstance(a, Llama3Meter)
    assert isinstance(b, Llama3Meter)
    assert a.bodies is b.bodies
    assert a.rules is not b.rules  # one template each
    calibration = registry.calibration("example/estimated-qwen2")
    calibration.observe(content=100, overhead=10, actual=80)
    registry.clear_caches()
    assert registry.calibration("example/estimated-qwen2") is calibration
    assert calibration.samples() == 1


observations = st.lists(
    st.tuples(
        st.integers(0, 5_000),
        st.integers(0, 500),
        st.integers(1, 10_000),
        st.integers(0, len(BUCKET_EDGES)),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    seen=observations,
    request=st.tuples(st.integers(0, 20_000), st.integers(1, 2_000)),
    others=st.lists(st.tuples(st.integers(0, 20_000), st.integers(1, 2_000)), max_size=8),
    buckets=st.tuples(st.integers(0, len(BUCKET_EDGES)), st.integers(0, len(BUCKET_EDGES))),
)
def test_the_rates_bound_every_estimate_of_the_buckets_they_were_asked_for(
    seen: list[tuple[int, int, int, int]],
    request: tuple[int, int],
    others: list[tuple[int, int]],
    buckets: tuple[int, int],
) -> None:
    calibration = Calibration()
    for content, overhead, actual, bucket in seen:
        calibration.observe(content=content, overhead=overhead, actual=actual, bucket=bucket)
    lo, hi = sorted(buckets)
    rc, rv = calibration.rates(buckets=(lo, hi))
    assert rc >= 0
    assert rv >= 0
    for content, overhead in (request, *others):
        for bucket in range(lo, hi + 1):
            estimate = calibration.estimate(content=content, overhead=overhead, bucket=bucket)
            # The estimate is the ceiling of a real bound; so is a sum of ceilings.
            assert estimate <= math.ceil(rc * content + rv * overhead + 1e-9)
    # Never looser, for the request asked about, than the raw estimate scaled up as far
    # as calibration scales it (by the worst server count above it seen, plus 3%).
    raw_scale = max(
        [1.0] + [a / (c + v) * 1.03 for c, v, a, b in seen if lo <= b <= hi and c + v > 0 and a > 0]
    )
    assert rc * request[0] + rv * request[1] <= raw_scale * sum(request) * (1 + 1e-9) + 1e-6
