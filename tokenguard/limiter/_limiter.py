"""The public face: :class:`Limiter` and :class:`Reservation`.

Each decision loop (acquire: start, wait, poll, leave on failure; settle) is
written once, as a plan (see :mod:`tokenguard._drive`) built from the backend's
plans; the sync methods run it with ``run_sync``, the ``*_async`` ones with
``run_async``. Decisions live in the backend.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._drive import Plan, run_async, run_sync
from ..errors import ConfigurationError, LimiterUnavailable, RateLimitTimeout, RequestTooLarge
from ..events import LimiterFailOpen, emit
from ._backend import Backend, Step, Ticket
from ._headers import ServerView, parse_headers
from ._memory import MemoryBackend
from ._window import WindowLimits

if TYPE_CHECKING:
    import redis as redis_lib

    from ..models import ModelInfo

__all__ = ["Limiter", "Reservation"]


_SETTLE_LOCK = threading.Lock()


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
        *,
        fail_open: bool = False,
    ) -> None:
        self._backend = backend
        self._charge = charge
        self._fail_open = fail_open
        # In memory a settle neither blocks nor awaits: call it, no plan to run.
        self._direct = backend if type(backend) is MemoryBackend else None
        #: The estimate admitted, when (in the backend's clock: the injected clock, or
        #: Redis time) and after how long a wait.
        self.tokens = tokens
        self.at = at
        self.waited = waited
        self.settled = False

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
        class)."""
        if type(actual_tokens) is not int or actual_tokens < 0:  # the usual int passes
            _check_tokens(actual_tokens, "actual_tokens")
        direct = self._direct
        if direct is not None:  # marked settled under the backend's lock
            direct.settle(self._charge, actual_tokens, _view(headers), self)
            return
        run_sync(self._settling(actual_tokens, _view(headers)))

    def cancel(self) -> None:
        """Refund the whole reservation: the request never reached the server."""
        direct = self._direct
        if direct is not None:
            direct.settle(self._charge, None, None, self)
            return
        run_sync(self._settling(None, None))

    async def commit_async(
        self, actual_tokens: int, *, headers: Mapping[str, Any] | None = None
    ) -> None:
        """:meth:`commit` for asyncio code (does not block the loop on Redis)."""
        if type(actual_tokens) is not int or actual_tokens < 0:
            _check_tokens(actual_tokens, "actual_tokens")
        direct = self._direct
        if direct is not None:  # marked settled under the backend's lock
            direct.settle(self._charge, actual_tokens, _view(headers), self)
            return
        await run_async(self._settling(actual_tokens, _view(headers)))

    async def cancel_async(self) -> None:
        """:meth:`cancel` for asyncio code."""
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


def _check_tokens(tokens: object, what: str) -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ConfigurationError(f"{what} must be an int >= 0, got {tokens!r}")


