"""Budgets for a block of code: ``with tg.budget(tokens=..., usd=...) as b:``.

A budget caps what the calls made inside a block may spend (tokens, requests, US
dollars), whatever function, thread or task makes them. Budgets nest: a call charges
every budget open around it and must fit each of them. A call's estimate (prompt +
completion reservation, and its price at that size) is held before anything is sent,
so calls running in parallel cannot overshoot together; when the response arrives the
hold is replaced by the usage as the server reported it (``usage.total_tokens``, cached
prompt tokens included: a budget counts what you were billed for, unlike the rate
limiter, which follows what counts toward Groq's limits). A call that fails before
reaching the server gives its hold back.

A budget with a ``key`` lives in Redis (:mod:`tokenguard._spend._shared`) and is shared
by every process there, per calendar day or month (UTC) or per rolling window; the
object in the block then also counts what this block spent.

Open budgets travel with :mod:`contextvars`: asyncio tasks created inside the block
inherit them; a thread pool does not (threads start with an empty context), so wrap
the function you submit with :func:`carry`.

Example::

    import tokenguard as tg

    with tg.budget(tokens=20_000, usd="0.50") as b:
        ask(...)                  # a guarded call; raises tg.BudgetExceeded before sending
        print(b.used, b.spent_usd, b.remaining)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._drive import Plan, run_sync
from ._extras import require
from ._spend._prices import to_pico
from ._spend._prices import usd as _usd
from .errors import BudgetExceeded, BudgetUnavailable, ConfigurationError, UnknownPrice

if TYPE_CHECKING:
    from ._spend._shared import SharedStore
    from ._spend._status import BudgetStatus

__all__ = [
    "DEFAULT_LEASE",
    "NO_HOLD",
    "Budget",
    "BudgetHold",
    "budget",
    "budget_status",
    "carry",
    "open_budgets",
    "reserve",
    "reserve_plan",
    "room",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds a shared budget's hold lasts unless settled: longer than any one call
#: (a long stream included); a process that died with a hold has it charged then.
DEFAULT_LEASE = 900.0

_open: contextvars.ContextVar[tuple[Budget, ...]] = contextvars.ContextVar(
    "tokenguard_budgets", default=()
)
# One lock for every budget: a reservation checks and charges all nested budgets as
# one step, and each step is a few additions, so one lock costs nothing measurable
# and rules out lock-ordering deadlocks between nested budgets.
_lock = threading.Lock()


def _check_limit(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"budget {name} must be an int >= 0 or None, got {value!r}")
    return value


def _check_per(per: object) -> str:
    if per in ("day", "month"):
        return str(per)
    number = isinstance(per, (int, float)) and not isinstance(per, bool)
    if number and math.isfinite(per) and per > 0:  # type: ignore[arg-type, operator]
        return repr(float(per))  # type: ignore[arg-type]
    raise ConfigurationError(
        f'budget per must be "day", "month" or a number of seconds > 0, got {per!r}'
    )


def _shared(key: object, per: object, redis: object, lease: object) -> SharedStore | None:
    if key is None and per is None and redis is None:
        return None
    if not isinstance(key, str) or not key or redis is None or per is None:
        raise ConfigurationError(
            "a shared budget needs key= (a non-empty string), per= and redis= (a "
            f"redis.Redis client); got key={key!r}, per={per!r}, redis={redis!r}"
        )
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
        raise ConfigurationError(f"budget lease must be seconds > 0, got {lease!r}")
    require("redis", "redis", "a budget shared through Redis")
    from ._spend._shared import SharedStore

    return SharedStore(redis, key, _check_per(per), float(lease))


class Budget:
    """Tokens, requests and US dollars a block of code may spend; see :func:`budget`.

    ``used`` / ``requests_used`` / ``spent_usd`` count settled calls (usage as the
    server reported it); ``reserved`` / ``requests_reserved`` / ``reserved_usd`` the
    calls in flight; ``remaining`` is what a new call may still reserve (``None``
    without a token cap, and for a shared budget, whose state is in Redis: read it
    with :func:`budget_status`). Money is exact :class:`~decimal.Decimal` dollars.
    """

    def __init__(
        self,
        *,
        tokens: int | None = None,
        requests: int | None = None,
        usd: Decimal | int | float | str | None = None,
        name: str | None = None,
        key: str | None = None,
        per: str | float | None = None,
        redis: Any = None,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        self.tokens = _check_limit("tokens", tokens)
        self.requests = _check_limit("requests", requests)
        self.usd = None if usd is None else _usd(usd, "budget usd")
        self.name = name if name is not None else key
        self.key = key
        self.shared = _shared(key, per, redis, lease)
        self.used = 0
        self.reserved = 0
        self.requests_used = 0
        self.requests_reserved = 0
        self.spent_usd = Decimal(0)
        self.reserved_usd = Decimal(0)
        self._tokens: list[contextvars.Token[tuple[Budget, ...]]] = []

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        money = f" usd={self.usd} spent_usd={self.spent_usd}" if self.usd is not None else ""
        return (
            f"<Budget{label} tokens={self.tokens} used={self.used} reserved={self.reserved} "
            f"requests={self.requests} requests_used={self.requests_used}{money}>"
        )

    @property
    def label(self) -> str:
        return f" {self.name!r}" if self.name else ""

    @property
    def remaining(self) -> int | None:
        """Tokens a new call may still reserve (``None``: no token cap, or shared)."""
        if self.tokens is None or self.shared is not None:
            return None
        return max(0, self.tokens - self.used - self.reserved)

    @property
    def remaining_requests(self) -> int | None:
        """Requests a new call may still make (``None``: no request cap, or shared)."""
        if self.requests is None or self.shared is not None:
            return None
        return max(0, self.requests - self.requests_used - self.requests_reserved)

    @property
    def remaining_usd(self) -> Decimal | None:
        """Dollars a new call may still reserve (``None``: no money cap, or shared)."""
        if self.usd is None or self.shared is not None:
            return None
        return max(Decimal(0), self.usd - self.spent_usd - self.reserved_usd)

    def _caps(self) -> tuple[int, int, int]:
        """The caps as a shared budget's script takes them (-1: none)."""
        return (
            -1 if self.tokens is None else self.tokens,
            -1 if self.requests is None else self.requests,
            -1 if self.usd is None else to_pico(self.usd),
        )

    def _shortfall(self, tokens: int, cost: Decimal | None) -> BudgetExceeded | None:
        label = self.label
        left = self.remaining_requests
        if left is not None and left < 1:
            return BudgetExceeded(
                f"budget{label} allows {self.requests} requests and all are used or in "
                "flight; nothing was sent",
                needed=1,
                remaining=0,
                unit="requests",
            )
        room = self.remaining
        if room is not None and tokens > room:
            return BudgetExceeded(
                f"a request of {tokens} tokens does not fit budget{label} of {self.tokens} "
                f"tokens: {room} remaining ({self.used} used, {self.reserved} in flight); "
                "nothing was sent",
                needed=tokens,
                remaining=room,
                unit="tokens",
            )
        money = self.remaining_usd
        if money is not None and cost is not None and cost > money:
            return BudgetExceeded(
                f"a request estimated at ${cost:f} does not fit budget{label} of "
                f"${self.usd:f}: ${money:f} remaining (${self.spent_usd:f} spent, "
                f"${self.reserved_usd:f} in flight); nothing was sent",
                needed=cost,
                remaining=money,
                unit="usd",
            )
        return None

    # -- as a context manager -----------------------------------------------------------

    def __enter__(self) -> Budget:
        current = _open.get()
        # Entering an already open budget again must not make one call charge it twice.
        self._tokens.append(_open.set(current if self in current else (*current, self)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _open.reset(self._tokens.pop())

    async def __aenter__(self) -> Budget:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class BudgetHold:
    """One call's estimate held in every budget open around it; settle it once.

    ``commit(actual)`` replaces the estimate by the usage the server reported (and
    ``usd=``, its cost; by default the estimate's); ``cancel()`` gives it back (the
    request never reached the server). The first settles the hold and later calls do
    nothing. ``commit_plan`` / ``cancel_plan`` are the same as plans, for a shared
    budget's round trips in a thread or a task.
    """

    __slots__ = ("budgets", "settled", "shared", "tokens", "usd")

    def __init__(self, budgets: tuple[Budget, ...], tokens: int, usd: Decimal | None = None):
        self.budgets = budgets
        self.tokens = tokens
        self.usd = usd
        self.settled = not budgets
        #: The shared budgets' holds: (store, hold id).
        self.shared: list[tuple[SharedStore, str]] = []

    def __repr__(self) -> str:
        state = "settled" if self.settled else "open"
        return f"<BudgetHold tokens={self.tokens} budgets={len(self.budgets)} {state}>"

    def commit(self, actual_tokens: int, usd: Decimal | None = None) -> None:
        """Charge ``actual_tokens`` (the reported usage), and ``usd`` (its cost; by
        default the estimate's), instead of the estimate."""
        if type(actual_tokens) is int and actual_tokens >= 0 and self.settled:
            return  # outside every budget (or settled already): nothing to charge
        run_sync(self.commit_plan(actual_tokens, usd))

    def cancel(self) -> None:
        """Give the whole hold back: nothing reached the server."""
        run_sync(self.cancel_plan())

    def commit_plan(self, actual_tokens: int, usd: Decimal | None = None) -> Plan[None]:
        """:meth:`commit` as a plan. A shared budget that cannot be reached raises
        :class:`~tokenguard.BudgetUnavailable` once every budget was tried (its hold is
        then charged at the estimate when its lease runs out)."""
        if isinstance(actual_tokens, bool) or not isinstance(actual_tokens, int):
            raise ConfigurationError(f"actual_tokens must be an int >= 0, got {actual_tokens!r}")
        if actual_tokens < 0:
            raise ConfigurationError(f"actual_tokens must be an int >= 0, got {actual_tokens!r}")
        cost = self.usd if usd is None else usd
        if not self._settle(actual_tokens, cost):
            return
        pico = 0 if cost is None else to_pico(cost)
        yield from self._each_shared(lambda store, hid: store.settle_plan(hid, actual_tokens, pico))

    def cancel_plan(self) -> Plan[None]:
        """:meth:`cancel` as a plan."""
        if self._settle(None, None):
            yield from self._each_shared(lambda store, hid: store.release_plan(hid))

    def abandon(self, actual_tokens: int, usd: Decimal | None = None) -> None:
        """Settle without I/O (a stream collected as garbage): this process's budgets are
        charged; a shared budget's hold is charged its estimate when its lease runs out."""
        self._settle(actual_tokens, self.usd if usd is None else usd)

    def _each_shared(self, step: Callable[[SharedStore, str], Plan[None]]) -> Plan[None]:
        failed: BudgetUnavailable | None = None
        for store, hid in self.shared:
            try:
                yield from step(store, hid)
            except BudgetUnavailable as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def _settle(self, actual: int | None, cost: Decimal | None) -> bool:
        """Settle this process's budgets; whether this call did it (the first one)."""
        if self.settled:  # only ever turns True: no lock needed to see it
            return False
        with _lock:
            if self.settled:
                return False
            self.settled = True
            for b in self.budgets:
                b.reserved -= self.tokens
                b.requests_reserved -= 1
                if self.usd is not None:
                    b.reserved_usd -= self.usd
                if actual is not None:
                    b.used += actual
                    b.requests_used += 1
                    if cost is not None:
                        b.spent_usd += cost
        return True


def budget(
    *,
    tokens: int | None = None,
    requests: int | None = None,
    usd: Decimal | int | float | str | None = None,
    name: str | None = None,
    key: str | None = None,
    per: str | float | None = None,
    redis: Any = None,
    lease: float = DEFAULT_LEASE,
) -> Budget:
    """A budget of ``tokens``, ``requests`` and/or ``usd`` (US dollars, priced by the
    model's :class:`~tokenguard.Price`) for the calls made inside the block.

    Use it as ``with`` or ``async with``; nest freely. A guarded call whose estimate
    does not fit raises :class:`~tokenguard.BudgetExceeded` before anything is sent;
    what it used is charged when it returns. Without caps it only measures. A money
    cap on a model without a price raises :class:`~tokenguard.UnknownPrice`.

    With ``key``, ``per`` and ``redis`` the budget is shared by every process on that
    Redis: ``per="day"`` or ``"month"`` (calendar periods in UTC) or a number of
    seconds (a rolling window); holds of a process that dies are charged their
    estimate after ``lease`` seconds. Redis down raises
    :class:`~tokenguard.BudgetUnavailable` (nothing is sent).

    Example::

        with tg.budget(tokens=20_000, usd="0.25", requests=10) as b:
            ask(...)
        print(b.used, b.spent_usd, b.requests_used)

        with tg.budget(usd=5, key="tenant-42", per="day", redis=r):
            ask(...)
    """
    return Budget(
        tokens=tokens,
        requests=requests,
        usd=usd,
        name=name,
        key=key,
        per=per,
        redis=redis,
        lease=lease,
    )


def budget_status(key: str, *, redis: Any) -> BudgetStatus:
    """The shared budget ``key`` as Redis holds it now (used, in flight, caps, when
    its period resets), without spending anything.

    Example::

        s = tg.budget_status("tenant-42", redis=r)
        print(s.spent_usd, s.remaining_usd, s.resets_in)
    """
    store = _shared(key, "day", redis, DEFAULT_LEASE)
    assert store is not None
    return run_sync(store.read_plan())


def open_budgets() -> tuple[Budget, ...]:
    """The budgets open around the caller, outermost first."""
    return _open.get()


def room() -> int | None:
    """The tokens a call may reserve now: the smallest ``remaining`` of the open
    budgets, or ``None`` when none caps tokens (what fitting may use; a shared budget
    refuses a call that does not fit rather than shrinking it)."""
    budgets = _open.get()
    if not budgets:  # the common case, on every guarded call
        return None
    rooms = [r for b in budgets if (r := b.remaining) is not None]
    return min(rooms) if rooms else None


#: The hold of a call made outside every budget: nothing to hold, already settled, so
#: its commit and cancel do nothing. One shared value instead of one per call (the
#: guard takes it without calling :func:`reserve` when :func:`open_budgets` is empty).
NO_HOLD = BudgetHold((), 0)


def reserve(tokens: int, cost: Decimal | None = None, model: str = "") -> BudgetHold:
    """Hold ``tokens``, one request and ``cost`` dollars in every open budget, all or
    nothing (see :func:`reserve_plan`)."""
    return run_sync(reserve_plan(tokens, cost, model))


def reserve_plan(tokens: int, cost: Decimal | None = None, model: str = "") -> Plan[BudgetHold]:
    """Hold ``tokens``, one request and ``cost`` (the estimate's price; ``None``: no
    price known for ``model``) in every open budget, all or nothing.

    Raises :class:`~tokenguard.BudgetExceeded` (naming the tightest budget) and holds
    nothing when any of them lacks the room; :class:`~tokenguard.UnknownPrice` when a
    budget caps money and ``cost`` is ``None``.
    """
    if type(tokens) is not int and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        raise ConfigurationError(f"tokens must be an int >= 0, got {tokens!r}")
    if tokens < 0:
        raise ConfigurationError(f"tokens must be an int >= 0, got {tokens!r}")
    budgets = _open.get()
    if not budgets:
        return NO_HOLD
    if cost is None and any(b.usd is not None for b in budgets):
        raise UnknownPrice(model)
    with _lock:
        for b in budgets:
            if b.shared is None:
                short = b._shortfall(tokens, cost)
                if short is not None:
                    raise short
        for b in budgets:
            b.reserved += tokens
            b.requests_reserved += 1
            if cost is not None:
                b.reserved_usd += cost
    hold = BudgetHold(budgets, tokens, cost)
    pico = 0 if cost is None else to_pico(cost)
    for b in budgets:
        if b.shared is None:
            continue
        hid = uuid.uuid4().hex
        # Recorded first: a hold whose reply was lost may still have been taken.
        hold.shared.append((b.shared, hid))
        try:
            yield from b.shared.hold_plan(b._caps(), hid, tokens, pico, repr(b.name))
        except BaseException:
            # Given back best effort: a release that cannot reach Redis leaves the hold
            # to its lease, and the caller sees the first error.
            with contextlib.suppress(BudgetUnavailable):
                yield from hold.cancel_plan()
            raise
    return hold


def carry(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` wrapped to run under the budgets open here, in whatever thread runs it.

    Threads start with an empty context, so a thread pool would otherwise escape the
    block's budgets. Example::

        with tg.budget(tokens=50_000), ThreadPoolExecutor(8) as pool:
            results = list(pool.map(tg.carry(ask), questions))
    """
    budgets = _open.get()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _open.set(budgets)
        try:
            return fn(*args, **kwargs)
        finally:
            _open.reset(token)

    return run
