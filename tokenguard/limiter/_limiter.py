"""The public face: :class:`Limiter` and :class:`Reservation`.

Each decision loop (acquire: start, wait, poll, leave on failure; settle) is
written once, as a plan (see :mod:`tokenguard._drive`) built from the backend's
plans; the sync methods run it with ``run_sync``, the ``*_async`` ones with
``run_async``. Decisions live in the backend.
"""

from __future__ import annotations

import contextvars
import functools
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._drive import Plan, run_async, run_sync
from .._durations import for_people
from ..errors import ConfigurationError, LimiterUnavailable, RateLimitTimeout, RequestTooLarge
from ..events import (
    LimiterBadBody,
    LimiterBadHeader,
    LimiterFailOpen,
    LimiterLimitChanged,
    emit,
)
from ..models import ModelInfo
from ._backend import Backend, Soonest, Step, Ticket
from ._headers import ServerView, parse_headers
from ._memory import MemoryBackend
from ._named import LIMIT_NAMES, believable
from ._priority import Priority, check_priority, current_priority
from ._queue import BATCH_SHARE, RESERVE_SHARE
from ._state import LimitChange
from ._window import WindowLimits

if TYPE_CHECKING:
    import redis as redis_lib

    from ..models import Limits

__all__ = ["DAY_WAIT", "Limiter", "Reservation"]

#: The default ``max_day_wait`` (seconds): five minutes.
DAY_WAIT = 300.0


_SETTLE_LOCK = threading.Lock()

#: The reservation last committed or cancelled in this thread or task: the one whose
#: response headers a following ``Limiter.observe`` in the same thread or task carries.
_ANSWERED: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "tokenguard_answered", default=None
)


class Reservation:
    """Tokens and one request admitted by a :class:`Limiter`, to be settled once.

    ``commit(actual)`` corrects the charge to what the server reported: it records
    any extra at once; the difference of a commit for less is freed at once when the
    server refunds unused tokens (``Limiter(refunds=True)``, or once the limiter
    learned that it does, or by default, for a commit without headers, until the
    limiter learns that the server does not). Otherwise it stays charged until the
    ``headers``
    of this request's response (given here or to ``Limiter.observe`` right after)
    prove the server's bucket has the room, and is freed as far as they do; without
    headers it ages out with the window. ``cancel()`` refunds a request
    that never reached the server. The first of them settles the reservation and
    later calls do nothing, so ``finally: r.cancel()`` after a commit is safe. A
    reservation never settled stays charged at its estimate and ages out with the
    window.

    Example::

        r = lim.acquire(1200)
        try:
            resp = client.chat.completions.with_raw_response.create(...)
        except BaseException:
            r.cancel()
            raise
        r.commit(resp.parse().usage.total_tokens, headers=resp.headers)
    """

    __slots__ = (
        "_backend",
        "_charge",
        "_direct",
        "_fail_open",
        "_limits",
        "at",
        "settled",
        "tokens",
        "waited",
    )

    def __init__(
        self,
        backend: Backend,
        charge: Any,
        tokens: int,
        at: float,
        waited: float,
        limits: WindowLimits,
        *,
        fail_open: bool = False,
    ) -> None:
        self._backend = backend
        self._charge = charge
        self._fail_open = fail_open
        self._limits = limits
        # In memory a settle neither blocks nor awaits: call it, no plan to run.
        self._direct = backend if type(backend) is MemoryBackend else None
        #: The estimate admitted, when (in the backend's clock: the injected clock, or
        #: Redis time) and after how long a wait.
        self.tokens = tokens
        self.at = at
        self.waited = waited
        self.settled = False

    @property
    def in_place(self) -> bool:
        """Whether ``commit`` and ``cancel`` neither block nor await (an in-memory
        limiter): asyncio code may call them in place of their ``_async`` twins."""
        return self._direct is not None

    def __repr__(self) -> str:
        state = "settled" if self.settled else "open"
        return f"<Reservation tokens={self.tokens} waited={self.waited:.3f}s {state}>"

    def _take(self) -> bool:
        with _SETTLE_LOCK:  # a commit and a cancel racing in two threads: one wins
            if self.settled:
                return False
            self.settled = True
            return True

    def _unavailable(self, exc: LimiterUnavailable) -> None:
        if not self._fail_open:
            raise exc
        # Failing open: the charge stays as it was and ages out with the window.
        emit(LimiterFailOpen(error=str(exc), during="settle"))

    def _settling(self, actual: int | None, view: ServerView | None) -> Plan[None]:
        if not self._take():
            return
        try:
            yield from self._backend.settle_plan(self._charge, actual, view)
        except LimiterUnavailable as exc:
            self._unavailable(exc)

    def commit(self, actual_tokens: int, *, headers: Mapping[str, Any] | None = None) -> None:
        """Charge ``actual_tokens`` instead of the estimate; with ``headers`` (of this
        request's response) adopt the server's view in the same step. When the
        server is known or learned not to refund, the part of the estimate not used is
        freed only as far as these headers show the server has the room (see the
        class). A ``retry-after`` in them came with an answer: it holds nobody. Nor is
        a token limit below this request (the smaller of its estimate and
        ``actual_tokens``) believed: the server has just served it."""
        if type(actual_tokens) is not int or actual_tokens < 0:  # the usual int passes
            _check_tokens(actual_tokens, "actual_tokens")
        _ANSWERED.set(self)
        view = _believable(_view(headers), self._limits, served=min(actual_tokens, self.tokens))
        direct = self._direct
        if direct is not None:  # marked settled under the backend's lock
            direct.settle(self._charge, actual_tokens, view, self)
            return
        run_sync(self._settling(actual_tokens, view))

    def cancel(self) -> None:
        """Refund the whole reservation: the request never reached the server."""
        _ANSWERED.set(self)
        direct = self._direct
        if direct is not None:
            direct.settle(self._charge, None, None, self)
            return
        run_sync(self._settling(None, None))

    def observe(self, headers: Mapping[str, Any]) -> None:
        """Adopt the headers of this reservation's own response (or error), before or
        after its commit or cancel: what was admitted after it, and settled since its
        admission, is not taken as seen by them. Right under contention, where
        ``Limiter.observe`` of headers from another thread's request is not.

        Example::

            r = lim.acquire(1200)
            raw = client.chat.completions.with_raw_response.create(...)
            r.commit(raw.parse().usage.total_tokens)
            r.observe(raw.headers)
        """
        run_sync(self._observing(headers))

    async def observe_async(self, headers: Mapping[str, Any]) -> None:
        """:meth:`observe` for asyncio code."""
        await run_async(self._observing(headers))

    def _observing(self, headers: Mapping[str, Any]) -> Plan[None]:
        view = _believable(_view(headers), self._limits)
        if view is None:
            return
        direct = self._direct
        if direct is not None:
            direct.observe(view, self._charge)
            return
        try:
            yield from self._backend.observe_plan(view, self._charge)
        except LimiterUnavailable as exc:
            self._unavailable(exc)

    async def commit_async(
        self, actual_tokens: int, *, headers: Mapping[str, Any] | None = None
    ) -> None:
        """:meth:`commit` for asyncio code (does not block the loop on Redis)."""
        if type(actual_tokens) is not int or actual_tokens < 0:
            _check_tokens(actual_tokens, "actual_tokens")
        _ANSWERED.set(self)
        view = _believable(_view(headers), self._limits, served=min(actual_tokens, self.tokens))
        direct = self._direct
        if direct is not None:  # marked settled under the backend's lock
            direct.settle(self._charge, actual_tokens, view, self)
            return
        await run_async(self._settling(actual_tokens, view))

    async def cancel_async(self) -> None:
        """:meth:`cancel` for asyncio code."""
        _ANSWERED.set(self)
        direct = self._direct
        if direct is not None:
            direct.settle(self._charge, None, None, self)
            return
        await run_async(self._settling(None, None))


