"""Budgets shared through Redis: one budget per key for every process on that Redis.

Every decision (hold, settle, release, read) is one run of ``lua/budget.lua``: one round
trip, atomic, on Redis time. A hold is leased: a process that dies (or hangs) with a
hold has it charged at its estimate when the lease runs out, so a crash can not make a
budget overspend; a settle that arrives after that corrects the charge to the usage.
Each decision is written once as a plan (see :mod:`tokenguard._drive`): a thread runs
it with the client it was given, an asyncio task with a ``redis.asyncio`` client made
from the same settings (one per event loop).

Invariant: the sum of the period's usage and of the holds in flight never passes a cap
through a hold; only usage reported above its estimate can take it past.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from importlib import resources
from typing import Any

import redis as redis_lib
import redis.exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._drive import Call, Plan
from ..errors import BudgetExceeded, BudgetUnavailable
from ._prices import from_pico
from ._status import BudgetStatus, status_from, text_of

__all__ = ["SharedStore", "prefix_of"]

_SOURCE = (resources.files("tokenguard._spend") / "lua" / "budget.lua").read_text()
_SHA = hashlib.sha1(_SOURCE.encode()).hexdigest()
_ERRORS = (redis_errors.RedisError, OSError)


class _Clients:
    """The connections every shared budget on one user's client uses: a client like it
    (same server, credentials, timeouts, TLS) whose commands are tried once, and one
    ``redis.asyncio`` client per event loop made the same way. A decision must fail fast
    when Redis is down, not after the client's retries with backoff (seconds), as the
    limiter's round trips do. Made once per user's client: a budget is opened per
    block, often per call, and must not open connections of its own."""

    def __init__(self, given: Any) -> None:
        self.given = given
        pool = given.connection_pool
        kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        self.sync = redis_lib.Redis(
            connection_pool=redis_lib.ConnectionPool(
                connection_class=pool.connection_class, **kwargs
            )
        )
        self._loops: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}

    def for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        found = self._loops.get(id(loop))
        if found is None or found[0] is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry as AsyncRetry

            from ..limiter._redis import _async_kwargs

            one = AsyncRetry(NoBackoff(), 0)
            found = (loop, aredis.Redis(**_async_kwargs(self.given), retry=one))
            self._loops[id(loop)] = found
        return found[1]


_clients: weakref.WeakKeyDictionary[Any, _Clients] = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def _clients_of(client: Any) -> _Clients:
    with _clients_lock:
        found = _clients.get(client)
        if found is None:
            found = _clients[client] = _Clients(client)
        return found


def prefix_of(key: str) -> str:
    """The Redis key prefix (one hash tag) of budget ``key``."""
    return "{tokenguard:budget:" + key + "}"


class SharedStore:
    """The Redis side of one shared budget: ``key`` on ``client``, a ``per`` window,
    holds leased for ``lease`` seconds."""

    def __init__(self, client: Any, key: str, per: str, lease: float) -> None:
        self._clients = _clients_of(client)
        self.client = self._clients.sync
        self.key = key
        self.per = per
        self.lease = lease
        self._prefix = prefix_of(key)
        #: The time the scripts use instead of Redis TIME (the property tests only).
        self.test_now: float | None = None

    def _argv(self, op: str, caps: tuple[int, int, int], rest: tuple[Any, ...]) -> list[Any]:
        now = "" if self.test_now is None else repr(self.test_now)
        return [op, now, self.per, repr(self.lease), *caps, *rest]

    def _run(self, argv: list[Any]) -> Any:
        try:
            try:
                return self.client.evalsha(_SHA, 1, self._prefix, *argv)
            except redis_errors.NoScriptError:
                # First use on this server (or after a restart or SCRIPT FLUSH).
                return self.client.eval(_SOURCE, 1, self._prefix, *argv)
        except _ERRORS as exc:
            raise self._unavailable(exc) from exc

    async def _arun(self, argv: list[Any]) -> Any:
        client = self._clients.for_loop()
        try:
            try:
                return await client.evalsha(_SHA, 1, self._prefix, *argv)
            except redis_errors.NoScriptError:
                return await client.eval(_SOURCE, 1, self._prefix, *argv)
        except _ERRORS as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> BudgetUnavailable:
        return BudgetUnavailable(
            f"shared budget {self.key!r}: Redis could not be reached or answered wrongly "
            f"({type(exc).__name__}: {exc})"
        )

    def _script(self, op: str, caps: tuple[int, int, int], *rest: Any) -> Call:
        argv = self._argv(op, caps, rest)
        return Call(self._run, self._arun, argv)

    # -- decisions, each one plan ------------------------------------------------------

    def hold_plan(
        self, caps: tuple[int, int, int], hold_id: str, tokens: int, pico: int, label: str
    ) -> Plan[None]:
        """Hold ``tokens``, one request and ``pico`` pico-dollars, or raise
        :class:`~tokenguard.BudgetExceeded` naming the cap that lacks the room."""
        reply = yield self._script("hold", caps, hold_id, tokens, pico)
        if int(reply[0]) == 1:
            return
        unit = text_of(reply[1])
        needed, left = int(text_of(reply[2])), int(text_of(reply[3]))
        if unit == "usd":
            need_usd, left_usd = from_pico(needed), from_pico(left)
            raise BudgetExceeded(
                f"a request estimated at ${need_usd:f} does not fit shared budget {label}: "
                f"${left_usd:f} remaining this period; nothing was sent",
                needed=need_usd,
                remaining=left_usd,
                unit="usd",
            )
        raise BudgetExceeded(
            f"a request of {needed} {unit} does not fit shared budget {label}: {left} "
            "remaining this period; nothing was sent",
            needed=needed,
            remaining=left,
            unit=unit,
        )

    def settle_plan(self, hold_id: str, tokens: int, pico: int) -> Plan[None]:
        """Replace the hold by the usage ``tokens`` and ``pico`` as reported."""
        yield self._script("settle", (-1, -1, -1), hold_id, tokens, pico)

    def release_plan(self, hold_id: str) -> Plan[None]:
        """Give the hold back: the request never reached the server."""
        yield self._script("release", (-1, -1, -1), hold_id, 0, 0)

    def read_plan(self) -> Plan[BudgetStatus]:
        """The budget's state now, without spending."""
        reply = yield Call(self._run, self._arun, ["read", self._now(), "", "0", -1, -1, -1])
        return status_from(self.key, reply)

    def _now(self) -> str:
        return "" if self.test_now is None else repr(self.test_now)
