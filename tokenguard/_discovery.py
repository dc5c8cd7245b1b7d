"""What a server says of a model the table lacks: ``GET {base_url}/models/{model}``.

Groq's model object carries ``context_window`` and ``max_completion_tokens``. For a
model not in the table, the guard asks once per (base URL, model) and believes the
answer for ``ttl`` seconds; a lookup that fails (404, no answer, a refusal, limits
missing or out of bounds) is reported as one ``tokenguard.models.discovery_failed``
event and tried again ``failure_ttl`` seconds later, and meanwhile the model gets the
table's unknown-model defaults (a small window: the guard errs on the side of sending
less). Invariant: what the server says is believed only as a positive int of at most
:data:`MAX_TOKENS`; a table entry (built in, or set by ``register_model``) always wins,
so nothing here is asked about a known model.

The lookup goes through the instrumented client (``client.models.retrieve``), or for a
decorated function through ``httpx`` to the guard's ``base_url``; only the guard looks
models up (counting, fitting and ``tg.get_model`` never do I/O).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._drive import Call, Plan, run_async, run_sync
from .events import ModelsDiscovered, ModelsDiscoveryFailed, emit
from .models import UNKNOWN_MODEL_DEFAULTS, ModelInfo, get_model, table_entry

__all__ = [
    "DEFAULT_TTL",
    "FAILURE_TTL",
    "MAX_TOKENS",
    "TIMEOUT",
    "ModelDirectory",
    "default_directory",
    "discover",
    "discover_async",
    "lookup_plan",
    "model_info",
]

#: Seconds a discovered model's limits are believed before they are asked again.
DEFAULT_TTL = 3600.0
#: Seconds before a failed lookup is tried again (the defaults apply meanwhile).
FAILURE_TTL = 60.0
#: The largest context window or completion believed: 16 Mi tokens, 64 times the
#: largest window Groq serves today (262,144); anything larger is a broken answer.
MAX_TOKENS = 1 << 24
#: Seconds one lookup may take before it counts as unreachable.
TIMEOUT = 5.0
#: Lookups kept; the cache starts over past this (a process naming many models).
MAX_ENTRIES = 256


@dataclass(frozen=True, slots=True)
class _Entry:
    info: ModelInfo | None  # None: the last lookup failed
    expires: float


class _Failed(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _bounded(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TOKENS:
        return None
    return value


def _info_from(model: str, payload: object) -> ModelInfo:
    """The entry a model object describes, or :class:`_Failed` ("invalid")."""
    if not isinstance(payload, Mapping):
        raise _Failed("invalid")
    window = _bounded(payload, "context_window")
    if window is None:
        raise _Failed("invalid")
    completion = _bounded(payload, "max_completion_tokens")
    # A completion limit larger than the window cannot be used; a missing one is the window.
    completion = window if completion is None else min(completion, window)
    return ModelInfo(model, window, completion)


def _payload_of(obj: Any) -> object:
    """The JSON of an SDK model object (its declared fields and the extra ones)."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump()
    return obj


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _failure(exc: BaseException) -> _Failed:
    status = _status_of(exc)
    if status is None:
        return _Failed("unreachable")
    return _Failed("not_found" if status == 404 else "refused", status)


def _url(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}/models/{urllib.parse.quote(model, safe='/')}"