def _view(headers: Mapping[str, Any] | None) -> ServerView | None:
    if headers is None:
        return None
    view = parse_headers(headers)
    return None if view.empty else view


def _believable(
    view: ServerView | None, limits: WindowLimits, *, served: int | None = None
) -> ServerView | None:
    """``view`` with only the waits ``limits`` can justify: a ``retry-after`` of at most
    one window (a day with day limits; a longer one is cut to that, since it still says
    the server refused), and none on the response of a request it ``served`` (it came
    with an answer: no hold on anyone); a token reset (a minute's bucket) of at most one
    window, a request reset (a day's) of at most a day (longer ones are dropped). Each is
    reported as a bad header: a hold that long would block every process on the quota
    for as long as the server wrote. A token limit below ``served`` (the tokens of the
    request the response answers) is dropped and reported too: the server has just let
    that much through, and a limit believed below it would refuse every later call
    before it could reach the server and correct it."""
    if view is None:
        return None
    retry, reset_t, reset_r = view.retry_after, view.reset_tokens, view.reset_requests
    limit_t, day = view.limit_tokens, limits.day
    if (
        retry is None
        and (reset_t is None or reset_t <= limits.window)
        and (reset_r is None or reset_r <= day)
        and (limit_t is None or served is None or limit_t >= served)
    ):
        return view  # what every plain response is: nothing to drop
    longest = day if limits.has_day else limits.window
    if limit_t is not None and served is not None and limit_t < served:
        emit(LimiterBadHeader(header="x-ratelimit-limit-tokens"))
        limit_t = None
    if retry is not None and served is not None:
        retry = None
    elif retry is not None and retry > longest:
        emit(LimiterBadHeader(header="retry-after"))
        retry = longest
    if reset_t is not None and reset_t > limits.window:
        emit(LimiterBadHeader(header="x-ratelimit-reset-tokens"))
        reset_t = None
    if reset_r is not None and reset_r > day:
        emit(LimiterBadHeader(header="x-ratelimit-reset-requests"))
        reset_r = None
    view = view._replace(
        retry_after=retry, reset_tokens=reset_t, reset_requests=reset_r, limit_tokens=limit_t
    )
    return None if view.empty else view


def _is_batch(priority: Priority | None) -> bool:
    """Whether a call waits as batch: ``priority`` if given (a clear error if it is not
    a priority), else the enclosing ``tg.priority`` block's."""
    if priority is None:
        return current_priority() == "batch"
    return check_priority(priority) == "batch"


def _check_tokens(tokens: object, what: str) -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ConfigurationError(f"{what} must be an int >= 0, got {tokens!r}")


def _check_limit(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int or None, got {value!r}")


def _check_seconds(
    name: str, value: object, *, zero: bool = False, none: bool = False, forever: bool = False
) -> None:
    """A duration option: a number > 0 (``zero``: >= 0), ``None`` if ``none``, and
    infinite only if ``forever``."""
    if value is None and none:
        return
    if not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (forever or math.isfinite(value))
        and (value >= 0 if zero else value > 0)
    ):
        also = " or None" if none else ""
        raise ConfigurationError(
            f"{name} must be seconds {'>=' if zero else '>'} 0{also}, got {value!r}"
        )