def _check_limit(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int or None, got {value!r}")


class Limiter:
    """Admits requests so that the server's rate limits are never exceeded, in strict FIFO
    order.

    ``tpm``/``rpm`` are per ``window`` seconds (the "minute": 60 for Groq, smaller in
    tests), ``tpd``/``rpd`` per ``1440 * window``. A request costs its token estimate
    and one request.

    ``algorithm`` says how. ``"bucket"`` (the default; right for Groq) mirrors a server
    whose limits are refilling token buckets, as Groq's are (capacity = limit, refilled
    at limit per period): after a burst a request waits only until the bucket has
    refilled its cost, and the estimate of a request in flight holds room only until its
    commit. Estimates in flight are never refilled (the server charges them when they
    arrive, at any time before the response), so the mirror never runs ahead of the
    server's bucket. A header whose ``x-ratelimit-limit-tokens`` is below ``tpm`` sets
    the bucket's capacity and refill (that limit per ``window``). Choose ``"window"``
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
    ``tokenguard.limiter.fail_open`` warning event is logged). Every Redis round trip
    has a deadline, whatever the client's ``socket_timeout``: what is left of the
    caller's ``max_wait`` plus half a second; without one (``commit``, ``cancel``,
    ``observe``, an acquire with no ``max_wait``) ``redis_timeout`` seconds (default:
    the client's ``socket_timeout``, else 5). A Redis that does not answer in time is
    :class:`~tokenguard.LimiterUnavailable` (or the fallback, with ``fail_open``).

    Server headers (``observe``, ``commit(headers=)``) are adopted when the server is
    tighter. A header describes the server when the response was written: what this
    limiter admitted within ``header_lag`` seconds before the header is read (and after
    the reservation it answers) is taken as not yet seen by the server. The default 0
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
    ) -> None:
        for name, value in (("tpm", tpm), ("rpm", rpm), ("tpd", tpd), ("rpd", rpd)):
            _check_limit(name, value)
        if tpm is None and rpm is None and tpd is None and rpd is None:
            raise ConfigurationError("a Limiter needs at least one of tpm, rpm, tpd, rpd")
        if isinstance(window, bool) or not isinstance(window, (int, float)):
            raise ConfigurationError(f"window must be seconds > 0, got {window!r}")
        if not (math.isfinite(window) and window > 0):
            raise ConfigurationError(f"window must be seconds > 0, got {window!r}")
        if not (isinstance(lease, (int, float)) and math.isfinite(lease) and lease > 0):
            raise ConfigurationError(f"lease must be seconds > 0, got {lease!r}")
        if not (
            isinstance(header_lag, (int, float)) and math.isfinite(header_lag) and header_lag >= 0
        ):
            raise ConfigurationError(f"header_lag must be seconds >= 0, got {header_lag!r}")
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
        if redis_timeout is not None and not (
            isinstance(redis_timeout, (int, float))
            and not isinstance(redis_timeout, bool)
            and math.isfinite(redis_timeout)
            and redis_timeout > 0
        ):
            raise ConfigurationError(
                f"redis_timeout must be seconds > 0 or None, got {redis_timeout!r}"
            )
        if algorithm not in ("bucket", "window"):
            raise ConfigurationError(f'algorithm must be "bucket" or "window", got {algorithm!r}')
        self.algorithm = algorithm
        self.limits = WindowLimits(tpm=tpm, rpm=rpm, tpd=tpd, rpd=rpd, window=float(window))
        # The largest request every token limit takes (``limits.too_large`` is None).
        self._largest: float = min(x for x in (tpm, tpd, math.inf) if x is not None)
        self.key = key
        self._fallback: Backend | None = None
        self._clock = clock
        self._lease = float(lease)
        self._down_until = -math.inf
        self._share = None if fail_open_share is None else float(fail_open_share)
        self._share_cap: int | None = None  # the fallback's smallest token limit
        local = self._local = functools.partial(
            MemoryBackend,
            clock=clock,
            sleep=sleep,
            header_lag=float(header_lag),
            refunds=refunds,
            algorithm=algorithm,
        )
        self._backend: Backend
        # The in-memory backend's uncontended admission, tried before any plan runs.
        self._admit_now: Callable[[int], tuple[float, Any] | None] | None = None
        if redis is None:
            memory = local(self.limits)
            self._backend = memory
            self._admit_now = memory.admit_now
        else:
            from ._redis import RedisBackend

            self._backend = RedisBackend(
                self.limits,
                redis,
                key=key,
                lease=float(lease),
                header_lag=float(header_lag),
                refunds=refunds,
                algorithm=algorithm,
                round_trip=None if redis_timeout is None else float(redis_timeout),
            )
            if fail_open:
                self._fallback = local(self.limits)

    @classmethod
    def from_model(cls, model: ModelInfo | str, tier: str = "free", **options: Any) -> Limiter:
        """A limiter with the limits of ``model`` (a name or a :class:`~tokenguard.ModelInfo`)
        for ``tier`` from the model table; ``tpm=`` etc. in ``options`` override them,
        and the other options are those of :class:`Limiter`.

        Example::

            lim = tg.Limiter.from_model("llama-3.1-8b-instant", redis=r, key="team-a")
        """
        from ..models import get_model

        info = get_model(model) if isinstance(model, str) else model
        known = info.tier_limits(tier)
        limits: dict[str, Any] = {
            name: options.pop(name) if name in options else getattr(known, name, None)
            for name in ("tpm", "rpm", "tpd", "rpd")
        }
        if all(v is None for v in limits.values()):
            raise ConfigurationError(
                f"no {tier!r} limits are known for model {info.name!r}; pass tpm=, rpm=, "
                "tpd= or rpd= (or register the model's limits with tg.register_model)"
            )
        return cls(**limits, **options)

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

    def acquire(self, tokens: int, max_wait: float | None = None) -> Reservation:
        """Block until ``tokens`` (and one request) fit every limit, in FIFO order.

        Raises :class:`~tokenguard.RequestTooLarge` at once when one limit is smaller
        than the request, and :class:`~tokenguard.RateLimitTimeout` (with
        ``needed_wait``) at once when the wait is known to exceed ``max_wait``, or
        when ``max_wait`` runs out.
        """
        if max_wait is not None or type(tokens) is not int or not 0 <= tokens <= self._largest:
            self._check(tokens, max_wait)  # else an int that fits every limit: nothing to say
        admit_now = self._admit_now
        if admit_now is not None:
            got = admit_now(tokens)
            if got is not None:
                return Reservation(self._backend, got[1], tokens, got[0], 0.0)
        return run_sync(self._acquiring(tokens, max_wait))

    async def acquire_async(self, tokens: int, max_wait: float | None = None) -> Reservation:
        """:meth:`acquire` for asyncio; a cancelled waiting task leaves no trace."""
        if max_wait is not None or type(tokens) is not int or not 0 <= tokens <= self._largest:
            self._check(tokens, max_wait)
        # The memory backend admits at once (nobody queued, room now) without the
        # queue's plan; its decisions never block: as in a thread.
        admit_now = self._admit_now
        if admit_now is not None:
            got = admit_now(tokens)
            if got is not None:
                return Reservation(self._backend, got[1], tokens, got[0], 0.0)
        return await run_async(self._acquiring(tokens, max_wait))

    def _acquiring(self, tokens: int, max_wait: float | None) -> Plan[Reservation]:
        """Checked by the caller; the uncontended in-memory admission was tried."""
        if self._fallback is not None and self._clock() < self._down_until:
            return (yield from self._waiting(self._fallback, self._part(tokens), max_wait))
        try:
            return (yield from self._waiting(self._backend, tokens, max_wait))
        except LimiterUnavailable as exc:
            if self._fallback is None:
                raise
            # Stay local for a lease before trying Redis again: every attempt against a
            # dead server costs its connect timeout and retries.
            self._fallback = self._sharing()
            self._down_until = self._clock() + self._lease
            emit(LimiterFailOpen(error=str(exc), during="acquire", retry_in=self._lease))
            return (yield from self._waiting(self._fallback, self._part(tokens), max_wait))

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
        return self._local(
            WindowLimits(
                tpm=part(lim.tpm),
                rpm=part(lim.rpm),
                tpd=part(lim.tpd),
                rpd=part(lim.rpd),
                window=lim.window,
            )
        )

    def _part(self, tokens: int) -> int:
        # A request above this process's share of a token limit waits for the whole share
        # (the fallback admits nothing larger), as one above a header's capacity does.
        return tokens if self._share_cap is None else min(tokens, self._share_cap)

    def _waiting(self, backend: Backend, tokens: int, max_wait: float | None) -> Plan[Reservation]:
        """The one loop: enter the queue, wait until woken or until the computed time,
        look again; leave the queue on any failure (timeout, error, cancellation)."""
        ticket = Ticket(tokens, max_wait=max_wait)
        step = yield from backend.start_plan(ticket)
        start = step.now
        deadline = None if max_wait is None else start + max_wait
        try:
            while step.charge is None:
                if step.lost:
                    step = yield from backend.start_plan(ticket)
                    continue
                timeout = _next_wait(step, start, deadline, max_wait, tokens)
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
            step.now - start,
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
        """Adopt the server's view from response headers when it is tighter than ours.

        Give it the headers of a response just read (a 429's too: ``exc.response.headers``).
        Unless refunds are known (``refunds=True``), they also free unused tokens that
        commits kept, as far as they prove the server has the room, counting whatever
        is in flight as not yet seen by the server: ``r.commit(actual)`` then
        ``lim.observe(headers)`` frees what ``r.commit(actual, headers=headers)`` would
        (the latter knows exactly which admissions the headers may not reflect yet).

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
        view = _view(headers)
        if view is not None:
            run_sync(self._observing(view))

    async def observe_async(self, headers: Mapping[str, Any]) -> None:
        """:meth:`observe` for asyncio code."""
        view = _view(headers)
        if view is not None:
            await run_async(self._observing(view))

    def _observing(self, view: ServerView) -> Plan[None]:
        if self._fallback is not None and self._clock() < self._down_until:
            yield from self._fallback.observe_plan(view)
            return
        try:
            yield from self._backend.observe_plan(view)
        except LimiterUnavailable as exc:
            if self._fallback is None:
                raise
            # Failing open covers the server's headers too (a 429's, typically): the
            # local window stands in and learns from them.
            self._fallback = self._sharing()
            self._down_until = self._clock() + self._lease
            emit(LimiterFailOpen(error=str(exc), during="observe", retry_in=self._lease))
            yield from self._fallback.observe_plan(view)


def _next_wait(
    step: Step, start: float, deadline: float | None, max_wait: float | None, tokens: int
) -> float | None:
    """How long to wait before polling again; raise when the deadline cannot be met."""
    now = step.now
    if deadline is None:
        return None if step.until is None else max(step.until - now, 0.0)
    assert max_wait is not None
    known = max((x for x in (step.until, step.needed_until) if x is not None), default=None)
    if known is not None and known > deadline:
        needed = known - start
        raise RateLimitTimeout(
            f"a request of {tokens} tokens would have to wait {needed:.3f}s for the rate "
            f"window, longer than max_wait={max_wait}s",
            needed_wait=needed,
            max_wait=max_wait,
        )
    if now >= deadline:
        raise RateLimitTimeout(
            f"a request of {tokens} tokens waited max_wait={max_wait}s for its turn in the "
            "rate-limit queue without being admitted",
            needed_wait=None,
            max_wait=max_wait,
        )
    if step.until is None:
        return deadline - now
    return max(min(step.until, deadline) - now, 0.0)
