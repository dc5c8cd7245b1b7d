"""Model -> plan, with the caches and calibrations the plans share.

The first factory of ``factories`` that accepts a model builds its plan; the plan is
kept until the model's table entry changes (``register_model`` makes a new
:class:`~tokenguard.ModelInfo`). Text caches are shared by every model of one tokenizer
(``"llama3"`` serves the whole Llama 3 family), calibrations are per model and survive
:meth:`PlanRegistry.clear_caches`.

To count a new tokenizer family exactly, write a plan class (see ``_plan.Plan``) with a
``build(info, resources)`` that returns ``None`` for models not of its family, and put
it in :data:`DEFAULT_FACTORIES` before :meth:`EstimatePlan.build`, the last resort.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar, cast

from ..errors import InvalidMessages
from ..models import ModelInfo, get_model
from ._cache import TextCache
from ._calibration import Calibration
from ._estimate_plan import EstimatePlan
from ._harmony_plan import HarmonyPlan
from ._llama3_plan import Llama3Plan
from ._llama4_plan import Llama4Plan
from ._plan import Plan, PlanFactory, Settings
from ._qwen3_plan import Qwen3Plan
from ._sendable import check_text_field

__all__ = ["DEFAULT_FACTORIES", "PlanRegistry"]

V = TypeVar("V")
T = TypeVar("T")

#: The plan kinds, tried in order; the estimate accepts every model.
DEFAULT_FACTORIES: tuple[PlanFactory, ...] = (
    Llama3Plan.build,
    Llama4Plan.build,
    HarmonyPlan.build,
    Qwen3Plan.build,
    EstimatePlan.build,
)

#: Plans kept before the registry starts over (models registered on the fly, say).
MAX_PLANS = 1024


class PlanRegistry:
    """Finds and keeps the plan of each model, and what plans share. Thread-safe.

    Example::

        registry = PlanRegistry(settings)
        registry.plan("llama-3.1-8b-instant").count_fast(messages)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        factories: Sequence[PlanFactory] = DEFAULT_FACTORIES,
        calibration: Callable[[], Calibration] = Calibration,
    ) -> None:
        self._settings = settings
        self._factories = tuple(factories)
        self._new_calibration = calibration
        self._lock = threading.RLock()
        self._plans: dict[str, Plan] = {}
        self._caches: dict[Hashable, TextCache[Any]] = {}
        self._shared: dict[Hashable, object] = {}
        self._calibrations: dict[str, Calibration] = {}

    @property
    def settings(self) -> Settings:
        """The bounds the plans count within."""
        return self._settings

    def plan(self, model: str | ModelInfo) -> Plan:
        """The plan of ``model`` (a name in the model table, or a :class:`ModelInfo`)."""
        if isinstance(model, ModelInfo):
            info = model
        elif isinstance(model, str) and model:
            if not model.isascii():
                check_text_field(model, "model")
            info = get_model(model)
        else:
            raise InvalidMessages(f"model must be a non-empty str, got {model!r}")
        plan = self._plans.get(info.name)
        if plan is not None and plan.info is info:
            return plan
        plan = self._build(info)
        with self._lock:
            if len(self._plans) > MAX_PLANS:
                self._plans.clear()
            self._plans[info.name] = plan
        return plan

    def _build(self, info: ModelInfo) -> Plan:
        for factory in self._factories:
            plan = factory(info, self)
            if plan is not None:
                return plan
        return EstimatePlan.build(info, self)

    def text_cache(self, key: Hashable, compute: Callable[[], Callable[[str], V]]) -> TextCache[V]:
        """The cache named ``key``, created with ``compute()`` on first use."""
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = TextCache(
                    compute(),
                    max_bytes=self._settings.cache_bytes,
                    front_chars=self._settings.front_chars,
                )
                self._caches[key] = cache
        return cast("TextCache[V]", cache)

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        """The value named ``key``, made on first use."""
        with self._lock:
            if key not in self._shared:
                self._shared[key] = make()
            return cast("T", self._shared[key])

    def calibration(self, model: str) -> Calibration:
        """The calibration of ``model`` (created on first use)."""
        cal = self._calibrations.get(model)
        if cal is None:
            with self._lock:
                cal = self._calibrations.setdefault(model, self._new_calibration())
        return cal

    def caches(self) -> list[TextCache[Any]]:
        """Every text cache made so far."""
        with self._lock:
            return list(self._caches.values())

    def clear_caches(self) -> None:
        """Forget every cached count (calibrations and plans are kept)."""
        for cache in self.caches():
            cache.clear()
