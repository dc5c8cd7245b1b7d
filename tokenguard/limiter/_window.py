"""Sliding-window arithmetic: can a cost be admitted now, and if not, from when?

Pure: every function takes ``now`` as an argument; nothing here reads a clock,
sleeps, locks or does I/O. The in-memory backend drives it under a lock; the
Redis backend runs the same arithmetic in Lua (``lua/lib.lua``) with Redis time.
Invariant: each ledger (the minute for TPM/RPM, the day for TPD/RPD) is at least as
strict as the server's bucket; headers only tighten it, or free deferred tokens as far
as they prove the server has the room. The reasoning (restamping, holds, refunds) is in
``docs/limiter-algorithms.md``.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

from ._backend import Soonest
from ._headers import ServerView
from ._state import Lesson, LimitChange

__all__ = ["DAY_WINDOWS", "Charge", "Ledger", "Window", "WindowLimits"]

DAY_WINDOWS = 1440
# Pieces of one hold adopted from a header (see Ledger.adopt).
HOLD_STEPS = 8


@dataclass(frozen=True)
class WindowLimits:
    """The limits of one quota; ``None`` means "no such limit".

    Example::

        WindowLimits(tpm=6000, rpm=30, window=60.0).too_large(7000)  # ("tpm", 6000)
    """

    tpm: int | None = None
    rpm: int | None = None
    tpd: int | None = None
    rpd: int | None = None
    window: float = 60.0

    @property
    def day(self) -> float:
        return self.window * DAY_WINDOWS

    @property
    def has_minute(self) -> bool:
        return self.tpm is not None or self.rpm is not None

    @property
    def has_day(self) -> bool:
        return self.tpd is not None or self.rpd is not None

    def too_large(self, tokens: int) -> tuple[str, int] | None:
        """The first limit that ``tokens`` (one request) exceeds on its own, or ``None``."""
        tpm, tpd = self.tpm, self.tpd
        if tpm is not None and tokens > tpm:
            return "tpm", tpm
        if tpd is not None and tokens > tpd:
            return "tpd", tpd
        return None


class _Entry:
    __slots__ = ("alive", "freed", "open", "requests", "stamp", "tokens")

    def __init__(self, stamp: float, tokens: int, requests: int) -> None:
        self.stamp = stamp
        self.tokens = tokens
        self.requests = requests
        self.alive = True
        self.open = False  # an admission not settled yet (its request is in flight)
        self.freed = 0  # tokens of its estimate freed while refunds were being learned


class Ledger:
    """Charges of one period, oldest first, plus holds; running sums of both."""

    def __init__(self, period: float, *, bucket: float = 0.0) -> None:
        self.period = period
        self.bucket = bucket
        self.entries: deque[_Entry] = deque()
        self.tokens = 0
        self.requests = 0
        # Tokens of open entries: admissions whose request may still be on its way.
        self.open_tokens = 0
        # Tokens freed from live entries while learning refunds (see Window.learn).
        self.freed_tokens = 0
        # Holds: (expiry, tokens, requests), sorted by expiry.
        self.holds: list[tuple[float, int, int]] = []
        self.hold_tokens = 0
        self.hold_requests = 0

    def clone(self) -> Ledger:
        other = Ledger(self.period, bucket=self.bucket)
        for e in self.entries:
            other.entries.append(_Entry(e.stamp, e.tokens, e.requests))
        other.tokens, other.requests = self.tokens, self.requests
        other.open_tokens = 0
        other.freed_tokens = 0
        other.holds = list(self.holds)
        other.hold_tokens, other.hold_requests = self.hold_tokens, self.hold_requests
        return other

    def add(self, now: float, tokens: int, requests: int, *, open: bool = False) -> _Entry:
        stamp = now
        if self.bucket > 0:
            stamp = (math.floor(now / self.bucket) + 1) * self.bucket
            last = self.entries[-1] if self.entries else None
            if last is not None and last.stamp == stamp:
                last.tokens += tokens
                last.requests += requests
                self.tokens += tokens
                self.requests += requests
                return last
        entry = _Entry(stamp, tokens, requests)
        if open:
            entry.open = True
            self.open_tokens += tokens
        self.entries.append(entry)
        self.tokens += tokens
        self.requests += requests
        return entry

    def remove(self, entry: _Entry, tokens: int, requests: int) -> None:
        """Take ``tokens``/``requests`` back out of ``entry`` if it is still counted."""
        if entry.alive:
            if entry.open:
                entry.open = False
                self.open_tokens -= entry.tokens
            entry.tokens -= tokens
            entry.requests -= requests
            self.tokens -= tokens
            self.requests -= requests

    def hold(self, expiry: float, tokens: int, requests: int) -> None:
        bisect.insort(self.holds, (expiry, tokens, requests))
        self.hold_tokens += tokens
        self.hold_requests += requests

    def expire(self, now: float) -> None:
        entries = self.entries
        while entries and entries[0].stamp + self.period <= now:
            e = entries.popleft()
            e.alive = False
            if e.open:
                self.open_tokens -= e.tokens
            self.freed_tokens -= e.freed
            self.tokens -= e.tokens
            self.requests -= e.requests
        holds = self.holds
        n = 0
        while n < len(holds) and holds[n][0] <= now:
            self.hold_tokens -= holds[n][1]
            self.hold_requests -= holds[n][2]
            n += 1
        if n:
            del holds[:n]

    def confirm(
        self,
        now: float,
        *,
        limit: int,
        remaining: int,
        server_limit: int | None,
        reset: float | None,
        unseen: int,
    ) -> int:
        """Tokens the server's bucket proves we may free now (0 when it proves nothing).

        The inverse of :meth:`adopt`: with ``remaining`` at response time, refilling
        at ``server_limit / period`` (or slower, per ``reset``), minus ``unseen``
        admissions still to reach it, the bucket's level at every future instant must
        stay at least our room (``limit - used``) after freeing. Room only grows at our
        releases and the bucket grows in between, so checking at ``now`` and at each
        release before the bucket is full is enough.
        """
        ls = server_limit if server_limit is not None and server_limit > 0 else limit
        if ls < limit:
            return 0
        rate = ls / self.period
        if reset is not None and reset > 0 and ls > remaining:
            rate = min(rate, (ls - remaining) / reset)
        base = remaining - unseen
        if rate <= 0 or base <= 0:
            return 0
        until = now + (limit - base) / rate
        used = self.tokens + self.hold_tokens
        slack: float = min(ls, base) - (limit - used)
        for at, t, _ in self.releases():
            if at >= until or slack <= 0:
                break
            used -= t
            if at > now:
                slack = min(slack, min(ls, base + rate * (at - now)) - (limit - used))
        return max(0, math.floor(slack + 1e-9))

    def releases(self) -> Iterator[tuple[float, int, int]]:
        """(time, tokens, requests) freed in the future, in time order (entries and holds)."""
        holds = self.holds
        h = 0
        for e in self.entries:
            at = e.stamp + self.period
            while h < len(holds) and holds[h][0] <= at:
                yield holds[h]
                h += 1
            yield at, e.tokens, e.requests
        yield from holds[h:]

    def earliest(
        self,
        now: float,
        tokens: int,
        t_limit: int | None,
        r_limit: int | None,
        *,
        in_flight: int = 0,
    ) -> float:
        """Earliest time >= ``now`` at which one request of ``tokens`` fits both limits,
        with ``in_flight`` tokens of open entries taken as refunded (a lower bound then).

        Usage only falls as time passes (until something new is charged), so the
        answer is the first release after which the excess is gone.
        """
        need_t = 0
        if t_limit is not None:
            need_t = self.tokens - in_flight + self.hold_tokens + tokens - t_limit
        need_r = self.requests + self.hold_requests + 1 - r_limit if r_limit is not None else 0
        if need_t <= 0 and need_r <= 0:
            return now
        for at, t, r in self.releases():
            need_t -= t
            need_r -= r
            if need_t <= 0 and need_r <= 0:
                return max(at, now)
        return math.inf  # only when the cost exceeds the limit itself

    def adopt(
        self,
        now: float,
        *,
        limit: int,
        unit: str,
        remaining: int,
        server_limit: int | None,
        reset: float | None,
        unseen: int,
    ) -> int:
        """Add a hold so that this ledger is never looser than the server's bucket.

        The server's bucket held ``remaining`` at response time and refills at
        ``server_limit / period`` (or slower, if its ``reset`` says so). Charges we
        admitted since (``unseen``) will still reach it. For every future instant
        until the bucket would be full, our room (``limit - used``) must not exceed
        the bucket's projected level. Returns the initial size of the hold (0 when
        the server is not tighter).
        """
        bucket = _server_bucket(now, self.period, limit, remaining, server_limit, reset, unseen)
        if bucket is None:
            return 0
        tokens = unit == "tokens"
        times, useds = self._usage_until(now, bucket.until, tokens)
        if limit - min(useds) <= min(bucket.limit, bucket.level):
            # Our room is at its widest after the last release and the bucket at its
            # lowest now: when even those do not cross, no gap is positive (the usual
            # answer of a server that agrees with us), so no staircase to build.
            return 0
        return self._hold_steps(now, limit, tokens, bucket, (times, useds))

    def _hold_steps(
        self,
        now: float,
        limit: int,
        tokens: bool,
        bucket: _ServerBucket,
        usage: tuple[list[float], list[int]],
    ) -> int:
        """Hold, in ``HOLD_STEPS`` pieces, the largest gap between our room and the
        server's ``bucket`` from each step on; ``usage`` is :meth:`_usage_until`'s."""
        ls, rate, base, until = bucket

        def gap(at: float, used_then: int) -> float:
            return (limit - used_then) - min(ls, base + rate * (at - now))

        edges = [now + (until - now) * i / HOLD_STEPS for i in range(HOLD_STEPS)]
        envelope = _staircase(edges, *usage, gap)
        for i in range(HOLD_STEPS):
            piece = envelope[i] - envelope[i + 1]
            if piece > 0:
                expiry = edges[i + 1] if i + 1 < HOLD_STEPS else until
                self.hold(expiry, piece if tokens else 0, 0 if tokens else piece)
        return envelope[0]

    def _usage_until(self, now: float, until: float, tokens: bool) -> tuple[list[float], list[int]]:
        """Our usage (tokens or requests, holds included) now and after each release
        before ``until``: the times and the usages."""
        used = self.tokens + self.hold_tokens if tokens else self.requests + self.hold_requests
        times, useds = [now], [used]
        for at, t, r in self.releases():
            if at >= until:
                break
            if at > now:
                used -= t if tokens else r
                times.append(at)
                useds.append(used)
        return times, useds


class _ServerBucket(NamedTuple):
    """The server's bucket as a header shows it, from the response on."""

    limit: int
    rate: float  # tokens (or requests) refilled per second
    level: int  # what it held, less what has not reached it yet
    until: float  # until when it may be tighter than our limit


