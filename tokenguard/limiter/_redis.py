"""The shared backend: the window and the FIFO queue live in Redis.

Every decision is one Lua script (one round trip, atomic) using Redis ``TIME``,
so clients on different machines agree without synchronised clocks. Waiters hold
a ticket in a queue with a lease they renew while waiting; a crashed waiter's
place expires after ``lease`` seconds. A waiter blocks in ``BLPOP`` on its own
wake-up list until the computed time (or its lease renewal); whoever changes
what the head waits for pushes to the head's list, so nobody polls. All keys
share the hash tag ``{key}`` and expire when unused.

The asyncio face uses a ``redis.asyncio`` client built from the sync client's
connection settings (one per event loop), so waiting never blocks the loop. Each
decision is written once, as a plan (see :mod:`tokenguard._drive`) that yields a
script call or a ``BLPOP``; only those two differ between a thread and a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis as redis_lib
import redis.asyncio as aredis
from redis.commands.core import AsyncScript, Script

from .._drive import Call, Plan, run_sync
from ..errors import LimiterUnavailable
from ..events import RefundsLearned, emit
from ._backend import Step, Ticket
from ._headers import ServerView
from ._window import WindowLimits

__all__ = ["RedisBackend"]

_ERRORS = (redis_lib.exceptions.ConnectionError, redis_lib.exceptions.TimeoutError, OSError)


class _Reaching:
    """Turns a failure to reach Redis into :class:`LimiterUnavailable` (a class, not
    ``contextlib.contextmanager``: it wraps every round trip, and costs a fifth)."""

    __slots__ = ("_where",)

    def __init__(self, where: str) -> None:
        self._where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, _ERRORS):
            raise LimiterUnavailable(f"Redis limiter at key {self._where!r}: {exc}") from exc


def _source(name: str, algorithm: str = "window") -> str:
    lua = resources.files("tokenguard.limiter") / "lua"
    parts = ["lib"]
    if algorithm == "bucket":
        # The bucket model replaces the window's decisions; its own settle and observe.
        parts.append("bucket")
        name = {"settle": "bsettle", "observe": "bobserve"}.get(name, name)
    parts.append(name)
    return "\n".join((lua / f"{part}.lua").read_text() for part in parts)


@dataclass
class RedisCharge:
    rid: str
    tokens: int
    bucket: int
    mark_tokens: int
    mark_requests: int
    sure_tokens: int


def _view_args(view: ServerView | None, charge: RedisCharge | None) -> list[Any]:
    def v(x: float | None) -> Any:
        return -1 if x is None else x

    if view is None:
        return [-1] * 9
    return [
        v(view.remaining_tokens),
        v(view.reset_tokens),
        v(view.limit_tokens),
        v(view.remaining_requests),
        v(view.reset_requests),
        v(view.limit_requests),
        v(view.retry_after),
        charge.mark_tokens if charge else -1,
        charge.mark_requests if charge else -1,
    ]


_COPIED = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "client_name",
    "credential_provider",
    "protocol",
)


def _async_kwargs(client: redis_lib.Redis) -> dict[str, Any]:
    """Connection settings of a sync client, for a ``redis.asyncio`` client."""
    pool = client.connection_pool
    given = pool.connection_kwargs
    kwargs = {k: given[k] for k in _COPIED if k in given}
    if "path" in given:
        kwargs["unix_socket_path"] = given["path"]
    if "SSL" in getattr(pool, "connection_class", type(None)).__name__:
        kwargs["ssl"] = True
        kwargs.update({k: v for k, v in given.items() if k.startswith("ssl_")})
    retry = given.get("retry")
    if isinstance(retry, redis_lib.retry.Retry):
        # Keep the sync client's retry policy: redis.asyncio's default retries a dead
        # server with backoff for seconds, so asyncio callers would wait past max_wait
        # for a LimiterUnavailable that threads get at once.
        from redis.asyncio.retry import Retry as AsyncRetry

        kwargs["retry"] = AsyncRetry(
            getattr(retry, "_backoff"),  # noqa: B009 (no public reader in redis-py)
            retry.get_retries(),
            getattr(retry, "_supported_errors"),  # noqa: B009
        )
    return kwargs


class RedisBackend:
    """Decisions in Redis under ``{key}``; see the module docstring."""

    def __init__(
        self,
        limits: WindowLimits,
        client: redis_lib.Redis,
        *,
        key: str,
        lease: float,
        header_lag: float = 0.0,
        refunds: bool | None = None,
        algorithm: str = "window",
    ) -> None:
        self._client = client
        self._refunds = -1 if refunds is None else int(refunds)
        self._policy = refunds
        self._prefix = "{" + key + "}"
        self._reaching = _Reaching(self._prefix)
        self._lease = lease
        # Renew the lease well before it runs out, whatever we are waiting for.
        self._max_block = max(lease / 3, 0.01)
        socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        if isinstance(socket_timeout, (int, float)) and socket_timeout > 0:
            # A BLPOP longer than the socket timeout would fail as a timeout.
            self._max_block = min(self._max_block, socket_timeout * 0.8)
        self._common: list[Any] = [
            limits.window,
            *(-1 if x is None else x for x in (limits.tpm, limits.rpm, limits.tpd, limits.rpd)),
            lease,
            header_lag,
        ]
        self._names = ("acquire", "settle", "leave", "observe")
        self._sources = {name: _source(name, algorithm) for name in self._names}
        self._scripts: dict[str, Script] = {
            n: client.register_script(src) for n, src in self._sources.items()
        }
        self._test_clock: Callable[[], float] | None = None  # tests only: see _args
        self._aclients: dict[int, tuple[asyncio.AbstractEventLoop, aredis.Redis]] = {}
        self._ascripts: dict[int, dict[str, AsyncScript]] = {}

    # -- I/O: the only part a thread and an asyncio task do differently -------------

    def _call(self, name: str, args: list[Any]) -> Any:
        with self._reaching:
            return self._scripts[name](keys=[self._prefix], args=self._args(args))

    async def _acall(self, name: str, args: list[Any]) -> Any:
        with self._reaching:
            scripts = self._aclient()[1]
            return await scripts[name](keys=[self._prefix], args=self._args(args))

    def _blpop(self, key: str, block: float) -> None:
        with self._reaching:
            self._client.blpop([key], timeout=block)

    async def _ablpop(self, key: str, block: float) -> None:
        with self._reaching:
            await self._aclient()[0].blpop([key], timeout=block)

    def _args(self, args: list[Any]) -> list[Any]:
        # Every script's last argument is the time to use instead of Redis TIME: always
        # empty in use; only the property tests set `_test_clock` to replay interleavings
        # on a fake clock (see now_s in lua/lib.lua).
        clock = self._test_clock
        return [*self._common, *args, "" if clock is None else repr(clock())]

    def _script(self, name: str, args: list[Any]) -> Call:
        """The effect of running one Lua script (one round trip); its reply is the result."""
        return Call(self._call, self._acall, name, args)

    def _aclient(self) -> tuple[aredis.Redis, dict[str, AsyncScript]]:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(id(loop))
        if entry is None or entry[0] is not loop:
            client = aredis.Redis(**_async_kwargs(self._client))
            self._aclients[id(loop)] = (loop, client)
            self._ascripts[id(loop)] = {
                n: client.register_script(src) for n, src in self._sources.items()
            }
            entry = self._aclients[id(loop)]
        return entry[1], self._ascripts[id(loop)]

    async def aclose(self) -> None:
        entry = self._aclients.pop(id(asyncio.get_running_loop()), None)
        self._ascripts.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry[1].aclose()

    # -- decisions, each one plan ------------------------------------------------------

    def _step(self, ticket: Ticket, reply: list[Any]) -> Step:
        status, now = int(reply[0]), float(reply[1])
        if status == 1:
            bucket, adm, admr, sure = (int(x) for x in reply[2:6])
            charge = RedisCharge(ticket.id, ticket.tokens, bucket, adm, admr, sure)
            return Step(now, charge=charge)
        if status == 2:
            return Step(now, until=float(reply[2]))
        if status == 0:
            needed, head_at = float(reply[2]), float(reply[3])
            return Step(
                now,
                # Right behind the head: poll when the head may go (it may have crashed).
                until=head_at if head_at >= 0 else None,
                needed_until=needed if needed >= 0 else None,
            )
        return Step(now, lost=status == 3)

    def start_plan(self, ticket: Ticket) -> Plan[Step]:
        ticket.id = uuid.uuid4().hex
        args = ["start", ticket.id, ticket.tokens, int(ticket.estimate)]
        return self._step(ticket, (yield self._script("acquire", args)))

    def poll_plan(self, ticket: Ticket) -> Plan[Step]:
        args = ["poll", ticket.id, ticket.tokens, 0]
        return self._step(ticket, (yield self._script("acquire", args)))

    def leave_plan(self, ticket: Ticket) -> Plan[None]:
        # Best effort: if Redis is gone, the lease frees the place anyway.
        if ticket.id:
            with contextlib.suppress(LimiterUnavailable):
                yield self._script("leave", [ticket.id])

    def wait_plan(self, ticket: Ticket, timeout: float | None) -> Plan[None]:
        # Block on our own wake-up list, never longer than the lease renewal needs.
        block = max(self._max_block if timeout is None else min(timeout, self._max_block), 0.0)
        if block >= 0.001:
            yield Call(self._blpop, self._ablpop, f"{self._prefix}:w:{ticket.id}", block)

    def settle_plan(
        self, charge: RedisCharge, actual: int | None, view: ServerView | None
    ) -> Plan[None]:
        args = [
            charge.rid,
            charge.tokens,
            -1 if actual is None else actual,
            charge.bucket,
            *_view_args(view, charge),
            self._refunds,
            charge.sure_tokens,
        ]
        reply = yield self._script("settle", args)
        if actual is not None:
            charge.tokens = actual
            charge.bucket = int(reply[1])
        self._learned(reply[2:])

    def observe_plan(self, view: ServerView) -> Plan[None]:
        reply = yield self._script("observe", [*_view_args(view, None), self._refunds])
        self._learned(reply[1:])

    @property
    def refunds(self) -> bool | None:
        """Whether commits free unused tokens: as set, or as learned by any process on
        this key (None: learning), as of this process's last commit or observe."""
        return self._policy

    def _learned(self, fields: list[Any]) -> None:
        # The scripts end their reply with the refunds state and a lesson (see
        # refunds_reply in lua/lib.lua); the process that learned it reports it.
        state = int(fields[0])
        self._policy = None if state < 0 else bool(state)
        evidence = fields[1].decode() if isinstance(fields[1], bytes) else str(fields[1])
        if evidence:
            emit(
                RefundsLearned(
                    refunds=False,
                    evidence=evidence,
                    server_used=int(fields[2]),
                    ledger_used=int(fields[3]),
                )
            )

    # -- the same decisions as plain calls in this thread (tests, tools) -----------------

    def start(self, ticket: Ticket) -> Step:
        return run_sync(self.start_plan(ticket))

    def poll(self, ticket: Ticket) -> Step:
        return run_sync(self.poll_plan(ticket))

    def leave(self, ticket: Ticket) -> None:
        run_sync(self.leave_plan(ticket))

    def settle(self, charge: RedisCharge, actual: int | None, view: ServerView | None) -> None:
        run_sync(self.settle_plan(charge, actual, view))

    def observe(self, view: ServerView) -> None:
        run_sync(self.observe_plan(view))