def _check_options(given: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigurationError` naming the first option a ``Limiter`` cannot take
    (``given``: its keyword arguments)."""
    limits = [(name, given[name]) for name in ("tpm", "rpm", "tpd", "rpd")]
    for name, value in limits:
        _check_limit(name, value)
    if all(value is None for _, value in limits):
        raise ConfigurationError("a Limiter needs at least one of tpm, rpm, tpd, rpd")
    _check_seconds("window", given["window"])
    _check_seconds("lease", given["lease"])
    _check_seconds("header_lag", given["header_lag"], zero=True)
    _check_seconds("redis_timeout", given["redis_timeout"], none=True)
    _check_seconds("max_day_wait", given["max_day_wait"], zero=True, none=True, forever=True)
    _check_seconds("backfill", given["backfill"], zero=True)
    if given["backfill"] and given["algorithm"] == "window":
        raise ConfigurationError(
            'backfill needs algorithm="bucket": a window holds each charge for a whole '
            "window, so a pass could delay the head by that much"
        )
    _check_choices(given)


def _check_choices(given: Mapping[str, Any]) -> None:
    fail_open_share, refunds = given["fail_open_share"], given["refunds"]
    algorithm, batch_share = given["algorithm"], given["batch_share"]
    if fail_open_share is not None and not (
        isinstance(fail_open_share, (int, float))
        and not isinstance(fail_open_share, bool)
        and 0 < fail_open_share <= 1
    ):
        raise ConfigurationError(
            f"fail_open_share must be a fraction in (0, 1] or None, got {fail_open_share!r}"
        )
    if refunds not in (None, True, False):
        raise ConfigurationError(f"refunds must be None, True or False, got {refunds!r}")
    if algorithm not in ("bucket", "window"):
        raise ConfigurationError(f'algorithm must be "bucket" or "window", got {algorithm!r}')
    if not (
        isinstance(batch_share, (int, float))
        and not isinstance(batch_share, bool)
        and 0 < batch_share < 1
    ):
        raise ConfigurationError(f"batch_share must be a fraction in (0, 1), got {batch_share!r}")
    reserve = given["interactive_reserve"]
    if reserve is not None and not (type(reserve) is int and reserve >= 0):
        raise ConfigurationError(
            f"interactive_reserve must be tokens (an int >= 0) or None, got {reserve!r}"
        )


class Limiter:
    """Admits requests so that the server's rate limits are never exceeded, in FIFO order
    within two classes: waiting ``"interactive"`` calls (the default) go before waiting
    ``"batch"`` calls (``acquire(priority=)``, :func:`tokenguard.priority`), except that
    batch gets ``batch_share`` (a fraction in (0, 1), default 0.1) of the tokens
    admitted while both classes wait, so it never starves; nobody passes a head the
    limits could already serve. Without batch calls the queue is strict FIFO. A batch
    call is admitted only with ``interactive_reserve`` tokens free beside its own (default
    ``None``: a tenth of the smallest token limit; ``0``: none), so an interactive call
    arriving on a limit batch saturates finds them waiting; for a batch request larger
    than the capacity less the reserve, the reserve shrinks to what fits beside it.

    ``backfill`` (seconds, default 0: off) lets a waiting call pass the head of the
    queue when it fits now and every pass of that head together delays the head's turn
    by at most that long (its turn when first passed plus ``backfill``), so short calls
    need not wait behind a long one and the head never starves. The bucket algorithm
    only; a batch call never passes an interactive head.

    ``tpm``/``rpm`` are per ``window`` seconds (the "minute": 60 for Groq, smaller in
    tests), ``tpd``/``rpd`` per ``1440 * window``. A request costs its token estimate
    and one request.

    ``algorithm`` says how. ``"bucket"`` (the default; right for Groq) mirrors a server
    whose limits are refilling token buckets, as Groq's are (capacity = limit, refilled
    at limit per period): after a burst a request waits only until the bucket has
    refilled its cost, and the estimate of a request in flight holds room only until its
    commit. Estimates in flight are never refilled (the server charges them when they
    arrive, at any time before the response), so the mirror never runs ahead of the
    server's bucket. A header's ``x-ratelimit-limit-tokens`` sets the bucket's capacity
    and refill (that limit per ``window``), above or below ``tpm``. Choose ``"window"``
    for a server that counts fixed or sliding windows (no more than the limit in any
    ``window`` seconds, or per clock minute): a bucket may spend a full bucket and its
    refill within one window, which such a server refuses. The window is safe against
    Groq too, but holds each charge for a whole window, so there it uses less of the
    limit and waits up to a window after a burst. Learning refunds (``refunds=None``)
    without any headers costs the bucket its one learning 429 against a server that
    keeps unused tokens, where the window's longer holds often hide it. For example::

        lim = tg.Limiter(tpm=6000, rpm=30)                      # Groq: the bucket
        lim = tg.Limiter(tpm=6000, rpm=30, algorithm="window")  # a windowed server

    With ``redis`` (a ``redis.Redis``) the limits and queue are shared by every
    process using the same ``key``; if Redis cannot be reached,
    :class:`~tokenguard.LimiterUnavailable` is raised, or with ``fail_open=True`` the
    limiter falls back to a local in-memory limiter with this process's share of the
    limits: ``fail_open_share`` (a fraction), or by default one over the number of
    processes Redis last saw using the key (within a window and 2 s), so together
    they admit about one limit more than the server holds at the switch, then the
    limit's rate (Redis is tried again after ``lease`` seconds, and a
    ``tokenguard.limiter.fail_open`` warning event is logged; the local limiter and its
    charges last until Redis answers again). Every Redis round trip
    has a deadline, whatever the client's ``socket_timeout``: what is left of the
    caller's ``max_wait`` plus half a second; without one (``commit``, ``cancel``,
    ``observe``, an acquire with no ``max_wait``) ``redis_timeout`` seconds (default:
    the client's ``socket_timeout``, else 5). A Redis that does not answer in time is
    :class:`~tokenguard.LimiterUnavailable` (or the fallback, with ``fail_open``).

    Server headers (``observe``, ``commit(headers=)``, ``Reservation.observe``) are
    adopted when the server is tighter, and their limits always: the server is the
    authority on the account's TPM and RPD (see :meth:`observe`). A header describes
    the server when the response was written: what this limiter admitted within
    ``header_lag`` seconds before the header is read (and after the reservation it
    answers) is taken as not yet seen by the server. The default 0
    takes headers as current: exact when responses are read at once, and then a client
    that is the only spender never waits for a header (commits are counted from the
    response on, which keeps the window as strict as the server's bucket). When others
    spend the same quota, or the server may not refund unused tokens, and requests race
    (many in flight at once), a lag of about one network round trip keeps a header
    from being read as looser than it is, at a cost: a request counted as unseen that
    the server had already charged holds back its cost until the bucket refills it.

    ``refunds`` says whether the server gives back the unused part of an estimate
    (prompt + ``max_tokens``) when the response is shorter; Groq does not say. ``True``
    frees the difference at commit (only safe if the server does refund). ``False``
    keeps it charged until server headers (``commit(headers=)``, or ``observe`` of the
    response just read) prove the room, and frees only that much. The default ``None``
    learns: headers, whenever they come, free what they prove (as ``False``); a commit
    without headers frees the difference at once, until a header shows the server
    holding what was freed, or a 429 arrives after a free; from then on the limiter
    behaves as ``False`` for good (the frees still in the window are charged again).
    With the bucket, the headers given to ``commit`` may also prove that the server
    refunds: when they show less in use than a server keeping every estimate could
    hold (the estimates committed before this request was admitted, less what its
    bucket refilled since), the limiter learns ``True`` and behaves as
    ``refunds=True`` from then on, still ready to learn ``False`` from a 429 after a
    free or a header showing a free kept. Against a refunding server nothing is lost
    once learned (and nothing without headers); against one that keeps the estimate,
    only requests admitted before a lesson can be refused. An estimate larger than the
    server's own (a reserve for calls without ``max_tokens`` larger than the server's
    default) can look like a refund; the first 429 or header then corrects it. Give
    the headers of a 429 to :meth:`observe` (or to ``commit``) so the lesson comes
    from the first one. What was learned is :attr:`refunds` (shared by every process on
    a Redis key) and a ``tokenguard.limiter.refunds_learned`` event; pass ``refunds=``
    to fix it.

    A day limit (``tpd``, ``rpd``) once spent holds requests for hours. An acquire
    without ``max_wait`` waits as long as the minute limits need, but one that a day
    limit would hold longer than ``max_day_wait`` seconds (default 300: five minutes;
    ``None``: no bound) raises :class:`~tokenguard.RateLimitTimeout` at once, naming the
    limit and when it is whole again. ``max_wait=`` longer waits that long, and
    ``max_wait=math.inf`` waits as long as any limit takes.

    ``clock`` (seconds) and ``sleep`` are for tests of the in-memory backend: a fake
    clock whose ``sleep`` advances it makes waits instant. ``lease`` (seconds) bounds
    how long a crashed Redis waiter can hold its queue place (never more than 2 s:
    waiters renew their place every half second) and how long ``fail_open`` stays local.

    Example::

        lim = tg.Limiter(tpm=6000, rpm=30)
        r = lim.acquire(1200, max_wait=30)        # blocks until the limits have room
        r.commit(950, headers=response.headers)   # or r.cancel() if nothing was sent
    """

    def __init__(
        self,
        *,
        tpm: int | None = None,
        rpm: int | None = None,
        tpd: int | None = None,
        rpd: int | None = None,
        window: float = 60.0,
        redis: redis_lib.Redis | None = None,
        key: str = "tokenguard",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        fail_open: bool = False,
        fail_open_share: float | None = None,
        lease: float = 10.0,
        header_lag: float = 0.0,
        refunds: bool | None = None,
        algorithm: str = "bucket",
        redis_timeout: float | None = None,
        max_day_wait: float | None = DAY_WAIT,
        batch_share: float = BATCH_SHARE,
        backfill: float = 0.0,
        interactive_reserve: int | None = None,
    ) -> None:
        _check_options(locals())  # every option as given, before any is used
        self.algorithm = algorithm
        self.limits = WindowLimits(tpm=tpm, rpm=rpm, tpd=tpd, rpd=rpd, window=float(window))
        # The largest request every token limit takes (``limits.too_large`` is None).
        self._largest: float = min(x for x in (tpm, tpd, math.inf) if x is not None)
        self._set_classes(batch_share, backfill, interactive_reserve)
        self._set_day_wait(max_day_wait, shared=redis is not None)
        self.key = key
        self._fallback: Backend | None = None
        self._clock = clock
        self._lease = float(lease)
        self._down_until = -math.inf
        # Whether the fallback in use stands for an outage not yet over (Redis has not
        # answered since it began): a failed retry keeps it, charges and all.
        self._outage = False
        self._outage_lock = threading.Lock()
        self._share = None if fail_open_share is None else float(fail_open_share)
        self._share_cap: int | None = None  # the fallback's smallest token limit
        # The model entry and the limits no header reports (rpm, tpd) that from_model
        # took from its table: set again when the server shows the account's TPM (see
        # _limits_changed).
        self._table: tuple[ModelInfo, tuple[str, ...]] | None = None
        self._limits_lock = threading.Lock()
        self._local = functools.partial(
            MemoryBackend,
            clock=clock,
            sleep=sleep,
            header_lag=float(header_lag),
            refunds=refunds,
            algorithm=algorithm,
            batch_share=self.batch_share,
            backfill=self.backfill,
            reserve=self.interactive_reserve,
        )
        self._build(redis, fail_open, header_lag, refunds, redis_timeout)

    def _set_day_wait(self, max_day_wait: float | None, *, shared: bool) -> None:
        #: The longest wait on a day limit an acquire without ``max_wait`` accepts.
        self.max_day_wait = max_day_wait
        # Waits on a day limit past this fail at once when the caller gave no max_wait.
        # On Redis a day limit may come from the key (another process learned it from
        # a refusal's body; see observe_limit) before this process hears of it.
        self._day_wait = (
            None
            if max_day_wait is None or not (self.limits.has_day or shared)
            else float(max_day_wait)
        )

    def _set_classes(self, batch_share: float, backfill: float, reserve: int | None) -> None:
        """The queue's options (checked): ``interactive_reserve`` defaults to
        ``RESERVE_SHARE`` of the smallest token limit (none without a token limit)."""
        self.batch_share = float(batch_share)
        self.backfill = float(backfill)
        if reserve is None:
            largest = self._largest
            reserve = int(RESERVE_SHARE * largest) if largest < math.inf else 0
        #: Tokens a batch admission leaves in the bucket for interactive arrivals.
        self.interactive_reserve = reserve

    def _build(
        self,
        redis: redis_lib.Redis | None,
        fail_open: bool,
        header_lag: float,
        refunds: bool | None,
        redis_timeout: float | None,
    ) -> None:
        """The backend (memory, or Redis with a memory fallback when ``fail_open``)."""
        # The in-memory backend's uncontended admission, tried before any plan runs.
        self._admit_now: Callable[[int, bool], tuple[float, Any] | None] | None = None
        self._backend: Backend
        if redis is None:
            memory = self._local(self.limits)
            self._backend, self._admit_now = memory, memory.admit_now
        else:
            self._backend = self._shared(redis, header_lag, refunds, redis_timeout)
            if fail_open:
                self._fallback = self._local(self.limits)
        for backend in (self._backend, self._fallback):
            if backend is not None:
                backend.on_limits = self._limits_changed

    def _shared(
        self,
        redis: redis_lib.Redis,
        header_lag: float,
        refunds: bool | None,
        redis_timeout: float | None,
    ) -> Backend:
        """The Redis backend for this limiter's limits, key, lease and algorithm."""
        from ._redis import RedisBackend

        return RedisBackend(
            self.limits,
            redis,
            key=self.key,
            lease=self._lease,
            header_lag=float(header_lag),
            refunds=refunds,
            algorithm=self.algorithm,
            round_trip=None if redis_timeout is None else float(redis_timeout),
            batch_share=self.batch_share,
            backfill=self.backfill,
            reserve=self.interactive_reserve,
        )

    @classmethod
    def from_model(
        cls, model: ModelInfo | str, tier: str | Limits = "free", **options: Any
    ) -> Limiter:
        """A limiter with the limits of ``model`` (a name or a :class:`~tokenguard.ModelInfo`)
        for ``tier`` from the model table (or the explicit :class:`~tokenguard.Limits`
        given as ``tier``); ``tpm=`` etc. in ``options`` override them,
        and the other options are those of :class:`Limiter`.

        Example::

            lim = tg.Limiter.from_model("llama-3.1-8b-instant", redis=r, key="team-a")
        """
        from ..models import get_model

        info = get_model(model) if isinstance(model, str) else model
        known = info.starting_limits(tier) if isinstance(tier, str) else tier
        given = {name for name in ("tpm", "rpm", "tpd", "rpd") if name in options}
        limits: dict[str, Any] = {
            name: options.pop(name) if name in options else getattr(known, name, None)
            for name in ("tpm", "rpm", "tpd", "rpd")
        }
        if all(v is None for v in limits.values()):
            raise ConfigurationError(
                f"no {tier!r} limits are known for model {info.name!r}; pass tpm=, rpm=, "
                "tpd= or rpd= (or register the model's limits with tg.register_model)"
            )
        limiter = cls(**limits, **options)
        if isinstance(tier, str):
            unheard = tuple(n for n in ("rpm", "tpd") if limits[n] is not None and n not in given)
            limiter._table = (info, unheard) if unheard else None
        return limiter

    def __repr__(self) -> str:
        lim = self.limits
        kind = (
            "memory"
            if self._fallback is None and isinstance(self._backend, MemoryBackend)
            else "redis"
        )
        return (
            f"<Limiter tpm={lim.tpm} rpm={lim.rpm} tpd={lim.tpd} rpd={lim.rpd} "
            f"window={lim.window} algorithm={self.algorithm} backend={kind}>"
        )

    def _limits_changed(self, changes: list[LimitChange]) -> None:
        """The server's headers changed limits (called by the backend that adopted them):
        report each and make :attr:`limits` say so. The first TPM a header shows also
        says which tier the account is on: the limits no header reports (RPM, TPD) that
        came from the table follow it (see :meth:`_unheard_limits`)."""
        follow: dict[str, int | None] = {}
        with self._limits_lock:
            limits = self.limits
            for name, old, new in changes:
                emit(LimiterLimitChanged(limit=name, old=old, new=new))
                limits = replace(limits, **{name: new})  # type: ignore[arg-type]
                if name == "tpm" and new is not None and old is not None and self._table:
                    follow = self._unheard_limits(old, new)
            self.limits = limits
            self._largest = min(x for x in (limits.tpm, limits.tpd, math.inf) if x is not None)
            if self._day_wait is None and limits.has_day and self.max_day_wait is not None:
                self._day_wait = float(self.max_day_wait)  # a day limit learned: bound it
        for name, value in follow.items():
            for backend in (self._backend, self._fallback):
                if backend is not None:
                    backend.set_limit(name, value)

    def _unheard_limits(self, old: int, new: int) -> dict[str, int | None]:
        """The RPM and TPD (those taken from the table) for an account whose TPM is
        ``new``: those of the table's tier with that TPM; with none, and ``new`` above
        the table's, none at all (a limit the account does not have would hold every
        paying user to the free tier, a day limit for a whole day, while one it has
        and we do not count costs a 429 whose ``retry-after`` the guard honours);
        below it, kept. Once: the table is only the starting point."""
        assert self._table is not None
        info, unheard = self._table
        self._table = None
        for tier in info.limits.values():
            if tier is not None and tier.tpm == new:
                return {n: getattr(tier, n) for n in unheard}
        return dict.fromkeys(unheard) if new > old else {}

    # -- acquire -----------------------------------------------------------------------

    def _check(self, tokens: int, max_wait: float | None) -> None:
        _check_tokens(tokens, "tokens")
        if max_wait is not None and not (
            isinstance(max_wait, (int, float)) and not isinstance(max_wait, bool) and max_wait >= 0
        ):
            raise ConfigurationError(f"max_wait must be seconds >= 0 or None, got {max_wait!r}")
        over = self.limits.too_large(tokens)
        if over is not None:
            name, limit = over
            raise RequestTooLarge(
                f"one request of {tokens} tokens exceeds the {name.upper()} limit of {limit} "
                "tokens itself; it could never be admitted (reduce the prompt or max_tokens)",
                limit_name=name,
                cost=tokens,
                limit=limit,
            )

    def acquire(
        self, tokens: int, max_wait: float | None = None, priority: Priority | None = None
    ) -> Reservation:
        """Block until ``tokens`` (and one request) fit every limit, in FIFO order
        within its ``priority``.

        ``max_wait`` (seconds): the longest wait for any limit; ``None`` (the default)
        waits as long as the minute limits take, but no longer than the limiter's
        ``max_day_wait`` for a day limit; ``math.inf`` waits as long as any limit takes.

        ``priority``: ``"interactive"`` or ``"batch"`` (``None``: the enclosing
        :func:`tokenguard.priority` block's, else ``"interactive"``). Waiting
        interactive calls are admitted before waiting batch calls, except that batch
        gets ``batch_share`` of the tokens admitted while both wait (see the class).

        Raises :class:`~tokenguard.RequestTooLarge` at once when one limit is smaller
        than the request, and :class:`~tokenguard.RateLimitTimeout` at once only when
        even the most favourable course of the queue (everyone ahead gone, every request
        in flight refunded) could not admit it within the bound, else when the bound
        runs out. The error names the limit that binds, the wait and when that limit
        is whole again.

        Example::

            r = lim.acquire(1200, max_wait=30)    # at most 30 s, or RateLimitTimeout
            r = lim.acquire(1200, max_wait=math.inf)  # even a spent day limit
            r = lim.acquire(1200, priority="batch")   # behind waiting interactive calls
        """
        if max_wait is not None:
            self._check(tokens, max_wait)
        admitted = self.try_acquire(tokens, priority)
        if admitted is not None:
            return admitted
        return run_sync(self._acquiring(tokens, max_wait, _is_batch(priority)))

    async def acquire_async(
        self, tokens: int, max_wait: float | None = None, priority: Priority | None = None
    ) -> Reservation:
        """:meth:`acquire` for asyncio; a cancelled waiting task leaves no trace."""
        if max_wait is not None:
            self._check(tokens, max_wait)
        admitted = self.try_acquire(tokens, priority)  # never blocks: as in a thread
        if admitted is not None:
            return admitted
        return await run_async(self._acquiring(tokens, max_wait, _is_batch(priority)))

    def try_acquire(self, tokens: int, priority: Priority | None = None) -> Reservation | None:
        """A reservation of ``tokens`` (and one request) when an in-memory limiter has
        the room now and nobody waits ahead; else ``None``, with nothing changed (then
        :meth:`acquire` waits, or a Redis limiter decides). Never blocks nor awaits, so
        asyncio code may call it too. Raises as :meth:`acquire` does for a request
        that could never be admitted. ``acquire`` and the guard admit through it
        first: a subclass that watches admissions overrides it as well.

        Example::

            r = lim.try_acquire(1200) or await lim.acquire_async(1200, max_wait=30)
        """
        if type(tokens) is not int or not 0 <= tokens <= self._largest:
            self._check(tokens, None)  # else an int that fits every limit: nothing to say
        admit_now = self._admit_now
        if admit_now is None:
            return None
        # Nobody waits: only a batch call's reserve to weigh.
        got = admit_now(tokens, _is_batch(priority))
        if got is None:
            return None
        return Reservation(self._backend, got[1], tokens, got[0], 0.0, self.limits)

    def _acquiring(self, tokens: int, max_wait: float | None, batch: bool) -> Plan[Reservation]:
        """Checked by the caller; the uncontended in-memory admission was tried."""
        if self._fallback is not None and self._clock() < self._down_until:
            return (yield from self._waiting(self._fallback, self._part(tokens), max_wait, batch))
        try:
            admitted = yield from self._waiting(self._backend, tokens, max_wait, batch)
        except LimiterUnavailable as exc:
            if self._fallback is None:
                raise
            fallback = self._failing_open(exc, "acquire")
            return (yield from self._waiting(fallback, self._part(tokens), max_wait, batch))
        self._outage = False
        return admitted

    def _failing_open(self, exc: LimiterUnavailable, during: str) -> Backend:
        """The fallback while Redis is down, for another lease: the one made when the
        outage began, with what it admitted still charged (a fresh, full one at every
        failed retry would admit a whole share each lease), or a fresh share when an
        outage begins. Staying local for a lease spares each call a dead server's
        connect timeout."""
        with self._outage_lock:  # threads failing together start one outage
            if not self._outage:
                self._fallback = self._sharing()
                self._outage = True
            fallback = self._fallback
            self._down_until = self._clock() + self._lease
        emit(LimiterFailOpen(error=str(exc), during=during, retry_in=self._lease))
        assert fallback is not None
        return fallback

    def _sharing(self) -> Backend:
        """A fresh local fallback for an outage starting now, with this process's share
        of every limit: ``fail_open_share``, or one over the number of processes Redis
        last said were using the key. Each starts full, so all of them together admit at
        most about one limit more than the server's bucket holds (see the docs'
        reliability page), then the limit's rate."""
        share = self._share
        if share is None:
            share = 1.0 / max(int(getattr(self._backend, "peers", 1)), 1)
        lim = self.limits

        def part(x: int | None) -> int | None:
            return None if x is None else max(1, int(x * share))

        caps = [x for x in (part(lim.tpm), part(lim.tpd)) if x is not None]
        self._share_cap = min(caps) if caps else None
        fresh = self._local(
            WindowLimits(
                tpm=part(lim.tpm),
                rpm=part(lim.rpm),
                tpd=part(lim.tpd),
                rpd=part(lim.rpd),
                window=lim.window,
            )
        )
        # The share holds for the outage: headers speak of the whole account's limits,
        # and taking them would let every process admit the whole limit again.
        fresh.takes_limits = False
        return fresh

    def _part(self, tokens: int) -> int:
        # A request above this process's share of a token limit waits for the whole share
        # (the fallback admits nothing larger), as one above a header's capacity does.
        return tokens if self._share_cap is None else min(tokens, self._share_cap)

    def _waiting(
        self, backend: Backend, tokens: int, max_wait: float | None, batch: bool = False
    ) -> Plan[Reservation]:
        """The one loop: enter the queue, wait until woken or until the computed time,
        look again; leave the queue on any failure (timeout, error, cancellation)."""
        forever = max_wait is not None and math.isinf(max_wait)
        bounded = None if forever else max_wait
        day_wait = self._day_wait if max_wait is None else None
        ticket = Ticket(
            tokens,
            max_wait=bounded,
            estimate=bounded is not None or day_wait is not None,
            batch=batch,
        )
        step = yield from backend.start_plan(ticket)
        wait = _Wait(self.limits, tokens, step.now, bounded, day_wait, ticket.deadline)
        try:
            while step.charge is None:
                if step.lost:
                    step = yield from backend.start_plan(ticket)
                    continue
                timeout = wait.next(step)
                yield from backend.wait_plan(ticket, timeout)
                step = yield from backend.poll_plan(ticket)
        except BaseException:
            yield from backend.leave_plan(ticket)
            raise
        return Reservation(
            backend,
            step.charge,
            tokens,
            step.now if step.at is None else step.at,
            step.now - wait.start,
            self.limits,
            fail_open=self._fallback is not None,
        )

    async def aclose(self) -> None:
        """Close the asyncio Redis connections this limiter opened for the running loop."""
        close = getattr(self._backend, "aclose", None)
        if close is not None:
            await close()

    # -- server feedback ----------------------------------------------------------------

    @property
    def refunds(self) -> bool | None:
        """Whether a commit for less frees the unused tokens: ``True``/``False`` as given
        or as learned from the server, ``None`` while learning (see the class). Learned
        ``True`` (the bucket, from headers given to ``commit``) may still turn
        ``False``; learned ``False`` is final.

        Example::

            lim = tg.Limiter(tpm=6000)
            lim.refunds  # None: learning; True once headers proved refunds (the bucket),
            # False once a header or 429 showed a free kept
        """
        return self._backend.refunds

    def observe(self, headers: Mapping[str, Any]) -> None:
        """Adopt the server's view from response headers: its remaining room when
        tighter than ours, and its limits (``x-ratelimit-limit-tokens`` for TPM,
        ``-requests`` for RPD) both ways, with a ``tokenguard.limiter.limit_changed``
        event per change.

        Give it the headers of a response just read (a 429's too: ``exc.response.headers``).
        A wait these limits cannot justify is reported as a
        ``tokenguard.limiter.bad_header`` event and not believed: a ``retry-after``
        holds for at most the window (a day with day limits), a token reset longer than
        the window is ignored.
        Unless refunds are known (``refunds=True``), they also free unused tokens that
        commits kept, as far as they prove the server has the room. The headers are
        matched to their request: after ``r.commit(actual)`` or ``r.cancel()`` in the
        same thread or asyncio task, they are taken as the answer to ``r`` (as
        :meth:`Reservation.observe` does; once), so admissions after ``r`` are not
        taken as seen by them, whatever other threads did meanwhile. Without such a
        reservation they are taken as current.

        Example::

            try:
                raw = client.chat.completions.with_raw_response.create(...)
            except openai.RateLimitError as exc:
                r.cancel()
                lim.observe(exc.response.headers)   # then acquire again
                raise
            r.commit(raw.parse().usage.total_tokens)
            lim.observe(raw.headers)
        """
        run_sync(self._observing_headers(headers))

    async def observe_async(self, headers: Mapping[str, Any]) -> None:
        """:meth:`observe` for asyncio code."""
        await run_async(self._observing_headers(headers))

    def _observing_headers(self, headers: Mapping[str, Any]) -> Plan[None]:
        """:meth:`observe`, for either runner: the headers checked, matched to the
        reservation this thread or task answered last, then adopted."""
        view = _believable(_view(headers), self.limits)
        if view is None:
            return
        r = self._answered()
        if r is not None and r._direct is not None:
            r._direct.observe(view, r._charge)
            return
        yield from self._observing(view, r)

    def observe_limit(self, name: str, limit: int, used: int | None = None) -> None:
        """Adopt a limit the server named in a refusal's body: ``name`` (``"tpm"``,
        ``"rpm"``, ``"tpd"``, ``"rpd"``) is ``limit``, and with ``used`` that much of it
        is spent now (the room left is lowered to ``limit - used``, never raised). A
        limit this limiter did not count is counted from then on (every process on a
        Redis key with the bucket algorithm), with a ``tokenguard.limiter.limit_changed``
        event. Values that cannot be true (a limit outside ``1..10**9``, ``used``
        outside ``0..limit``) are reported as ``tokenguard.limiter.bad_body`` and
        ignored. The guard calls it for every 429 or 413 whose body it can read.

        Example::

            # "... on tokens per day (TPD): Limit 500000, Used 499950, Requested 120 ..."
            lim.observe_limit("tpd", 500_000, used=499_950)
        """
        run_sync(self._observing_limit(name, limit, used))

    async def observe_limit_async(self, name: str, limit: int, used: int | None = None) -> None:
        """:meth:`observe_limit` for asyncio code."""
        await run_async(self._observing_limit(name, limit, used))

    def _observing_limit(self, name: str, limit: int, used: int | None) -> Plan[None]:
        why = believable(name, limit, used)
        if why is not None:
            emit(LimiterBadBody(limit=name if name in LIMIT_NAMES else None, reason=why))
            return
        if self._fallback is not None and self._clock() < self._down_until:
            return  # a fail-open share takes no limits (as from headers)
        try:
            yield from self._backend.observe_limit_plan(name, limit, used)
        except LimiterUnavailable:
            if self._fallback is None:
                raise

    def _answered(self) -> Reservation | None:
        """The reservation of this limiter this thread or task committed or cancelled
        last, not yet matched to headers (taken: one response, one set of headers)."""
        r = _ANSWERED.get()
        if r is None:
            return None
        _ANSWERED.set(None)
        backend = r._backend
        if backend is self._backend or (backend is not None and backend is self._fallback):
            return r
        return None

    def _observing(self, view: ServerView, r: Reservation | None = None) -> Plan[None]:
        """Adopt ``view`` on the backend in use; ``r``: the reservation it answers, whose
        charge says what the headers cannot include on the backend that admitted it."""

        def charge(backend: Backend) -> Any:
            return r._charge if r is not None and r._backend is backend else None

        fallback = self._fallback
        if fallback is not None and self._clock() < self._down_until:
            yield from fallback.observe_plan(view, charge(fallback))
            return
        try:
            yield from self._backend.observe_plan(view, charge(self._backend))
        except LimiterUnavailable as exc:
            if fallback is None:
                raise
            # Failing open covers the server's headers too (a 429's, typically): the
            # local window stands in and learns from them.
            fallback = self._failing_open(exc, "observe")
            yield from fallback.observe_plan(view, charge(fallback))
            return
        self._outage = False


class _Wait:
    """One acquire's bounds: when to look again, and when to give up (raising)."""

    __slots__ = ("day_wait", "deadline", "limits", "max_wait", "start", "tokens")

    def __init__(
        self,
        limits: WindowLimits,
        tokens: int,
        start: float,
        max_wait: float | None,
        day_wait: float | None,
        deadline: float | None = None,
    ) -> None:
        self.limits = limits
        self.tokens = tokens
        self.start = start
        self.max_wait = max_wait
        # A shared backend sets the ticket's deadline before its first round trip: one
        # deadline for both, or the waiter sleeps past the backend's last poll.
        if deadline is None and max_wait is not None:
            deadline = start + max_wait
        self.deadline = deadline
        self.day_wait = day_wait

    def next(self, step: Step) -> float | None:
        """How long to wait before polling again; raise when the bound cannot be met:
        at once when even the soonest the request could go is past it, else when it
        has passed."""
        now, deadline, soonest = step.now, self.deadline, step.soonest
        if step.left or (deadline is not None and now >= deadline):
            assert self.max_wait is not None
            # The head's own time, as known now (a request in flight may still free it
            # sooner): what it would have needed, for the message.
            raise self._error(
                f"waited max_wait={for_people(self.max_wait)} without being admitted",
                soonest,
                now,
                needed=None if step.until is None else step.until - self.start,
                waited=True,
            )
        if soonest is not None:
            needed = soonest.at - self.start
            if deadline is not None and soonest.at > deadline:
                assert self.max_wait is not None
                raise self._error(
                    f"cannot be admitted within max_wait={for_people(self.max_wait)}", soonest, now
                )
            if (
                self.day_wait is not None
                and soonest.limit in ("tpd", "rpd")
                and needed > self.day_wait
            ):
                raise self._error(
                    f"would wait for a day limit longer than max_day_wait="
                    f"{for_people(self.day_wait)} (pass max_wait= longer, or math.inf to "
                    "wait as long as it takes)",
                    soonest,
                    now,
                )
        if deadline is None:
            return None if step.until is None else max(step.until - now, 0.0)
        if step.until is None:
            return deadline - now
        return max(min(step.until, deadline) - now, 0.0)

    def _error(
        self,
        what: str,
        soonest: Soonest | None,
        now: float,
        *,
        needed: float | None = None,
        waited: bool = False,
    ) -> RateLimitTimeout:
        if not waited and soonest is not None:
            needed = soonest.at - self.start
        limit = None if soonest is None or not soonest.limit else soonest.limit
        resets = None if soonest is None or limit is None else max(soonest.resets - now, 0.0)
        if limit is None:
            why = ": requests in flight or ahead of it in the queue held it back"
            if needed is not None:
                why += f" (it would have waited about {for_people(needed)})"
        else:
            why = f": the {self._describe(limit)}"
            if needed is not None:
                why += f" holds it back {'about' if waited else 'at least'} {for_people(needed)}"
            if resets is not None and limit != "retry-after":
                why += f"; that limit is whole again in {for_people(resets)}"
        return RateLimitTimeout(
            f"a request of {self.tokens:,} tokens {what}{why}",
            needed_wait=needed,
            max_wait=self.max_wait if self.max_wait is not None else self.day_wait or 0.0,
            limit_name=limit,
            resets_in=resets,
        )

    def _describe(self, limit: str) -> str:
        if limit == "retry-after":
            return "server's retry-after"
        value = getattr(self.limits, limit)
        unit = "tokens" if limit.startswith("t") else "requests"
        period = self.limits.window if limit.endswith("m") else self.limits.day
        per = {60.0: "minute", 86400.0: "day"}.get(period) or for_people(period)
        if value is None:  # taught by a refusal's body after this wait began
            return f"{limit.upper()} limit (in {unit} per {per}, learned while it waited)"
        return f"{limit.upper()} limit ({value:,} {unit} per {per})"