def _server_bucket(
    now: float,
    period: float,
    limit: int,
    remaining: int,
    server_limit: int | None,
    reset: float | None,
    unseen: int,
) -> _ServerBucket | None:
    """The server's bucket as a header shows it (``None``: never tighter than ``limit``)."""
    ls = server_limit if server_limit is not None and server_limit > 0 else limit
    rate = ls / period
    if reset is not None and reset > 0 and ls > remaining:
        rate = min(rate, (ls - remaining) / reset)
    base = remaining - unseen
    if rate <= 0:
        return None
    if ls >= limit:
        if base >= limit:
            return None
        return _ServerBucket(ls, rate, base, now + (limit - base) / rate)
    # The server's own limit is lower than ours: hold for a window at a time, renewed
    # by every later response.
    return _ServerBucket(ls, rate, base, now + period)


def _staircase(
    edges: list[float],
    times: list[float],
    useds: list[int],
    gap: Callable[[float, int], float],
) -> list[int]:
    """The hold as a staircase of ``HOLD_STEPS`` pieces starting at ``edges``, expiring
    one after another as the server's bucket refills: each step covers the largest gap
    from then on (at the usage steps and the edges); a 0 closes it."""
    points = [(at, gap(at, u)) for at, u in zip(times, useds, strict=True)]
    points += [(e, gap(e, useds[bisect.bisect_right(times, e) - 1])) for e in edges]
    points.sort()
    envelope: list[int] = []
    best = 0.0
    p = len(points) - 1
    for e in reversed(edges):
        while p >= 0 and points[p][0] >= e:
            best = max(best, points[p][1])
            p -= 1
        envelope.append(math.ceil(best - 1e-9) if best > 0 else 0)
    envelope.reverse()
    envelope.append(0)
    return envelope