def _shown(base_url: str) -> str:
    """``base_url`` as an event may carry it: without a user, password or query (where
    a URL may hold a secret)."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _headers() -> dict[str, str]:
    key = os.environ.get("GROQ_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _fetch(base_url: str, model: str, client: Any) -> object:
    if client is not None:
        return _payload_of(client.models.retrieve(model, timeout=TIMEOUT))
    import httpx

    reply = httpx.get(_url(base_url, model), headers=_headers(), timeout=TIMEOUT)
    reply.raise_for_status()
    return reply.json()


async def _fetch_async(base_url: str, model: str, client: Any) -> object:
    if client is not None:
        return _payload_of(await client.models.retrieve(model, timeout=TIMEOUT))
    import httpx

    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        reply = await http.get(_url(base_url, model), headers=_headers())
    reply.raise_for_status()
    return reply.json()


class ModelDirectory:
    """Discovered models per (base URL, model), each believed for a bounded time.

    ``clock`` is injected (seconds, monotonic) so that tests can age the entries.

    Example::

        directory = ModelDirectory()
        directory.discover("http://127.0.0.1:8000/openai/v1", "acme/new-model", client)
        directory.model_info("http://127.0.0.1:8000/openai/v1", "acme/new-model")
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        failure_ttl: float = FAILURE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0 or not failure_ttl > 0:
            raise ValueError(f"ttl and failure_ttl must be > 0, got {ttl!r}, {failure_ttl!r}")
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def model_info(self, base_url: str, model: str) -> ModelInfo:
        """The table's entry for ``model``, else what ``base_url`` said of it (even when
        due to be asked again), else the unknown-model defaults (:func:`get_model`)."""
        info = table_entry(model)
        if info is not None:
            return info
        entry = self._entries.get((base_url, model))
        if entry is not None and entry.info is not None:
            return entry.info
        return get_model(model)

    def due(self, base_url: str, model: str) -> bool:
        """Whether ``model`` is not in the table and its last lookup has expired."""
        if table_entry(model) is not None:
            return False
        entry = self._entries.get((base_url, model))
        return entry is None or entry.expires <= self._clock()

    def lookup_plan(self, base_url: str, model: str, client: Any = None) -> Plan[ModelInfo]:
        """Ask ``base_url`` about ``model`` when due (one effect), then :meth:`model_info`."""
        if self.due(base_url, model):
            try:
                payload = yield Call(_fetch, _fetch_async, base_url, model, client)
            except Exception as exc:
                self._settle(base_url, model, None, exc)
            else:
                self._settle(base_url, model, payload, None)
        return self.model_info(base_url, model)

    def discover(self, base_url: str, model: str, client: Any = None) -> ModelInfo:
        """:meth:`lookup_plan` run in this thread."""
        return run_sync(self.lookup_plan(base_url, model, client))

    async def discover_async(self, base_url: str, model: str, client: Any = None) -> ModelInfo:
        """:meth:`lookup_plan` run in this task (an async client, an async function)."""
        return await run_async(self.lookup_plan(base_url, model, client))

    def _settle(
        self, base_url: str, model: str, payload: object, exc: BaseException | None
    ) -> None:
        info: ModelInfo | None = None
        failed = None if exc is None else _failure(exc)
        if failed is None:
            try:
                info = _info_from(model, payload)
            except _Failed as bad:
                failed = bad
        now = self._clock()
        ttl = self.ttl if info is not None else self.failure_ttl
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[(base_url, model)] = _Entry(info, now + ttl)
        if info is not None:
            emit(
                ModelsDiscovered(
                    model=model,
                    base_url=_shown(base_url),
                    context_window=info.context_window,
                    max_completion_tokens=info.max_completion_tokens,
                    ttl_s=ttl,
                )
            )
        elif failed is not None:
            emit(
                ModelsDiscoveryFailed(
                    model=model,
                    base_url=_shown(base_url),
                    reason=failed.reason,
                    status=failed.status,
                    context_window=int(UNKNOWN_MODEL_DEFAULTS["context_window"]),
                    retry_s=ttl,
                    hint="tokenguard.register_model() sets its context window and tokenizer",
                )
            )

    def clear(self) -> None:
        """Forget every lookup."""
        with self._lock:
            self._entries.clear()


_default = ModelDirectory()


def default_directory() -> ModelDirectory:
    """The directory the guards share."""
    return _default


def model_info(base_url: str, model: str) -> ModelInfo:
    """:meth:`ModelDirectory.model_info` of the shared directory."""
    return _default.model_info(base_url, model)


def lookup_plan(base_url: str, model: str, client: Any = None) -> Plan[ModelInfo]:
    """:meth:`ModelDirectory.lookup_plan` of the shared directory (for the guard's plan)."""
    return _default.lookup_plan(base_url, model, client)


def discover(base_url: str, model: str, client: Any = None) -> ModelInfo:
    """:meth:`ModelDirectory.discover` of the shared directory."""
    return _default.discover(base_url, model, client)


async def discover_async(base_url: str, model: str, client: Any = None) -> ModelInfo:
    """:meth:`ModelDirectory.discover_async` of the shared directory."""
    return await _default.discover_async(base_url, model, client)
