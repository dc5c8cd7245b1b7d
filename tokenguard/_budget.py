"""Token and request budgets for a block of code: ``with tg.budget(tokens=...) as b:``.

A budget caps what the calls made inside a block may spend, whatever function,
thread or task makes them. Budgets nest: a call charges every budget open around it
and must fit each of them. A call's estimate (prompt + completion reservation) is
held before anything is sent, so calls running in parallel cannot overshoot
together; when the response arrives the hold is replaced by the usage as the server
reported it (``usage.total_tokens``, cached prompt tokens included: a budget counts
what you were billed for, unlike the rate limiter, which follows what counts toward
Groq's limits). A call that fails before reaching the server gives its hold back.

Open budgets travel with :mod:`contextvars`: asyncio tasks created inside the block
inherit them; a thread pool does not (threads start with an empty context), so wrap
the function you submit with :func:`carry`.

Example::

    import tokenguard as tg

    with tg.budget(tokens=20_000) as b:
        ask(...)                  # a guarded call; raises tg.BudgetExceeded before sending
        print(b.used, b.remaining)
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

from .errors import BudgetExceeded, ConfigurationError

__all__ = [
    "NO_HOLD",
    "Budget",
    "BudgetHold",
    "budget",
    "carry",
    "open_budgets",
    "reserve",
    "room",
]

P = ParamSpec("P")
R = TypeVar("R")

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


class Budget:
    """Tokens and requests a block of code may spend; see :func:`budget`.

    ``used`` / ``requests_used`` count settled calls (usage as the server reported it);
    ``reserved`` / ``requests_reserved`` the calls in flight; ``remaining`` is what a
    new call may still reserve (``None`` without a token cap).
    """

    def __init__(
        self, *, tokens: int | None = None, requests: int | None = None, name: str | None = None
    ) -> None:
        self.tokens = _check_limit("tokens", tokens)
        self.requests = _check_limit("requests", requests)
        self.name = name
        self.used = 0
        self.reserved = 0
        self.requests_used = 0
        self.requests_reserved = 0
        self._tokens: list[contextvars.Token[tuple[Budget, ...]]] = []

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return (
            f"<Budget{label} tokens={self.tokens} used={self.used} reserved={self.reserved} "
            f"requests={self.requests} requests_used={self.requests_used}>"
        )

    @property
    def remaining(self) -> int | None:
        """Tokens a new call may still reserve (``None``: no token cap)."""
        if self.tokens is None:
            return None
        return max(0, self.tokens - self.used - self.reserved)

    @property
    def remaining_requests(self) -> int | None:
        """Requests a new call may still make (``None``: no request cap)."""
        if self.requests is None:
            return None
        return max(0, self.requests - self.requests_used - self.requests_reserved)

    def _shortfall(self, tokens: int) -> BudgetExceeded | None:
        label = f" {self.name!r}" if self.name else ""
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

    ``commit(actual)`` replaces the estimate by the usage the server reported;
    ``cancel()`` gives it back (the request never reached the server). The first
    settles the hold and later calls do nothing.
    """

    __slots__ = ("budgets", "settled", "tokens")

    def __init__(self, budgets: tuple[Budget, ...], tokens: int) -> None:
        self.budgets = budgets
        self.tokens = tokens
        self.settled = not budgets

    def __repr__(self) -> str:
        state = "settled" if self.settled else "open"
        return f"<BudgetHold tokens={self.tokens} budgets={len(self.budgets)} {state}>"

    def commit(self, actual_tokens: int) -> None:
        """Charge ``actual_tokens`` (the reported usage) instead of the estimate."""
        if type(actual_tokens) is int and actual_tokens >= 0 and self.settled:
            return  # outside every budget (or settled already): nothing to charge
        if isinstance(actual_tokens, bool) or not isinstance(actual_tokens, int):
            raise ConfigurationError(f"actual_tokens must be an int >= 0, got {actual_tokens!r}")
        if actual_tokens < 0:
            raise ConfigurationError(f"actual_tokens must be an int >= 0, got {actual_tokens!r}")
        self._settle(actual_tokens)

    def cancel(self) -> None:
        """Give the whole hold back: nothing reached the server."""
        self._settle(None)

    def _settle(self, actual: int | None) -> None:
        if self.settled:  # only ever turns True: no lock needed to see it
            return
        with _lock:
            if self.settled:
                return
            self.settled = True
            for b in self.budgets:
                b.reserved -= self.tokens
                b.requests_reserved -= 1
                if actual is not None:
                    b.used += actual
                    b.requests_used += 1


def budget(
    *, tokens: int | None = None, requests: int | None = None, name: str | None = None
) -> Budget:
    """A budget of ``tokens`` and/or ``requests`` for the calls made inside the block.

    Use it as ``with`` or ``async with``; nest freely. A guarded call whose estimate
    does not fit raises :class:`~tokenguard.BudgetExceeded` before anything is sent;
    what it used is charged when it returns. Without caps it only measures.

    Example::

        with tg.budget(tokens=20_000, requests=10) as b:
            ask(...)
        print(b.used, b.requests_used)
    """
    return Budget(tokens=tokens, requests=requests, name=name)


def open_budgets() -> tuple[Budget, ...]:
    """The budgets open around the caller, outermost first."""
    return _open.get()


def room() -> int | None:
    """The tokens a call may reserve now: the smallest ``remaining`` of the open
    budgets, or ``None`` when none caps tokens (what fitting may use)."""
    budgets = _open.get()
    if not budgets:  # the common case, on every guarded call
        return None
    rooms = [r for b in budgets if (r := b.remaining) is not None]
    return min(rooms) if rooms else None


#: The hold of a call made outside every budget: nothing to hold, already settled, so
#: its commit and cancel do nothing. One shared value instead of one per call (the
#: guard takes it without calling :func:`reserve` when :func:`open_budgets` is empty).
NO_HOLD = BudgetHold((), 0)


def reserve(tokens: int) -> BudgetHold:
    """Hold ``tokens`` and one request in every open budget, all or nothing.

    Raises :class:`~tokenguard.BudgetExceeded` (naming the tightest budget) and holds
    nothing when any of them lacks the room.
    """
    if type(tokens) is not int and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        raise ConfigurationError(f"tokens must be an int >= 0, got {tokens!r}")
    if tokens < 0:
        raise ConfigurationError(f"tokens must be an int >= 0, got {tokens!r}")
    budgets = _open.get()
    if not budgets:
        return NO_HOLD
    with _lock:
        for b in budgets:
            short = b._shortfall(tokens)
            if short is not None:
                raise short
        for b in budgets:
            b.reserved += tokens
            b.requests_reserved += 1
    return BudgetHold(budgets, tokens)


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
