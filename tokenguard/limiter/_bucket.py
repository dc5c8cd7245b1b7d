"""Token-bucket arithmetic: a mirror of the server's own refilling buckets.

Pure: every method takes ``now`` as an argument; nothing here reads a clock,
sleeps, locks or does I/O. The in-memory backend drives it under a lock.
Invariant: a request may go when every bucket's room (its level with every settled
request charged, less the estimates in flight) holds its cost, and that room is never
above the server's bucket, whatever the latency, the refunds or the headers. The
reasoning (refunds, learning them, headers) is in ``docs/limiter-algorithms.md``.
"""

from __future__ import annotations

import math
from collections import deque

from ._backend import Soonest
from ._headers import ServerView
from ._state import Lesson, LimitChange
from ._window import WindowLimits

__all__ = ["BucketCharge", "Buckets"]

# Float noise when a wait computed from the refill rate ends.
_EPS = 1e-9
_ONE = 1 - _EPS  # one request, less the noise


class _Level:
    """One bucket: ``level`` at the time of its :class:`Buckets` (``Buckets.time``: they
    move together); ``deferred``/``freed`` see the module."""

    __slots__ = ("cap", "deferred", "freed", "level", "limit", "period", "rate", "tokens")

    def __init__(self, cap: int, period: float, *, tokens: bool) -> None:
        self.limit = float(cap)  # as configured; ``cap`` is the server's when smaller
        self.period = period
        self.cap = float(cap)
        self.rate = cap / period
        self.level = float(cap)
        self.tokens = tokens  # counts tokens (TPM, TPD), else requests (RPM, RPD)
        self.deferred = 0.0
        self.freed = 0.0

    def copy(self) -> _Level:
        other = _Level.__new__(_Level)
        other.cap, other.rate, other.level = self.cap, self.rate, self.level
        other.limit, other.period = self.limit, self.period
        other.tokens, other.deferred, other.freed = self.tokens, self.deferred, self.freed
        return other

    def credit(self, amount: float, since: float, now: float) -> None:
        """Give back ``amount`` charged at ``since`` (the bucket brought to ``now``).

        Without that charge the bucket may have reached its cap since and lost refill
        there; the difference it makes shrinks by at most the refill since (at the
        configured rate, never below the server's), so only what is left of it is
        given back."""
        gained = max(self.limit, self.cap) / self.period * max(0.0, now - since)
        if amount > gained:
            self.level = min(self.cap, self.level + amount - gained)

    def limit_to(self, server_limit: int) -> bool:
        """Take the capacity a header gives (``x-ratelimit-limit-*``), above or below the
        configured one: the server's bucket holds that much and refills it per period.
        Raised, the tokens in use stay in use (the level rises by the difference: the
        server's level is at least that, as ours never runs ahead of it); lowered, the
        level is capped. Bring the bucket to now first. True if the capacity changed."""
        cap = float(server_limit)
        old = self.cap
        if cap == old:
            return False
        self.cap = cap
        self.rate = cap / self.period
        if cap > old:
            self.level += cap - old
        elif self.level > cap:
            # Lost at the new cap, as in advance: a lower trajectory gains it.
            over = self.level - cap
            self.level = cap
            self.deferred = max(0.0, self.deferred - over)
            self.freed = max(0.0, self.freed - over)
        return True


_NEVER = -math.inf
_NAMES = ("tpm", "rpm", "tpd", "rpd")


class BucketCharge:
    """What one admitted request holds (the handle of a reservation)."""

    __slots__ = (
        "aged",
        "at",
        "floor",
        "mark_requests",
        "mark_tokens",
        "open",
        "released",
        "settled_mark",
        "sure_tokens",
        "tokens",
    )

    def __init__(
        self,
        tokens: int,
        at: float,
        mark_tokens: int,
        mark_requests: int,
        sure_tokens: int = 0,
        settled_mark: int = 0,
    ) -> None:
        self.tokens = tokens
        self.at = at
        self.open = True  # in flight: not settled, not aged
        self.aged = False  # unsettled a whole window: charged at its estimate
        # Cumulative admissions right after this one (its admission order).
        self.mark_tokens = mark_tokens
        self.mark_requests = mark_requests
        self.sure_tokens = sure_tokens
        # Tokens charged by settles before this admission (see Buckets.settled).
        self.settled_mark = settled_mark
        # While learning: what a server keeping unused tokens had in use at least, at
        # this admission (see Buckets.answer), and Buckets.released then.
        self.floor = 0.0
        self.released = 0.0


