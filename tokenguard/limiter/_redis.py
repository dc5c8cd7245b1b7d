"""The shared backend: the limiter's state and its FIFO queue live in Redis, under ``{key}``.

Invariant: every decision is one Lua script (one round trip, atomic) on Redis time, and
every round trip has a deadline (what is left of the caller's ``max_wait`` plus
:data:`GRACE`, never more than the round-trip limit); times a script returns become waits
on this process's monotonic clock, so ``max_wait`` holds whatever Redis's clock does.
Waiters block in ``BLPOP`` on their own wake-up list, renewing a leased queue place, and
those of one process whose deadlines come together share their last poll (see
:class:`_LastPolls`); the thread and asyncio faces run the same plans (see
:mod:`tokenguard._drive`). How waits, leases, lost replies, restarts and clocks are
handled: docs/guide/redis.md and the reliability page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis as redis_lib
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from .._drive import Call, Plan, Sleep, run_sync
from ..errors import LimiterUnavailable
from ..events import LimiterRefundsLearned, emit
from ._backend import Soonest, Step, Ticket
from ._headers import ServerView
from ._queue import BATCH_SHARE
from ._state import LimitChange
from ._window import WindowLimits

__all__ = ["GRACE", "ROUND_TRIP", "WAITER_LEASE", "RedisBackend"]

#: Seconds a round trip may take past what is left of its caller's ``max_wait``
#: before it is given up: a healthy Redis answers in well under a millisecond, and
#: this leaves room for a loaded host without holding a caller much past its wait.
GRACE = 0.5
# How late Redis may end a BLPOP: it checks blocked clients' timeouts on its timer,
# ``hz`` times a second (10 by default).
SERVER_TICK = 0.1

#: Seconds a round trip with no caller deadline may take (a wait without
#: ``max_wait``, ``commit``, ``cancel``, ``observe``) when the client has no
#: ``socket_timeout``; with one, that is the limit.
ROUND_TRIP = 5.0

#: Seconds a waiter's queue place lasts unless renewed (the limiter's ``lease`` when
#: shorter): a waiter renews it four times as often, so a dead one (a killed process)
#: leaves the head of the queue within this time and the others move on.
WAITER_LEASE = 2.0

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


def _late(seconds: float) -> redis_lib.exceptions.TimeoutError:
    return redis_lib.exceptions.TimeoutError(
        f"Redis did not answer within {seconds:.3f}s (the round trip's limit; the "
        "connection was closed)"
    )


class _Connections:
    """This backend's own connections for threads, made like the client's, each used
    by one round trip at a time and closed as soon as one fails or runs late (its
    reply could still arrive and be read as the next command's)."""

    __slots__ = ("_idle", "_make", "_pid")

    def __init__(self, client: redis_lib.Redis) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # One attempt per round trip: the client's retries (with backoff) would run
        # past the deadline; a refused connection is LimiterUnavailable at once.
        kwargs["retry"] = redis_lib.retry.Retry(NoBackoff(), 0)
        kind = pool.connection_class
        self._make: Callable[[], Any] = lambda: kind(**kwargs)
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def _take(self) -> tuple[Any, bool]:
        if self._pid != os.getpid():
            # A forked child must not share its parent's sockets.
            self._idle, self._pid = [], os.getpid()
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:  # another thread took the last one
                break
            try:
                # Pending bytes or a closed socket (the server restarted): start afresh.
                if not conn.can_read(0):
                    return conn, False
            except (redis_lib.exceptions.RedisError, OSError):
                pass
            conn.disconnect()
        return self._make(), True

    def run(self, until: float, *command: Any) -> Any:
        """Send ``command`` and read its reply, both before ``until`` (monotonic)."""
        limit = until - time.monotonic()
        conn, fresh = self._take()
        try:
            if fresh:
                # The handshake (AUTH, SELECT, ...) reads with the socket's timeout.
                left = until - time.monotonic()
                conn.socket_connect_timeout = conn.socket_timeout = max(left, 0.001)
                conn.connect()
            conn.send_command(*command, check_health=False)
            left = until - time.monotonic()
            if left <= 0 or not conn.can_read(timeout=left):
                raise _late(limit)
            reply = conn.read_response()
        except redis_lib.exceptions.ResponseError:
            self._idle.append(conn)  # an error reply (NOSCRIPT): the connection is fine
            raise
        except BaseException:
            conn.disconnect()
            raise
        self._idle.append(conn)
        return reply

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()


class _AsyncConnections:
    """:class:`_Connections` for one event loop (``redis.asyncio`` connections)."""

    __slots__ = ("_idle", "client", "lasts", "loop")

    def __init__(self, client: redis_lib.Redis, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: The loop's polls at their deadlines, in batches.
        self.lasts = _AsyncLastPolls(loop)
        # One attempt per round trip, as for threads.
        retry = AsyncRetry(NoBackoff(), 0)
        self.client = aredis.Redis(**{**_async_kwargs(client), "retry": retry})
        self._idle: list[Any] = []

    async def run(self, until: float, *command: Any) -> Any:
        """:meth:`_Connections.run` without blocking the loop."""
        limit = until - time.monotonic()
        if self._idle:
            conn = self._idle.pop()
        else:
            pool = self.client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
        try:
            if limit <= 0:
                raise _late(0.0)
            try:
                reply = await _within(limit, _exchange(conn, command))
            except TimeoutError:
                raise _late(limit) from None
        except redis_lib.exceptions.ResponseError:
            self._idle.append(conn)  # an error reply (NOSCRIPT): the connection is fine
            raise
        except BaseException:
            # Cancelled mid-exchange (by the deadline or the caller): its reply may
            # still come, so the connection goes.
            await _drop(conn)
            raise
        self._idle.append(conn)
        return reply

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await _drop(conn)
        await self.client.aclose()


async def _within(limit: float, work: Awaitable[Any]) -> Any:
    """``await work``, raising ``TimeoutError`` after ``limit`` seconds. In this task:
    ``wait_for`` on 3.11 runs it in a task of its own, a turn of the loop more each way
    (mypy checks for 3.10, hence the test of the version)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(limit):
            return await work
    return await asyncio.wait_for(work, limit)


async def _exchange(conn: Any, command: tuple[Any, ...]) -> Any:
    if not conn.is_connected:
        await conn.connect()
    await conn.send_command(*command, check_health=False)
    return await conn.read_response()


async def _drop(conn: Any) -> None:
    # Closing a broken connection: nothing more to learn from its errors.
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


class _Due:
    """One waiter's poll at its deadline, waiting for a batch's round trip: its ticket,
    when its round trip is given up, and its reply (or the error instead); ``fut`` for
    a task's, ``state`` for a thread's (see _LastPolls)."""

    __slots__ = ("error", "fut", "reply", "state", "ticket", "until")

    def __init__(self, ticket: Ticket, until: float) -> None:
        self.ticket = ticket
        self.until = until
        self.reply: Any = None
        self.error: BaseException | None = None
        self.fut: asyncio.Future[Any] | None = None
        self.state = _WAITING

    def answer(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.reply


# A thread's _Due: waiting for its batch, told to send the next batch, answered.
_WAITING, _LEAD, _ANSWERED = 0, 1, 2


def _ticket_args(t: Ticket) -> tuple[str, int, int, int]:
    """A ticket as lua/acquire.lua reads it: id, tokens, the soonest flag, its class."""
    return t.id, t.tokens, int(t.estimate), int(t.batch)


def _last_args(batch: list[_Due], classes: tuple[float, float, int]) -> list[Any]:
    """The "last" decision for every ticket of ``batch`` (lua/acquire.lua); ``classes``:
    the queue's options (``RedisBackend._class``)."""
    args: list[Any] = ["last", *classes]
    for due in batch:
        args += _ticket_args(due.ticket)
    return args


def _answers(batch: list[_Due], replies: Any) -> list[Any]:
    """One reply per ticket, as the script promises; anything else is an error."""
    if not isinstance(replies, list) or len(replies) != len(batch):
        raise redis_lib.exceptions.ResponseError(
            f"the last poll of {len(batch)} tickets had a reply of {type(replies).__name__} "
            f"{str(replies)[:80]}; expected one reply per ticket"
        )
    return replies


def _for_each(error: BaseException, n: int) -> list[BaseException]:
    """The error of a batch's round trip for each of its ``n`` waiters, the sender first:
    raised in several threads or tasks, one object would gather their tracebacks, so
    the others get a twin; an interruption of the sender (``KeyboardInterrupt``) is its
    own, the others only lost their reply."""
    if isinstance(error, LimiterUnavailable):
        cause: BaseException | None = error.__cause__
        args = error.args
    elif isinstance(error, Exception):
        return [error] * n
    else:
        cause, args = error, (f"the batch's round trip was interrupted: {error!r}",)
    twins: list[BaseException] = [error]
    for _ in range(n - 1):
        twin = LimiterUnavailable(*args)
        twin.__cause__ = cause
        twins.append(twin)
    return twins


class _LastPolls:
    """The polls at their deadlines of one backend's threads, in batches: the first
    thread due sends its poll at once, alone; those that come due while a round trip is
    on its way wait for it to end, and the first of them sends all of theirs in the
    next one (group commit). A lone waiter is never held for a batch; under load, one
    round trip answers every waiter whose deadline came meanwhile."""

    __slots__ = ("_busy", "_cond", "_due", "_pid")

    def __init__(self) -> None:
        self._afresh()

    def _afresh(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._due: list[_Due] = []
        self._busy = False
        self._pid = os.getpid()

    def run(self, due: _Due, send: Callable[[list[_Due], float], Any]) -> Any:
        """``due``'s reply, from a round trip ``send`` makes for its batch."""
        if self._pid != os.getpid():
            # A forked child: the parent's threads (and their batch) are not here.
            self._afresh()
        cond = self._cond
        with cond:
            self._due.append(due)
            if self._busy:
                while due.state == _WAITING:
                    cond.wait()
                if due.state == _ANSWERED:
                    return due.answer()
            self._busy = True
            batch, self._due = self._due, []
        try:
            try:
                replies = _answers(batch, send(batch, max(d.until for d in batch)))
            except BaseException as exc:
                for d, error in zip(batch, _for_each(exc, len(batch)), strict=True):
                    d.error = error
            else:
                for d, reply in zip(batch, replies, strict=True):
                    d.reply = reply
        finally:
            with cond:
                for d in batch:
                    d.state = _ANSWERED
                if self._due:
                    self._due[0].state = _LEAD  # it sends the next batch, its own included
                else:
                    self._busy = False
                cond.notify_all()
        return due.answer()


class _AsyncLastPolls:
    """:class:`_LastPolls` for one event loop's tasks: the first task due starts a task
    that sends the due polls, all that are due at each round trip, until none is left.
    A task of its own, so that cancelling a waiter cancels only its wait: its ticket
    stays in the batch under way, and an admission made for it is cancelled later (see
    RedisBackend._cleaning); one cancelled before its batch left is not sent."""

    __slots__ = ("_due", "_task", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: list[_Due] = []
        self._task: asyncio.Task[None] | None = None

    async def run(
        self,
        due: _Due,
        send: Callable[[list[_Due], float], Awaitable[Any]],
        orphan: Callable[[Ticket], None],
    ) -> Any:
        """``due``'s reply, from a round trip ``send`` makes for its batch."""
        due.fut = fut = self.loop.create_future()
        self._due.append(due)
        if self._task is None:
            self._task = self.loop.create_task(self._sending(send, orphan))
        return await fut

    async def _sending(
        self,
        send: Callable[[list[_Due], float], Awaitable[Any]],
        orphan: Callable[[Ticket], None],
    ) -> None:
        batch: list[_Due] = []
        try:
            while self._due:
                batch = [d for d in self._due if not _done(d)]
                self._due = []
                if not batch:
                    continue
                try:
                    replies = _answers(batch, await send(batch, max(d.until for d in batch)))
                except Exception as exc:
                    for d, error in zip(batch, _for_each(exc, len(batch)), strict=True):
                        if not _done(d):
                            d.fut.set_exception(error)  # type: ignore[union-attr]
                else:
                    for d, reply in zip(batch, replies, strict=True):
                        if not _done(d):
                            d.fut.set_result(reply)  # type: ignore[union-attr]
                        elif int(reply[0]) == 1:
                            orphan(d.ticket)  # admitted for a waiter cancelled meanwhile
                batch = []
        finally:
            self._task = None
            # Cancelled (the loop is closing): so are the waits it would have answered.
            for d in (*batch, *self._due):
                if not _done(d):
                    d.fut.cancel()  # type: ignore[union-attr]
            self._due = []


def _done(due: _Due) -> bool:
    return due.fut is None or due.fut.done()


class _Process:
    """This process's name on the keys it uses (see now_s in lua/lib.lua): a new one after
    a fork, whose monotonic clock is its own from then on."""

    __slots__ = ("_name", "_pid")

    def __init__(self) -> None:
        self._pid = -1
        self._name = ""

    def name(self) -> str:
        if self._pid != os.getpid():
            self._pid, self._name = os.getpid(), uuid.uuid4().hex
        return self._name


_PROCESS = _Process()


def _common_args(limits: WindowLimits, queue_lease: float, header_lag: float) -> list[Any]:
    """The arguments every script takes first: the window, the four limits (-1: none),
    the queue places' lease and the header lag."""
    caps = (limits.tpm, limits.rpm, limits.tpd, limits.rpd)
    return [limits.window, *(-1 if x is None else x for x in caps), queue_lease, header_lag]


def _scripts(algorithm: str) -> tuple[dict[str, str], dict[str, str]]:
    """Each script's source for ``algorithm``, and its SHA1 (the name EVALSHA runs it by)."""
    names = ("acquire", "settle", "leave", "observe", "named")
    sources = {name: _source(name, algorithm) for name in names}
    return sources, {n: hashlib.sha1(src.encode()).hexdigest() for n, src in sources.items()}


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


#: Where each limit is in the scripts' common arguments (see lib.lua).
_LIMIT_ARG = {"tpm": 1, "rpm": 2, "tpd": 3, "rpd": 4}

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
    return kwargs


def _round_trip_limit(client: redis_lib.Redis, given: float | None) -> float:
    """How long a round trip without a caller's deadline may take: as given, else the
    client's ``socket_timeout``, else :data:`ROUND_TRIP`."""
    if given is not None:
        return given
    socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if isinstance(socket_timeout, (int, float)) and socket_timeout > 0:
        return float(socket_timeout)
    return ROUND_TRIP


class RedisBackend:
    """Decisions in Redis under ``{key}``; see the module docstring.

    ``round_trip`` (seconds) bounds a round trip that has no caller deadline; by
    default the client's ``socket_timeout``, or :data:`ROUND_TRIP` when it has none.
    ``waiter_lease`` caps the lease of a queue place (see :data:`WAITER_LEASE`).
    ``batch_share``, ``backfill`` and ``reserve`` (the interactive reserve): see
    :class:`~._limiter.Limiter` (each acquire sends them; the queue is ordered in
    ``lua/lib.lua``'s ``q_head``, ``q_pass`` and ``q_need``).
    """

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
        round_trip: float | None = None,
        waiter_lease: float = WAITER_LEASE,
        batch_share: float = BATCH_SHARE,
        backfill: float = 0.0,
        reserve: int = 0,
    ) -> None:
        self._client = client
        self._batch_share = batch_share
        self._backfill = backfill
        self._reserve = reserve
        self._bucket = algorithm == "bucket"
        #: Told of the limits the server's headers changed (see Limiter).
        self.on_limits: Callable[[list[LimitChange]], None] | None = None
        #: The TPM and RPD capacities last seen on the key, where a header changed them.
        self._caps: dict[str, int] = {}
        self._refunds = -1 if refunds is None else int(refunds)
        self._policy = refunds
        self._prefix = "{" + key + "}"
        self._reaching = _Reaching(self._prefix)
        self._lease = lease
        # Queue places are leased for less than the limiter's lease (see WAITER_LEASE).
        queue_lease = min(lease, waiter_lease)
        self._round_trip = round_trip = _round_trip_limit(client, round_trip)
        # Renew the lease well before it runs out, whatever we are waiting for; and a
        # BLPOP no longer than a round trip may be (the client's socket timeout).
        self._max_block = max(min(queue_lease / 4, round_trip * 0.8), 0.01)
        self._common = _common_args(limits, queue_lease, header_lag)
        self._sources, self._shas = _scripts(algorithm)
        self._test_clock: Callable[[], float] | None = None  # tests only: see _args
        # Seconds added to Redis TIME: tests make Redis's clock jump with it (see _args).
        self._skew = 0.0
        # When (monotonic) a script's reply last came back: a key found empty that soon
        # after was lost (a restart), not expired (see LOST in lua/lib.lua).
        self._seen_at: float | None = None
        #: Processes seen on the key within a window and a lease, as of the last
        #: admission decision (this one included): what ``fail_open`` shares the limit by.
        self.peers = 1
        self._conns = _Connections(client)
        self._aconns: dict[int, _AsyncConnections] = {}
        # Tickets whose script may have run without its reply reaching us: id -> tokens,
        # left and cancelled before the next admission (see _cleaning).
        self._orphans: dict[str, int] = {}
        self._orphans_lock = threading.Lock()
        # Threads' polls at their deadlines, in batches (a loop's: _AsyncConnections).
        self._lasts = _LastPolls()

    # -- I/O: the only part a thread and an asyncio task do differently -------------

    def _call(self, name: str, args: list[Any], until: float) -> Any:
        with self._reaching:
            argv = (1, self._prefix, *self._args(args))
            try:
                reply = self._conns.run(until, "EVALSHA", self._shas[name], *argv)
            except redis_lib.exceptions.NoScriptError:
                # First use on this server (or after a restart or SCRIPT FLUSH): EVAL
                # runs it and caches it for the next EVALSHA.
                reply = self._conns.run(until, "EVAL", self._sources[name], *argv)
            self._seen_at = time.monotonic()
            return reply

    async def _acall(self, name: str, args: list[Any], until: float) -> Any:
        with self._reaching:
            conns = self._aconnections()
            argv = (1, self._prefix, *self._args(args))
            try:
                reply = await conns.run(until, "EVALSHA", self._shas[name], *argv)
            except redis_lib.exceptions.NoScriptError:
                reply = await conns.run(until, "EVAL", self._sources[name], *argv)
            self._seen_at = time.monotonic()
            return reply

    def _last(self, due: _Due) -> Any:
        return self._lasts.run(due, self._send_last)

    def _send_last(self, batch: list[_Due], until: float) -> Any:
        return self._call("acquire", _last_args(batch, self._class()), until)

    async def _alast(self, due: _Due) -> Any:
        return await self._aconnections().lasts.run(due, self._asend_last, self._orphan)

    async def _asend_last(self, batch: list[_Due], until: float) -> Any:
        return await self._acall("acquire", _last_args(batch, self._class()), until)

    def _blpop(self, key: str, block: float, until: float) -> bool:
        """Whether woken (a push to ``key``) before ``block`` seconds ran out."""
        with self._reaching:
            return self._conns.run(until, "BLPOP", key, block) is not None

    async def _ablpop(self, key: str, block: float, until: float) -> bool:
        with self._reaching:
            return await self._aconnections().run(until, "BLPOP", key, block) is not None

    def _args(self, args: list[Any]) -> list[Any]:
        # Every script's last argument is about the clocks (see now_s in lua/lib.lua):
        # the time to use instead of Redis TIME (empty in use; only the property tests set
        # `_test_clock`, to replay interleavings on a fake clock), this process and its
        # monotonic clock, how long ago a reply last came, and the tests' skew.
        clock = self._test_clock
        mono = time.monotonic()
        seen = -1.0 if self._seen_at is None else mono - self._seen_at
        fake = "" if clock is None else repr(clock())
        about = f"{fake}|{_PROCESS.name()}|{mono!r}|{seen!r}|{self._skew!r}"
        return [*self._common, *args, about]

    def _until(self, ticket: Ticket | None, extra: float = 0.0) -> float:
        """When a round trip (taking ``extra`` seconds by design, a BLPOP's block) is
        given up: what is left of the caller's ``max_wait`` plus the grace, and never
        later than the round-trip limit."""
        now = time.monotonic()
        limit = self._round_trip + extra
        deadline = None if ticket is None else ticket.deadline
        if deadline is not None:
            limit = min(limit, max(deadline - now, 0.0) + extra + GRACE)
        return now + limit

    def _script(self, name: str, args: list[Any], until: float) -> Call:
        """The effect of running one Lua script (one round trip); its reply is the result."""
        return Call(self._call, self._acall, name, args, until)

    def _aconnections(self) -> _AsyncConnections:
        loop = asyncio.get_running_loop()
        conns = self._aconns.get(id(loop))
        if conns is None or conns.loop is not loop:
            conns = self._aconns[id(loop)] = _AsyncConnections(self._client, loop)
        return conns

    async def aclose(self) -> None:
        """Close the connections of the running loop, and the idle ones of threads."""
        conns = self._aconns.pop(id(asyncio.get_running_loop()), None)
        if conns is not None:
            await conns.close()
        self._conns.close()

    # -- tickets whose reply was lost --------------------------------------------------

    def _orphan(self, ticket: Ticket) -> None:
        # Its script may have queued or admitted it: leave and cancel later.
        if ticket.id:
            with self._orphans_lock:
                self._orphans[ticket.id] = ticket.tokens

    def _cleaning(self, until: float) -> Plan[None]:
        """Leave the queue and cancel any admission of each orphaned ticket (both are
        no-ops when the script never ran); on failure the rest wait for the next time."""
        with self._orphans_lock:
            orphans = list(self._orphans.items())
            self._orphans.clear()
        done = 0
        try:
            for rid, tokens in orphans:
                yield self._script("leave", [rid], until)
                # A cancel by id: the day bucket unknown (-1), so a day count of a
                # lost admission ages out with the day; the minute's charge goes now.
                args = [rid, tokens, -1, -1, *_view_args(None, None), self._refunds, 0]
                reply = yield self._script("settle", args, until)
                self._learned(reply[self._changes(reply, 2) :])
                done += 1
        finally:
            if done < len(orphans):
                with self._orphans_lock:
                    for rid, tokens in orphans[done:]:
                        self._orphans.setdefault(rid, tokens)

    # -- decisions, each one plan ------------------------------------------------------

    def _step(self, ticket: Ticket, reply: list[Any]) -> Step:
        # Redis time only orders the queue and the buckets: the times it gives are turned
        # into waits from now on this process's monotonic clock, so a Redis clock that
        # jumps cannot hold a caller past its max_wait. (The property tests' fake clock
        # stands for both clocks.)
        now = self._now()
        status, then = int(reply[0]), float(reply[1])
        self.peers = max(int(reply[-1]), 1)
        if status == 1:
            bucket, adm, admr, sure = (int(x) for x in reply[2:6])
            charge = RedisCharge(ticket.id, ticket.tokens, bucket, adm, admr, sure)
            return Step(now, charge=charge, at=then)
        if status == 3:
            return Step(now, lost=True)

        def later(at: float) -> float:
            return now + max(at - then, 0.0)

        soonest = None
        if len(reply) >= 8:  # waiting, asked for its soonest: reply[4:7], then the peers
            name = reply[5].decode() if isinstance(reply[5], bytes) else str(reply[5])
            soonest = Soonest(later(float(reply[4])), name, later(float(reply[6])))
        if status == 2:
            return Step(now, until=later(float(reply[2])), soonest=soonest)
        head_at = float(reply[3])
        # Right behind the head: poll when the head may go (it may have crashed); one
        # that backfill may let pass: when it fits.
        return Step(now, until=later(head_at) if head_at >= 0 else None, soonest=soonest)

    def _now(self) -> float:
        """The caller's clock, in which steps and deadlines are given (monotonic; the
        property tests' fake clock stands for it)."""
        clock = self._test_clock
        return time.monotonic() if clock is None else clock()

    def start_plan(self, ticket: Ticket) -> Plan[Step]:
        if ticket.deadline is None and ticket.max_wait is not None:
            # From before the first round trip: the limiter gives up by this deadline too.
            ticket.deadline = self._now() + ticket.max_wait
        until = self._until(ticket)
        if self._orphans:
            yield from self._cleaning(until)
        ticket.id = uuid.uuid4().hex
        args = ["start", *self._class(), *_ticket_args(ticket)]
        return self._step(
            ticket, (yield from self._deciding(ticket, self._script("acquire", args, until)))
        )

    def poll_plan(self, ticket: Ticket) -> Plan[Step]:
        # The poll at the caller's deadline also leaves the queue when it does not admit
        # (one round trip, not a poll and then a leave): the caller's timeout is then
        # raised as soon as the answer is in. Waiters of this process whose deadlines
        # came together share that round trip (see _LastPolls).
        last = ticket.deadline is not None and self._now() >= ticket.deadline
        until = self._until(ticket)
        if last:
            effect = Call(self._last, self._alast, _Due(ticket, until))
        else:
            args = ["poll", *self._class(), *_ticket_args(ticket)]
            effect = self._script("acquire", args, until)
        step = self._step(ticket, (yield from self._deciding(ticket, effect)))
        if last and step.charge is None:
            ticket.id = ""  # left: nothing for leave_plan to do
            # Lost or not, it is out of the queue: starting again would cost round trips
            # past the deadline.
            step.left, step.lost = True, False
        return step

    def _class(self) -> tuple[float, float, int]:
        # The batch share the queue is served by (the last acquire's: every process on a
        # key is meant to set the same), how long a ticket may delay the head by
        # passing it (backfill), and the tokens batch admissions leave (the reserve,
        # also the last acquire's).
        return self._batch_share, self._backfill, self._reserve

    def _deciding(self, ticket: Ticket, effect: Call) -> Plan[Any]:
        try:
            return (yield effect)
        except LimiterUnavailable:
            self._orphan(ticket)
            raise

    def leave_plan(self, ticket: Ticket) -> Plan[None]:
        # Best effort: if Redis is gone, the lease frees the place anyway. A ticket
        # whose round trip failed is left later (see _cleaning): Redis just failed it,
        # and trying again now would only keep the caller longer.
        if ticket.id and ticket.id not in self._orphans:
            try:
                yield self._script("leave", [ticket.id], self._until(ticket))
            except LimiterUnavailable:
                self._orphan(ticket)

    def wait_plan(self, ticket: Ticket, timeout: float | None) -> Plan[None]:
        # Block on our own wake-up list until the time the limiter computed (the head's
        # turn, the caller's deadline), never longer than the lease renewal needs.
        now = self._now()
        end = None if timeout is None else now + max(timeout, 0.0)
        if ticket.deadline is not None:
            end = ticket.deadline if end is None else min(end, ticket.deadline)
        block = self._max_block if end is None else max(min(end - now, self._max_block), 0.0)
        rest = 0.0
        if end is not None and now + block + SERVER_TICK > end:
            # Redis ends a blocked wait on its own timer tick (10 a second by default), so
            # a BLPOP may return that much late: a wait for a time blocks one tick less
            # and sleeps the rest here, unless woken (a wake-up pushed in that tick is
            # seen by the poll at the time, which still admits).
            rest = min(block, SERVER_TICK)
            block -= rest
        woken = False
        if block >= 0.001:
            key, until = f"{self._prefix}:w:{ticket.id}", self._until(ticket, block)
            try:
                woken = yield Call(self._blpop, self._ablpop, key, block, until)
            except LimiterUnavailable:
                self._orphan(ticket)
                raise
        if rest > 0 and not woken and end is not None:
            left = end - self._now()
            if left > 0:
                yield Sleep(left)

    def settle_plan(
        self, charge: RedisCharge, actual: int | None, view: ServerView | None
    ) -> Plan[None]:
        self._follow(view)
        args = [
            charge.rid,
            charge.tokens,
            -1 if actual is None else actual,
            charge.bucket,
            *_view_args(view, charge),
            self._refunds,
            charge.sure_tokens,
        ]
        try:
            reply = yield self._script("settle", args, self._until(None))
        except LimiterUnavailable:
            if actual is None:
                # A cancel may be tried again (by id, as for a lost reply); a commit
                # not, its charge stays at the estimate and ages out.
                with self._orphans_lock:
                    self._orphans[charge.rid] = charge.tokens
            raise
        if actual is not None:
            charge.tokens = actual
            if self._bucket:  # settles before this one since its admission: see observe
                charge.sure_tokens = int(reply[1])
            else:
                charge.bucket = int(reply[1])
        self._learned(reply[self._changes(reply, 2) :])

    def observe_plan(self, view: ServerView, charge: RedisCharge | None = None) -> Plan[None]:
        """Adopt headers; ``charge``: of the response to that admission (its marks say
        what the headers cannot include), else taken as current."""
        self._follow(view)
        sure = -1 if charge is None else charge.sure_tokens
        args = [*_view_args(view, charge), self._refunds, sure]
        reply = yield self._script("observe", args, self._until(None))
        self._learned(reply[self._changes(reply, 1) :])

    def observe_limit_plan(self, name: str, limit: int, used: int | None) -> Plan[None]:
        """Adopt a limit a refusal's body named (checked by the caller). The bucket's
        script keeps it on the key, where every process's next reply finds it (see
        _changes); the window's scripts take their limits from this process's
        arguments, so there only this process counts it, and ``used`` is not kept."""
        if not self._bucket:
            self._set_arg(name, limit, from_none=True)
            return
        args = [_LIMIT_ARG[name], limit, -1 if used is None else used]
        reply = yield self._script("named", args, self._until(None))
        self._changes(reply, 1)

    def _changes(self, reply: list[Any], at: int) -> int:
        """Follow the capacities the bucket's scripts put at ``reply[at]`` (shared on the
        key: any process's headers, or a refusal's body, may have set them), reporting
        each change this process sees; the window's scripts put none. A limit no header
        reports (RPM, TPD) also goes into this process's arguments, so that its scripts
        keep the key as long as a day limit needs. The index of the refunds fields
        after them."""
        if not self._bucket:
            return at
        text = reply[at].decode() if isinstance(reply[at], bytes) else str(reply[at])
        changes: list[LimitChange] = []
        for name, cap in zip(_LIMIT_ARG, text.split("|"), strict=True):
            value, arg = int(cap), self._common[_LIMIT_ARG[name]]
            old = self._caps.get(name, arg)
            if value > 0 and value != old:
                changes.append((name, None if old == -1 else int(old), value))
                self._caps[name] = value
                if name in ("rpm", "tpd"):
                    self._common[_LIMIT_ARG[name]] = value
        if changes and self.on_limits is not None:
            self.on_limits(changes)
        return at + 1

    def _follow(self, view: ServerView | None) -> None:
        """The window's scripts take TPM and RPD from their arguments: a header's limits
        (bounded by parse_headers) replace them in this process's decisions."""
        if view is None or self._bucket:
            return
        for name, value in (("tpm", view.limit_tokens), ("rpd", view.limit_requests)):
            at = _LIMIT_ARG[name]
            old = self._common[at]
            if value is not None and old != -1 and value != old:
                self._common[at] = value
                if self.on_limits is not None:
                    self.on_limits([(name, int(old), value)])

    def set_limit(self, name: str, value: int | None) -> None:
        """Set a limit no header reports (``rpm``, ``tpd``; ``None``: none) in this
        process's decisions: the scripts take those limits from their arguments."""
        self._set_arg(name, value, from_none=False)

    def _set_arg(self, name: str, value: int | None, *, from_none: bool) -> None:
        """Set ``name`` in this process's script arguments; a limit not counted stays
        uncounted unless ``from_none``."""
        at = _LIMIT_ARG[name]
        old = self._common[at]
        if (old == -1 and not from_none) or old == (-1 if value is None else value):
            return
        self._common[at] = -1 if value is None else value
        if self.on_limits is not None:
            self.on_limits([(name, None if old == -1 else int(old), value)])

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
            # One lesson per script, and the state is what it taught.
            emit(
                LimiterRefundsLearned(
                    refunds=state == 1,
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

    def observe(self, view: ServerView, charge: RedisCharge | None = None) -> None:
        run_sync(self.observe_plan(view, charge))