class _Deferred:
    __slots__ = ("entry", "tokens")

    def __init__(self, entry: _Entry, tokens: int) -> None:
        self.entry = entry
        self.tokens = tokens


@dataclass
class Charge:
    """What one admitted request put into the ledgers (the handle of a reservation)."""

    tokens: int
    minute: _Entry | None
    day: _Entry | None
    # Cumulative admitted tokens/requests right after this admission: whatever is
    # admitted later cannot be in a header sent in answer to this request.
    mark_tokens: int
    mark_requests: int
    # Cumulative admitted tokens the server has certainly charged by the time it
    # answers this request: this one, and those admitted before it and settled
    # before it was admitted (a response read before this request left). Those in
    # flight then (``mark_tokens - sure_tokens``) are taken as seen too once settled
    # before this request is: their response was read first (see Window.adopt).
    sure_tokens: int = 0


class Window:
    """All ledgers of one quota plus the server's ``retry-after`` block.

    Example (a fake "now" is passed in; nothing reads a clock)::

        w = Window(WindowLimits(tpm=100, window=10.0))
        w.admit(80, now=0.0)
        w.earliest(30, now=1.0)   # 10.0: the first charge ages out at 0 + 10
    """

    def __init__(
        self, limits: WindowLimits, *, header_lag: float = 0.0, refunds: bool | None = None
    ) -> None:
        self.limits = limits
        self.refunds = refunds
        # With refunds=None: what the window has learned (None: nothing yet, False:
        # the server does not refund), the tokens freed before that, and the evidence
        # of the last lesson for the caller to report (see pop_lesson).
        self.learned: bool | None = None
        self.freed_total = 0
        self.lesson: Lesson | None = None
        # (limit, old, new) of each limit a header changed, for the backend to report.
        self.limit_changes: list[LimitChange] = []
        # Committed charges still holding more than their actual tokens, oldest first
        # (see docs/limiter-algorithms.md).
        self.deferred: deque[_Deferred] = deque()
        self.minute = Ledger(limits.window) if limits.has_minute else None
        self.day = Ledger(limits.day, bucket=limits.window) if limits.has_day else None
        self.blocked_until = -math.inf
        self.admitted_tokens = 0
        self.admitted_requests = 0
        # Admissions of the last `header_lag` seconds: (time, cumulative tokens, requests),
        # plus the cumulative counts just before the oldest one kept.
        self.header_lag = header_lag
        self._recent: deque[tuple[float, int, int]] = deque()
        self._before: tuple[int, int] = (0, 0)

    def clone(self) -> Window:
        other = Window.__new__(Window)
        other.limits = self.limits
        other.limit_changes = []
        other.refunds = self.refunds
        other.learned = self.learned
        other.freed_total = 0
        other.lesson = None
        other.deferred = deque()
        other.minute = self.minute.clone() if self.minute else None
        other.day = self.day.clone() if self.day else None
        other.blocked_until = self.blocked_until
        other.admitted_tokens = self.admitted_tokens
        other.admitted_requests = self.admitted_requests
        other.header_lag = 0.0
        other._recent = deque()
        other._before = (0, 0)
        return other

    @property
    def policy(self) -> bool | None:
        """Whether a commit for less frees the difference at once (True), keeps it
        deferred (False), or frees it while learning (None): see docs/limiter-algorithms.md."""
        return self.refunds if self.refunds is not None else self.learned

    def expire(self, now: float) -> None:
        if self.minute:
            self.minute.expire(now)
        if self.day:
            self.day.expire(now)
        deferred = self.deferred
        while deferred and not deferred[0].entry.alive:
            deferred.popleft()

    def earliest(self, tokens: int, now: float) -> float:
        """Earliest time >= ``now`` at which ``tokens`` may go (call ``expire(now)`` first)."""
        lim = self.limits
        at = max(now, self.blocked_until)
        if self.minute:
            at = max(at, self.minute.earliest(now, tokens, lim.tpm, lim.rpm))
        if self.day:
            at = max(at, self.day.earliest(now, tokens, lim.tpd, lim.rpd))
        return at

    def delay(self, tokens: int, behind: int) -> float:
        """No bound: a charge holds its room for a whole window, and may move a waiter's
        turn by that much."""
        return math.inf

    def token_cap(self) -> float:
        """The smallest token limit (a header's when it gave one)."""
        lim = self.limits
        return min((x for x in (lim.tpm, lim.tpd) if x is not None), default=math.inf)

    def soonest(self, tokens: int, now: float) -> Soonest:
        """The soonest ``tokens`` could go (call ``expire(now)`` first) with nobody ahead
        in the queue and the minute's tokens in flight refunded (their releases still
        counted: a lower bound), the limit that binds it and when that limit's window
        is empty."""
        best = Soonest(max(now, self.blocked_until), "retry-after", self.blocked_until)
        if best.at <= now:
            best = Soonest(now, "", now)
        lim = self.limits
        for ledger, t_limit, r_limit, names in (
            (self.minute, lim.tpm, lim.rpm, ("tpm", "rpm")),
            (self.day, lim.tpd, lim.rpd, ("tpd", "rpd")),
        ):
            if ledger is None:
                continue
            for name, t, r in ((names[0], t_limit, None), (names[1], None, r_limit)):
                if t is None and r is None:
                    continue
                flight = ledger.open_tokens if ledger is self.minute and t is not None else 0
                at = ledger.earliest(now, tokens, t, r, in_flight=flight)
                if at > best.at:
                    last = max((x[0] for x in ledger.releases()), default=now)
                    best = Soonest(at, name, last)
        return best

    def try_admit(self, tokens: int, now: float) -> Charge | None:
        """Expire to ``now`` and admit ``tokens`` if they may go now, else ``None``: the
        decision of ``expire``, ``earliest`` and ``admit`` in one call (for an empty
        queue: the caller keeps FIFO)."""
        self.expire(now)
        if self.earliest(tokens, now) > now:
            return None
        return self.admit(tokens, now)

    def admit(self, tokens: int, now: float) -> Charge:
        # This request itself, and whatever was settled before it left.
        sure = self.admitted_tokens - (self.minute.open_tokens if self.minute else 0) + tokens
        minute = self.minute.add(now, tokens, 1, open=True) if self.minute else None
        day = self.day.add(now, tokens, 1) if self.day else None
        self.admitted_tokens += tokens
        self.admitted_requests += 1
        if self.header_lag > 0:
            recent = self._recent
            while recent and recent[0][0] <= now - self.header_lag:
                _, t, r = recent.popleft()
                self._before = (t, r)
            recent.append((now, self.admitted_tokens, self.admitted_requests))
        return Charge(tokens, minute, day, self.admitted_tokens, self.admitted_requests, sure)

    def seen_mark(self, now: float) -> tuple[int, int]:
        """Cumulative admissions a header received ``now`` is taken to include: all but
        those of the last ``header_lag`` seconds (which may not have reached the server)."""
        if self.header_lag <= 0:
            return self.admitted_tokens, self.admitted_requests
        mark = self._before
        for at, t, r in self._recent:
            if at > now - self.header_lag:
                break
            mark = (t, r)
        return mark

    def settle(
        self, charge: Charge, actual: int | None, now: float, *, headers: bool = False
    ) -> None:
        """Commit (``actual`` tokens) or cancel (``None``) an admitted charge; ``headers``:
        the commit comes with its response's token headers (see docs/limiter-algorithms.md)."""
        if self.minute and charge.minute:
            self.minute.remove(charge.minute, charge.tokens, 1)
        if self.day and charge.day:
            self.day.remove(charge.day, charge.tokens, 1)
        if actual is not None:
            policy = self.policy
            if policy is None and headers:
                policy = False  # the headers at hand say what to free (see adopt)
            full = max(actual, charge.tokens)
            # Unless the server is known to refund, it may have charged the whole
            # estimate: keep it, and defer the difference (see docs/limiter-algorithms.md);
            # while learning, the minute ledger frees it and remembers how much.
            minute = actual if policy is not False else full
            day = actual if policy else full
            # Restamped at `now`: see docs/limiter-algorithms.md.
            charge.minute = self.minute.add(now, minute, 1) if self.minute else None
            charge.day = self.day.add(now, day, 1) if self.day else None
            charge.tokens = minute
            if charge.minute is not None and full > actual:
                if policy is False:
                    self.deferred.append(_Deferred(charge.minute, full - actual))
                elif policy is None:
                    assert self.minute is not None
                    charge.minute.freed = full - actual
                    self.minute.freed_tokens += full - actual
                    self.freed_total += full - actual

    def settle_answered(
        self, charge: Charge, actual: int | None, view: ServerView, now: float
    ) -> None:
        """:meth:`settle` with the headers of the request's own answer, then adopt them
        as of its admission mark."""
        mark = (charge.mark_tokens, charge.mark_requests)
        self.settle(charge, actual, now, headers=view.remaining_tokens is not None)
        self.adopt(now, view, mark, charge.sure_tokens)

    def adopt_answer(self, charge: Charge, view: ServerView, now: float) -> bool:
        """Adopt the headers of ``charge``'s own response, given after its settle (or
        before it): as of its admission mark."""
        return self.adopt(now, view, (charge.mark_tokens, charge.mark_requests), charge.sure_tokens)

    def learn(self, evidence: str, server_used: int, ledger_used: int) -> None:
        """The server does not refund: charge again every free still in the window (as
        deferred, so headers may free it as for ``refunds=False``), and behave as
        ``refunds=False`` from now on. ``lesson`` keeps the evidence for the caller."""
        self.learned = False
        self.lesson = Lesson(evidence, server_used, ledger_used)
        self._defer_frees()

    def _defer_frees(self) -> None:
        """Charge again every free still in the window, as deferred tokens."""
        minute = self.minute
        if minute is None or minute.freed_tokens <= 0:
            return
        again: list[_Deferred] = []
        for e in minute.entries:
            if e.freed > 0:
                e.tokens += e.freed
                minute.tokens += e.freed
                again.append(_Deferred(e, e.freed))
                e.freed = 0
        minute.freed_tokens = 0
        merged = sorted([*self.deferred, *again], key=lambda d: d.entry.stamp)
        self.deferred = deque(merged)

    def _take_limits(self, view: ServerView) -> bool:
        """Take the TPM and RPD limits a header gives, raised or lowered (the server
        is the authority on them); True if one changed."""
        lim = self.limits
        tpm, rpd = view.limit_tokens, view.limit_requests
        changed = False
        if lim.tpm is not None and tpm is not None and tpm != lim.tpm:
            self.limit_changes.append(("tpm", lim.tpm, tpm))
            lim = replace(lim, tpm=tpm)
            changed = True
        if lim.rpd is not None and rpd is not None and rpd != lim.rpd:
            self.limit_changes.append(("rpd", lim.rpd, rpd))
            lim = replace(lim, rpd=rpd)
            changed = True
        self.limits = lim
        return changed

    def set_limit(self, name: str, value: int | None) -> None:
        """Set the ``rpm`` or ``tpd`` limit the table gave to ``value`` (``None``: no such
        limit); a limit not counted stays uncounted."""
        old: int | None = getattr(self.limits, name)
        if old is None or old == value:
            return
        self.limit_changes.append((name, old, value))
        self.limits = replace(self.limits, **{name: value})  # type: ignore[arg-type]

    def pop_limit_changes(self) -> list[LimitChange]:
        """The limit changes since the last call (see :attr:`limit_changes`)."""
        changes, self.limit_changes = self.limit_changes, []
        return changes

    def pop_lesson(self) -> Lesson | None:
        """(evidence, server's tokens in use, ledger's) of a lesson learned since the last
        call, or None."""
        lesson, self.lesson = self.lesson, None
        return lesson

    def _check_refunds(self, view: ServerView) -> None:
        """While learning, is this header evidence that the server does not refund?

        A refunding server never holds more than the ledger, which counts every
        admission at least as long as the server's bucket does. So a header showing
        the server holding more, by no more than what was freed and is still in the
        window, is taken as the frees being kept by the server; a 429 after any free
        too (the ledger admitted what the server refused). An excess larger than
        the frees points to another spender of the same quota instead: holds cover it.
        """
        minute, tpm = self.minute, self.limits.tpm
        if (
            self.refunds is not None
            or self.learned is not None
            or minute is None
            or tpm is None
            or view.remaining_tokens is None
        ):
            return
        ls = view.limit_tokens if view.limit_tokens is not None and view.limit_tokens > 0 else tpm
        server_used = ls - view.remaining_tokens
        ledger_used = minute.tokens + minute.hold_tokens
        excess = server_used - ledger_used
        if view.retry_after is not None and self.freed_total > 0:
            self.learn("429", server_used, ledger_used)
        elif 2 <= excess <= minute.freed_tokens:
            # 2: the remaining count is floored, which may show one token more in use.
            self.learn("headers", server_used, ledger_used)

    def free_deferred(self, tokens: int) -> int:
        """Free up to ``tokens`` of deferred minute charges, newest first; returns the
        amount freed. Day ledgers keep theirs (no header speaks of them)."""
        freed = 0
        if self.minute is None or tokens <= 0:
            return 0
        for item in reversed(self.deferred):
            if freed >= tokens:
                break
            x = min(item.tokens, tokens - freed)
            if x > 0 and item.entry.alive:
                self.minute.remove(item.entry, x, 0)
                item.tokens -= x
                freed += x
        if freed:
            self.deferred = deque(d for d in self.deferred if d.tokens > 0)
        return freed

    def adopt(
        self,
        now: float,
        view: ServerView,
        mark: tuple[int, int] | None = None,
        sure: int | None = None,
    ) -> bool:
        """Adopt the server's view when it is tighter, and its limits (bounded by
        parse_headers) both ways. True if anything changed.

        ``mark`` is the reservation's (tokens, requests) admission mark when the
        headers came with its response: the header cannot include what was admitted
        after it, nor (see ``seen_mark``) what was admitted in the last ``header_lag``
        seconds; without a mark only the latter applies.

        ``sure`` (the reservation's ``sure_tokens``) lets the header free deferred
        tokens as far as it proves the server has the room. Unseen then are: all
        admitted after this request, and those in flight when it was admitted that
        are still in flight now. One in flight then but settled since is taken as
        seen: its response was read before this one, so it reached the server
        before this answer was written unless this answer waited unread for longer
        than that request's whole round trip.
        """
        changed = self._take_limits(view)
        if self.policy is None:
            self._check_refunds(view)
            changed |= self.learned is not None
            if self.policy is None and view.remaining_tokens is not None:
                # Headers at hand: they decide what to free, as for refunds=False.
                self._defer_frees()
        seen_t, seen_r = self.seen_mark(now)
        mark_t = self.admitted_tokens if mark is None else mark[0]
        if mark is not None:
            seen_t, seen_r = max(seen_t, mark[0]), max(seen_r, mark[1])
        unseen_t = self.admitted_tokens - seen_t
        unseen_r = self.admitted_requests - seen_r
        if view.retry_after is not None and now + view.retry_after > self.blocked_until:
            self.blocked_until = now + view.retry_after
            changed = True
        changed |= self._hold_to_server(now, view, unseen_t, unseen_r)
        if self.deferred and view.remaining_tokens is not None:
            changed |= self._free_confirmed(now, view, mark_t, sure, unseen_t)
        return changed

    def _hold_to_server(self, now: float, view: ServerView, unseen_t: int, unseen_r: int) -> bool:
        """Hold the minute's tokens and the day's requests (the counts Groq's headers
        give) to the server's buckets where they are tighter."""
        lim, changed = self.limits, False
        for ledger, limit, unit, remaining, server_limit, reset, unseen_n in (
            (self.minute, lim.tpm, "tokens", view.remaining_tokens, view.limit_tokens,
             view.reset_tokens, unseen_t),
            (self.day, lim.rpd, "requests", view.remaining_requests, view.limit_requests,
             view.reset_requests, unseen_r),
        ):  # fmt: skip
            if ledger is not None and limit is not None and remaining is not None:
                ledger.expire(now)
                changed |= bool(
                    ledger.adopt(
                        now,
                        limit=limit,
                        unit=unit,
                        remaining=remaining,
                        server_limit=server_limit,
                        reset=reset,
                        unseen=unseen_n,
                    )
                )
        return changed

    def _free_confirmed(
        self, now: float, view: ServerView, mark_t: int, sure: int | None, unseen_t: int
    ) -> bool:
        """Free deferred tokens as far as the header's remaining tokens prove the room."""
        minute, tpm, remaining = self.minute, self.limits.tpm, view.remaining_tokens
        if not minute or tpm is None or remaining is None:
            return False
        # Freeing trusts neither the lag nor the admission order: see Charge.
        if sure is not None:
            unseen = self.admitted_tokens - mark_t + min(minute.open_tokens, mark_t - sure)
        else:
            # A header given on its own, of a response just read: what is in
            # flight may not have reached the server, nor what the lag covers.
            unseen = minute.open_tokens + unseen_t
        confirmed = minute.confirm(
            now,
            limit=tpm,
            remaining=remaining,
            server_limit=view.limit_tokens,
            reset=view.reset_tokens,
            unseen=unseen,
        )
        return self.free_deferred(confirmed) > 0