class Buckets:
    """The buckets of one quota plus the server's ``retry-after`` block.

    Same interface as :class:`~._window.Window`, so a backend drives either.

    Example (a fake "now" is passed in; nothing reads a clock)::

        b = Buckets(WindowLimits(tpm=100, window=10.0), refunds=True)
        c = b.admit(80, now=0.0)
        b.earliest(30, now=0.0)     # 11.0: in flight 80 never refills (it ages at 10.0)
        b.expire(2.0)
        b.settle(c, 40, now=2.0)    # charged at commit: level 60, refilling at 10/s
        b.earliest(70, now=2.0)     # 3.0
    """

    def __init__(
        self, limits: WindowLimits, *, header_lag: float = 0.0, refunds: bool | None = None
    ) -> None:
        self.limits = limits
        self.window = limits.window  # read on every expire
        self.refunds = refunds
        self.header_lag = header_lag
        self.learned: bool | None = None
        self.freed_total = 0
        # Tokens given back to the TPM level, ever, by frees while learning (or after
        # learning that the server refunds) and by headers freeing deferred tokens.
        self.released = 0.0
        self.lesson: Lesson | None = None
        w, d = limits.window, limits.day
        self.tpm = _Level(limits.tpm, w, tokens=True) if limits.tpm is not None else None
        self.rpm = _Level(limits.rpm, w, tokens=False) if limits.rpm is not None else None
        self.tpd = _Level(limits.tpd, d, tokens=True) if limits.tpd is not None else None
        self.rpd = _Level(limits.rpd, d, tokens=False) if limits.rpd is not None else None
        self.levels = [x for x in (self.tpm, self.rpm, self.tpd, self.rpd) if x is not None]
        self.blocked_until = -math.inf
        # (limit, old, new) of each limit a header changed, for the backend to report.
        self.limit_changes: list[LimitChange] = []
        # The time every bucket was brought to (each one's ``at``): they move together.
        self.time = -math.inf
        # Admitted charges in admission order; settled ones leave lazily from the left.
        self.open: deque[BucketCharge] = deque()
        self.open_tokens = 0
        self.open_requests = 0
        # Aged charges not settled yet: charged, but maybe not seen by the server yet.
        self.aged_tokens = 0
        self.admitted_tokens = 0
        self.admitted_requests = 0
        # Tokens charged to the TPM level by settles, ever: a settle after a request's
        # admission may be of a request that reached the server after its answer.
        self.settled = 0
        # While learning (see answer): the estimates committed with served headers,
        # each from its commit, drained together at the fastest refill the server may
        # have, ``floor_limit`` (the configured TPM or the largest a header gave) per
        # window (``floor`` at ``floor_at``); ``floor_lag``: the longest time from
        # admission to commit among them since ``floor`` was last empty.
        self.floor = 0.0
        self.floor_at = -math.inf
        self.floor_lag = 0.0
        self.floor_limit = float(limits.tpm) if limits.tpm is not None else 0.0
        # Only admissions after the last rise of ``floor_limit`` (``admitted_requests``
        # then) have a usable ``floor``.
        self.floor_mark = 0

    def clone(self) -> Buckets:
        other = Buckets.__new__(Buckets)
        other.__dict__.update(self.__dict__)
        other.lesson = None
        other.limit_changes = []
        other.tpm = self.tpm.copy() if self.tpm else None
        other.rpm = self.rpm.copy() if self.rpm else None
        other.tpd = self.tpd.copy() if self.tpd else None
        other.rpd = self.rpd.copy() if self.rpd else None
        other.levels = [x for x in (other.tpm, other.rpm, other.tpd, other.rpd) if x is not None]
        other.open = deque()
        for c in self.open:
            if c.open:
                copy = BucketCharge(c.tokens, c.at, c.mark_tokens, c.mark_requests)
                other.open.append(copy)
        return other

    @property
    def policy(self) -> bool | None:
        """Whether a commit for less frees the difference at once (True), keeps it
        deferred (False), or frees it while learning (None): see docs/limiter-algorithms.md."""
        return self.refunds if self.refunds is not None else self.learned

    def _cost(self, level: _Level, tokens: int) -> int:
        return tokens if level.tokens else 1

    def expire(self, now: float, *, age: bool = True) -> None:
        """Bring every bucket to ``now``; charges in flight a whole window age (``age``
        false: none do, for :meth:`_age` itself and a header read without ``expire``
        first). A bucket that reaches its cap loses the rest of the refill, and what
        it loses there a lower trajectory (``deferred``, ``freed``) gains."""
        if age:
            q = self.open
            if q and (not q[0].open or q[0].at + self.window <= now):
                self._age(now)
        at = self.time
        if not now > at:
            return
        self.time = now
        if at == _NEVER:  # never advanced: only the time is taken
            return
        elapsed = now - at
        for lv in self.levels:
            level = lv.level + lv.rate * elapsed
            if level <= lv.cap:
                lv.level = level
            else:
                cap = lv.level = lv.cap
                if lv.deferred:
                    lv.deferred = max(0.0, lv.deferred - (level - cap))
                if lv.freed:
                    lv.freed = max(0.0, lv.freed - (level - cap))

    def _age(self, now: float) -> None:
        """Charge at their estimates the charges in flight a whole window, each when it
        aged; drop settled ones from the left."""
        window = self.limits.window
        q = self.open
        while q and (not q[0].open or q[0].at + window <= now):
            c = q.popleft()
            if not c.open:
                continue
            at = c.at + window
            c.open = False
            c.aged = True
            self.open_tokens -= c.tokens
            self.open_requests -= 1
            self.aged_tokens += c.tokens
            if at > self.time:
                self.expire(at, age=False)
            for lv in self.levels:
                lv.level -= self._cost(lv, c.tokens)

    def _when(self, lv: _Level, cost: float, now: float) -> float:
        """Earliest time >= ``now`` at which ``lv`` has the room for ``cost``, if nothing
        else is admitted or settled (charges in flight age as time passes)."""
        if lv.cap < cost <= lv.limit:
            # More than a capacity a header gave: wait for a full bucket and let the
            # server refuse it (a 413 charges nothing) rather than wait for ever.
            cost = lv.cap
        flight = self.open_tokens if lv.tokens else self.open_requests
        level, t = lv.level, now
        if level - flight >= cost - _EPS:
            return now
        window = self.limits.window
        for c in self.open:
            if not c.open:
                continue
            aged = c.at + window
            if cost + flight <= lv.cap:
                at = t + (cost + flight - level) / lv.rate
                if at <= aged:
                    return at
            level = min(lv.cap, level + lv.rate * (aged - t))
            t = aged
            x = self._cost(lv, c.tokens)
            level -= x
            flight -= x
            if level - flight >= cost - _EPS:
                return t
        if cost + flight <= lv.cap:
            return t + max(0.0, cost + flight - level) / lv.rate
        return math.inf  # only when the cost exceeds the limit itself

    def earliest(self, tokens: int, now: float) -> float:
        """Earliest time >= ``now`` at which ``tokens`` may go (call ``expire(now)`` first)."""
        at = max(now, self.blocked_until)
        for lv in self.levels:
            at = max(at, self._when(lv, self._cost(lv, tokens), now))
        return at

    def delay(self, tokens: int, behind: int) -> float:
        """Each bucket's refill time of the cost, the longest: the waiter's turn comes when
        the level holds its cost and every estimate in flight, so ``tokens`` more in
        flight move it by their refill, as long as all of it fits in the capacity; where
        it does not, the waiter's turn waits for ``tokens`` to settle: no bound."""
        d = 0.0
        for lv in self.levels:
            cost, flight = (
                self._cost(lv, tokens),
                self.open_tokens if lv.tokens else self.open_requests,
            )
            if min(self._cost(lv, behind), lv.cap) + flight + cost > lv.cap:
                return math.inf
            d = max(d, cost / lv.rate)
        return d

    def token_cap(self) -> float:
        """The smallest token bucket's capacity (a header's when it gave one)."""
        return min((lv.cap for lv in (self.tpm, self.tpd) if lv is not None), default=math.inf)

    def soonest(self, tokens: int, now: float) -> Soonest:
        """The soonest ``tokens`` could go (call ``expire(now)`` first) in the most
        favourable course: nobody ahead in the queue, every request in flight settled
        for nothing and, while any answer is still to come, deferred tokens freed by
        its header; only each bucket's refill of what is charged for good, and a
        ``retry-after``, hold it back. A wait past it is never certain; a wait to it is.

        Deferred tokens come back only through a header, and the headers already read
        have freed what they prove: with no request in flight (nor aged and unsettled)
        no answer is left to bring one, so they are charged for good."""
        best = Soonest(max(now, self.blocked_until), "retry-after", self.blocked_until)
        if best.at <= now:
            best = Soonest(now, "", now)
        pending = self.open_requests > 0 or self.aged_tokens > 0
        for lv, name in zip((self.tpm, self.rpm, self.tpd, self.rpd), _NAMES, strict=True):
            if lv is None:
                continue
            # More than a capacity a header gave waits for a full bucket (as _when).
            cost = min(self._cost(lv, tokens), lv.cap)
            level = min(lv.cap, lv.level + lv.deferred) if pending else lv.level
            if level >= cost - _EPS:
                continue
            at = now + (cost - level) / lv.rate
            if at > best.at:
                flight = self.open_tokens if lv.tokens else self.open_requests
                best = Soonest(at, name, now + max(0.0, lv.cap - lv.level + flight) / lv.rate)
        return best

    def try_admit(self, tokens: int, now: float) -> BucketCharge | None:
        """Expire to ``now`` and admit ``tokens`` if every bucket has the room now, else
        ``None``: what ``expire``, ``earliest(tokens, now) <= now`` and ``admit`` decide,
        without computing a wait (for an empty queue: the caller keeps FIFO).

        Admits only when ``earliest`` would return ``now``: room >= cost is its first
        test for each bucket (a cost above a header's smaller capacity never passes it
        here, and ``earliest`` decides it)."""
        self.expire(now)
        if self.blocked_until > now:
            return None
        # Each bucket by name rather than a loop that tells them apart.
        flight = self.open_tokens
        need = tokens - _EPS
        lv = self.tpm
        if lv is not None and lv.level - flight < need:
            return None
        lv = self.tpd
        if lv is not None and lv.level - flight < need:
            return None
        flight = self.open_requests
        lv = self.rpm
        if lv is not None and lv.level - flight < _ONE:
            return None
        lv = self.rpd
        if lv is not None and lv.level - flight < _ONE:
            return None
        return self.admit(tokens, now)

    def admit(self, tokens: int, now: float) -> BucketCharge:
        open_tokens = self.open_tokens
        admitted = self.admitted_tokens + tokens
        requests = self.admitted_requests + 1
        self.admitted_tokens = admitted
        self.admitted_requests = requests
        charge = BucketCharge(tokens, now, admitted, requests, admitted - open_tokens, self.settled)
        if self.refunds is None:
            charge.released = self.released
            if self.floor and self.learned is None:
                floor = self._floor_to(now) - self.floor_limit / self.window * self.floor_lag
                if floor > 0:
                    charge.floor = floor
        self.open.append(charge)
        self.open_tokens = open_tokens + tokens
        self.open_requests += 1
        return charge

    def settle(
        self, charge: BucketCharge, actual: int | None, now: float, *, headers: bool = False
    ) -> None:
        """Commit (``actual`` tokens) or cancel (``None``) an admitted charge; ``headers``:
        the commit comes with its response's token headers (see docs/limiter-algorithms.md).

        The TPM bucket charges ``actual`` when refunds are given or learned, or while
        learning without headers (the difference is then recorded as freed, to be
        charged again if the server turns out to keep it); else the whole estimate,
        the difference deferred. The day's token bucket charges ``actual`` only when
        refunds are given (``refunds=True``): a lesson charges back the minute's frees."""
        est = charge.tokens
        # Charged by other settles since this admission (see adopt's ``sure``).
        others = self.settled - charge.settled_mark
        policy = self.refunds  # self.policy, without the property's call
        if policy is None:
            policy = self.learned
        if policy is None and headers:
            policy = False  # the headers at hand say what to free (see adopt)
        if charge.open:
            charge.open = False
            self.open_tokens -= est
            self.open_requests -= 1
            q = self.open
            if q[0] is charge:
                q.popleft()  # settled charges leave from the left (as in _age)
            if actual is None:
                return  # never reached the server: nothing was charged
            self._charge_settled(actual, max(est, actual), policy)
        elif charge.aged:
            charge.aged = False
            self.aged_tokens -= est
            self._correct_aged(charge, actual, policy)
            if actual is None:
                return
        else:
            return
        charge.tokens = actual
        charge.settled_mark = self.settled - others
        full = max(est, actual)
        tpm = self.tpm
        if tpm is not None and full > actual:
            if policy is False:
                tpm.deferred += full - actual
            elif self.refunds is None:
                # Learning, or learned that the server refunds: a free that a later
                # lesson (the server keeps unused tokens after all) charges again.
                tpm.freed += full - actual
                self.freed_total += full - actual
                self.released += full - actual

    def _charge_settled(self, actual: int, full: int, policy: bool | None) -> None:
        """Charge a commit of a request in flight: ``actual`` tokens where the server
        gives back the rest (for the day's bucket, only when ``refunds=True``), else
        ``full`` (the estimate when larger); one request."""
        # Each bucket by name rather than a loop that tells them apart.
        tpm = self.tpm
        if tpm is not None:
            taken = actual if policy is not False else full
            tpm.level -= taken
            self.settled += taken
        lv = self.rpm
        if lv is not None:
            lv.level -= 1
        lv = self.tpd
        if lv is not None:
            lv.level -= actual if self.refunds else full
        lv = self.rpd
        if lv is not None:
            lv.level -= 1

    def _correct_aged(self, charge: BucketCharge, actual: int | None, policy: bool | None) -> None:
        """A charge that aged was charged at its estimate then: correct it to ``actual``
        (``None``: cancelled, give it all back)."""
        est = charge.tokens
        aged_at = charge.at + self.window
        if actual is None:
            for lv in self.levels:
                lv.credit(self._cost(lv, est), aged_at, self.time)
            return
        for lv in self.levels:
            if not lv.tokens:
                continue
            if actual > est:
                lv.level -= actual - est
            elif (policy is not False) if lv is self.tpm else bool(self.refunds):
                lv.credit(est - actual, aged_at, self.time)

    def settle_answered(
        self, charge: BucketCharge, actual: int | None, view: ServerView, now: float
    ) -> None:
        """:meth:`settle` with the headers of the request's own answer (which may first
        teach that the server refunds), then adopt them as of its admission."""
        mark = (charge.mark_tokens, charge.mark_requests)
        since = charge.at if charge.open else None
        given_back = self.released - charge.released  # by others since its admission
        if actual is not None:
            self.answer(charge, actual, view, now)  # may learn that it refunds
        self.settle(charge, actual, now, headers=view.remaining_tokens is not None)
        # The settled mark, set by settle to the settles before this one that were
        # after its admission.
        self.adopt(now, view, mark, charge.settled_mark, since, given_back)

    def adopt_answer(self, charge: BucketCharge, view: ServerView, now: float) -> bool:
        """Adopt the headers of ``charge``'s own response, given after its settle (or
        before it): as of its admission mark, trusting no settle since its admission."""
        return self.adopt(
            now, view, (charge.mark_tokens, charge.mark_requests), charge.settled_mark
        )

    def learn(self, evidence: str, server_used: int, ledger_used: int) -> None:
        """The server does not refund: charge the frees again (as deferred) and behave
        as ``refunds=False`` from now on (final). ``lesson`` keeps the evidence for the
        caller."""
        self.learned = False
        self.lesson = Lesson(evidence, server_used, ledger_used)
        self.floor = 0.0
        self._defer_frees()

    def _floor_to(self, now: float) -> float:
        """``floor`` drained to ``now`` (see :meth:`answer`); empty, it forgets its lag."""
        if now > self.floor_at:
            if self.floor:
                rate = self.floor_limit / self.window
                floor = self.floor - rate * (now - self.floor_at)
                if floor <= 0:
                    floor, self.floor_lag = 0.0, 0.0
                self.floor = floor
            self.floor_at = now
        return self.floor

    def answer(self, charge: BucketCharge, actual: int, view: ServerView, now: float) -> None:
        """While learning, read the headers of a served response to ``charge``, committed
        for ``actual`` (call it before :meth:`settle`): learn that the server refunds
        when they show less in use than a server keeping unused tokens must have; else
        raise that lower bound by this charge. See docs/limiter-algorithms.md."""
        tpm, limit, remaining = self.tpm, view.limit_tokens, view.remaining_tokens
        if (
            tpm is None
            or self.refunds is not None
            or self.learned is not None
            or not charge.open
            or limit is None
            or limit <= 0
            or remaining is None
            or view.retry_after is not None  # a 429: the server charged nothing
        ):
            return
        if limit > self.floor_limit:
            # The server refills faster than the floor drained: start it again.
            self.floor_limit = float(limit)
            self.floor, self.floor_at, self.floor_lag = 0.0, now, 0.0
            self.floor_mark = self.admitted_requests
        rate = self.floor_limit / self.window
        since = now - charge.at
        if charge.mark_requests > self.floor_mark:
            kept = charge.floor - rate * since
            used = limit - remaining
            if used < kept - max(16.0, 0.02 * limit):
                self.learned = True
                self.lesson = Lesson("headers", used, math.floor(kept))
                self.floor = 0.0
                return
        est = charge.tokens
        if actual < est:
            # At its estimate or more it may be a failure committed at its estimate,
            # which the server may not have charged: only a shorter answer counts.
            self.floor = self._floor_to(now) + est
            self.floor_lag = max(self.floor_lag, since)

    def _defer_frees(self) -> None:
        tpm = self.tpm
        if tpm is not None and tpm.freed > 0:
            tpm.level -= tpm.freed
            tpm.deferred += tpm.freed
            tpm.freed = 0.0

    def set_limit(self, name: str, value: int | None) -> None:
        """Set the ``rpm`` or ``tpd`` limit the table gave to ``value`` (``None``: no such
        limit), as a header sets TPM; a limit not counted stays uncounted."""
        lv: _Level | None = getattr(self, name)
        if lv is None or (value is not None and value == lv.cap):
            return
        self.limit_changes.append((name, round(lv.cap), value))
        if value is None:
            setattr(self, name, None)
            self.levels = [x for x in self.levels if x is not lv]
        else:
            lv.limit_to(value)

    def pop_limit_changes(self) -> list[LimitChange]:
        """The limit changes since the last call (see :attr:`limit_changes`)."""
        changes, self.limit_changes = self.limit_changes, []
        return changes

    def pop_lesson(self) -> Lesson | None:
        """(evidence, server's tokens in use, ours) of a lesson learned since the last
        call, or None."""
        lesson, self.lesson = self.lesson, None
        return lesson

    def _seen(self, now: float, mark: tuple[int, int] | None) -> tuple[int, int]:
        """Tokens and requests in flight that a header read ``now`` is taken to include
        (as the window's ``seen_mark``): all but those admitted within ``header_lag``,
        except those admitted before the request it answers (``mark``)."""
        tokens = requests = 0
        last = -1 if mark is None else mark[1]
        before = now - self.header_lag if self.header_lag > 0 else math.inf
        for c in self.open:
            if c.open and (c.at <= before or c.mark_requests <= last):
                tokens += c.tokens
                requests += 1
        return tokens, requests

    def _check_refunds(
        self,
        view: ServerView,
        seen: int,
        now: float,
        since: float | None,
        given_back: float | None,
    ) -> None:
        """While learning, or after learning that the server refunds, is this header
        evidence that it does not? A refunding server is never below our level less
        the in-flight charges it has seen; below it by no more than what was freed, the
        frees were kept. A 429 after any free too.

        Once learned that the server refunds, a header of a response to a request
        admitted at ``since`` was written since then, and our level may have risen above
        the server's at that writing by what it refilled since and by ``given_back``,
        what other settles and headers gave back to it since (:attr:`released`: the
        settles of requests the server then held in flight, at their estimates): both
        are allowed for. A header on its own: the slack of :meth:`answer`. So a
        refunding server's answers, read in any order, never read as a kept free."""
        tpm, limit = self.tpm, self.limits.tpm
        if (
            self.refunds is not None
            or self.learned is False
            or tpm is None
            or limit is None
            or view.remaining_tokens is None
        ):
            return
        ls = view.limit_tokens
        # Without a limit in this header: ours, or the smaller one a header gave before.
        server_used = (ls if ls is not None and ls > 0 else round(tpm.cap)) - view.remaining_tokens
        # Rounded half up, as the Lua port does (the lesson reports it).
        ours_used = math.floor(tpm.cap - (tpm.level - seen) + 0.5)
        excess = server_used - ours_used
        # 2: the remaining count is floored, which may show one token more in use.
        least = 2.0
        if self.learned:
            if since is None or given_back is None:
                least += max(16.0, 0.02 * (ls if ls is not None and ls > 0 else tpm.cap))
            else:
                refill = self.floor_limit / self.window * max(0.0, now - since)
                least = least + refill + given_back
        if view.retry_after is not None and self.freed_total > 0:
            self.learn("429", server_used, ours_used)
        elif least <= excess <= tpm.freed:
            self.learn("headers", server_used, ours_used)

    def adopt(
        self,
        now: float,
        view: ServerView,
        mark: tuple[int, int] | None = None,
        sure: int | None = None,
        since: float | None = None,
        given_back: float | None = None,
    ) -> bool:
        """Adopt the server's view when it is tighter; free deferred tokens as far as it
        proves the room (see docs/limiter-algorithms.md). True if anything changed.

        ``mark``: the (tokens, requests) admission mark of the reservation whose
        response carried the headers (later admissions cannot be in them); ``sure`` its
        ``settled_mark`` then: what settles charged between its admission and its
        commit may be of requests that reached the server after the answer was
        written, so raising the level does not trust them either. Raising the level
        trusts nothing in flight. ``since`` and ``given_back``: that reservation's
        admission time, and what was given back to our level from then until its
        settle, when it was in flight (see ``_check_refunds``).
        """
        if self.header_lag > 0:
            seen_t, seen_r = self._seen(now, mark)
        else:  # every charge in flight is taken as seen (what _seen sums)
            seen_t, seen_r = self.open_tokens, self.open_requests
        if self.time < now:  # after ``expire(now)``, as the backends call it, never
            self.expire(now, age=False)
        changed = self._adopt_limits(view)
        if self.refunds is None and self.learned is not False:
            changed |= self._learn_refunds(view, seen_t, now, since, given_back)
        retry = view.retry_after
        if retry is not None and now + retry > self.blocked_until:
            self.blocked_until = now + retry
            changed = True
        tpm, rpd = self.tpm, self.rpd
        if tpm is not None and view.remaining_tokens is not None:
            changed |= self._adopt_remaining(tpm, float(view.remaining_tokens), seen_t, sure)
        if rpd is not None and view.remaining_requests is not None:
            target = float(view.remaining_requests) + seen_r
            if rpd.level > target:
                rpd.level = target
                changed = True
        return changed

    def _adopt_limits(self, view: ServerView) -> bool:
        """A limit in the headers (bounded by parse_headers) is the server's bucket, above
        or below the configured one: its capacity and refill rate, taken before anything
        is compared with it."""
        changed = False
        for lv, name, limit in (
            (self.tpm, "tpm", view.limit_tokens),
            (self.rpd, "rpd", view.limit_requests),
        ):
            if lv is not None and limit is not None and limit != lv.cap:
                self.limit_changes.append((name, round(lv.cap), limit))
                changed |= lv.limit_to(limit)
        return changed

    def _learn_refunds(
        self,
        view: ServerView,
        seen_t: int,
        now: float,
        since: float | None,
        given_back: float | None,
    ) -> bool:
        """While the refunds policy is unknown: learn it from the headers, and defer what
        was freed meanwhile. True if a lesson was learned."""
        tpm = self.tpm
        # _check_refunds learns only from a 429, or from a header showing at least
        # two tokens more in use than ours and at most what was freed.
        if self.lesson is None and (
            view.retry_after is not None or (tpm is not None and tpm.freed >= 2.0)
        ):  # else :meth:`answer` just learned from this header
            self._check_refunds(view, seen_t, now, since, given_back)
        # Still learning (the policy None): _defer_frees, when it has frees to defer.
        if (
            self.learned is None
            and view.remaining_tokens is not None
            and tpm is not None
            and tpm.freed > 0
        ):
            self._defer_frees()
        return self.lesson is not None

    def _adopt_remaining(
        self, tpm: _Level, remaining: float, seen_t: int, sure: int | None
    ) -> bool:
        """Lower the TPM level to the server's remaining tokens (plus what it has not
        seen), and free deferred tokens as far as that proves the room."""
        changed = False
        if tpm.level > remaining + seen_t:
            tpm.level = remaining + seen_t
            changed = True
        # ``remaining`` and our level count from the same capacity (a smaller one
        # in the headers was taken first), so it may free deferred tokens.
        if tpm.deferred > 0 and self.refunds is not True:
            # Every request in flight may still reach the server; an aged one's
            # charge is in our level but maybe not yet in the server's.
            unseen = self.aged_tokens
            if sure is not None:
                unseen += max(0, self.settled - sure)
            free = min(remaining - unseen - tpm.level, tpm.deferred)
            if free > 0:
                tpm.level += free
                tpm.deferred -= free
                self.released += free
                changed = True
        return changed
