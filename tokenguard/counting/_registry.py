"""Model -> meter, with the caches and calibrations the meters share.

The first factory of ``factories`` that accepts a model builds its meter; the meter is
kept until the model's table entry changes (``register_model`` makes a new
:class:`~tokenguard.ModelInfo`). Text caches are shared by every model of one tokenizer
(``"llama3"`` serves the whole Llama 3 family), calibrations are per model and survive
:meth:`MeterRegistry.clear_caches`.

To count a new tokenizer family exactly, write a meter class (see ``_meter.Meter``) with a
``build(info, resources)`` that returns ``None`` for models not of its family, and put
it in :data:`DEFAULT_FACTORIES` before :meth:`EstimateMeter.build`, the last resort.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar, cast

from ..errors import InvalidMessages
from ..models import ModelInfo, get_model
from ._cache import TextCache
from ._calibration import Calibration
from ._estimate_meter import EstimateMeter
from ._harmony_meter import HarmonyMeter
from ._llama3_meter import Llama3Meter
from ._llama4_meter import Llama4Meter
from ._meter import Meter, MeterFactory, Settings
from ._qwen3_meter import Qwen3Meter
from ._sendable import check_text_field

__all__ = ["DEFAULT_FACTORIES", "MeterRegistry"]

V = TypeVar("V")
T = TypeVar("T")

#: The meter kinds, tried in order; the estimate accepts every model.
DEFAULT_FACTORIES: tuple[MeterFactory, ...] = (
    Llama3Meter.build,
    Llama4Meter.build,
    HarmonyMeter.build,
    Qwen3Meter.build,
    EstimateMeter.build,
)

#: Meters kept before the registry starts over (models registered on the fly, say).
MAX_METERS = 1024


class MeterRegistry:
    """Finds and keeps the meter of each model, and what meters share. Thread-safe.

    Example::

        registry = MeterRegistry(settings)
        registry.meter("llama-3.1-8b-instant").count_fast(messages)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        factories: Sequence[MeterFactory] = DEFAULT_FACTORIES,
        calibration: Callable[[], Calibration] = Calibration,
    ) -> None:
        self._settings = settings
        self._factories = tuple(factories)
        self._new_calibration = calibration
        self._lock = threading.RLock()
        self._meters: dict[str, Meter] = {}
        self._caches: dict[Hashable, TextCache[Any]] = {}
        self._shared: dict[Hashable, object] = {}
        self._calibrations: dict[str, Calibration] = {}

    @property
    def settings(self) -> Settings:
        """The bounds the meters count within."""
        return self._settings

    def meter(self, model: str | ModelInfo) -> Meter:
        """The meter of ``model`` (a name in the model table, or a :class:`ModelInfo`)."""
        if isinstance(model, ModelInfo):
            info = model
        elif isinstance(model, str) and model:
            if not model.isascii():
                check_text_field(model, "model")
            info = get_model(model)
        else:
            raise InvalidMessages(f"model must be a non-empty str, got {model!r}")
        meter = self._meters.get(info.name)
        if meter is not None and meter.info is info:
            return meter
        meter = self._build(info)
        with self._lock:
            if len(self._meters) > MAX_METERS:
                self._meters.clear()
            self._meters[info.name] = meter
        return meter

    def _build(self, info: ModelInfo) -> Meter:
        for factory in self._factories:
            meter = factory(info, self)
            if meter is not None:
                return meter
        return EstimateMeter.build(info, self)

    def text_cache(
        self,
        key: Hashable,
        compute: Callable[[], Callable[[str], V]],
        compute_many: Callable[[], Callable[[list[str]], list[V]]] | None = None,
    ) -> TextCache[V]:
        """The cache named ``key``, created with ``compute()`` (and ``compute_many()``,
        the same for many texts at once) on first use."""
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = TextCache(
                    compute(),
                    compute_many=None if compute_many is None else compute_many(),
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
        """Forget every cached count (calibrations and meters are kept)."""
        for cache in self.caches():
            cache.clear()
