"""The in-memory limiter's uncontended admission (``MemoryBackend.admit_now``, taken
by ``Limiter.acquire`` before any plan runs) decides exactly what the queue's path
(``start``) decides, and leaves the model in exactly the same state.

Two backends on one fake clock get the same operations (admissions, commits with and
without the headers of a token-bucket server, cancels, headers on their own, 429s,
time passing, charges left to age); one admits through ``admit_now`` first, the
other only through ``start``. After every step their decisions and their models
must be equal. Then the same through the public ``Limiter``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from fake_clock import FakeClock
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tokenguard as tg
from tokenguard.limiter._backend import Ticket
from tokenguard.limiter._bucket import Buckets
from tokenguard.limiter._headers import ServerView
from tokenguard.limiter._memory import MemoryBackend
from tokenguard.limiter._window import WindowLimits


def _snapshot(model: Any) -> Any:
    """Everything a later decision depends on, comparable with ``==``."""
    if isinstance(model, Buckets):
        levels = [(lv.level, lv.deferred, lv.freed, lv.cap, lv.rate) for lv in model.levels]
        open_ = [(c.tokens, c.at, c.open, c.aged) for c in model.open if c.open]
        return (
            levels,
            open_,
            model.open_tokens,
            model.open_requests,
            model.aged_tokens,
            model.admitted_tokens,
            model.admitted_requests,
            model.settled,
            model.blocked_until,
            model.policy,
            model.freed_total,
            model.time,
        )
    # The window's arithmetic is shared by both paths (try_admit is expire, earliest,
    # admit): what it would decide next stands for its state.
    now = max(model.blocked_until, 0.0)
    return (
        model.admitted_tokens,
        model.admitted_requests,
        model.blocked_until,
        model.policy,
        [model.earliest(t, now) for t in (1, 50, 400)],
    )


window = 10.0

ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.sampled_from([0.0, 0.013, 0.29, 0.5, 1.0, 3.0, 10.0, 25.0])),
        st.tuples(st.just("acquire"), st.integers(0, 700)),
        # Right at the edge of the room the model has now: where a wrong test shows.
        st.tuples(st.just("edge"), st.integers(-2, 2)),
        st.tuples(
            st.just("commit"),
            st.integers(0, 30),
            st.integers(0, 800),
            st.one_of(st.none(), st.integers(-50, 1000)),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("observe"), st.integers(0, 1000), st.sampled_from([None, 600, 1000])),
        st.tuples(st.just("retry"), st.sampled_from([0.0, 0.5, 2.0])),
    ),
    max_size=60,
)


def _room(backend: MemoryBackend, now: float) -> int:
    """Tokens the model has room for now (rounded down), as far as a probe shows."""
    model = backend._state
    model.expire(now)
    if isinstance(model, Buckets):
        return math.floor(min(lv.level for lv in model.levels if lv.tokens) - model.open_tokens)
    low, high = 0, 1000  # the window: the largest cost it admits now, by bisection
    while low < high:
        mid = (low + high + 1) // 2
        if model.earliest(mid, now) <= now:
            low = mid
        else:
            high = mid - 1
    return low


def _view(remaining: int, limit: int | None) -> ServerView:
    return ServerView(
        remaining_tokens=max(0, remaining), limit_tokens=limit, remaining_requests=max(0, 20)
    )


_DRAIN_REQUESTS = [("acquire", 0), ("commit", 0, 0, None)] * 12


@settings(max_examples=300, deadline=None)
# A token room with a fraction of a token short of the cost, then a request room with
# a fraction of a request: the edges of the uncontended test.
@example(
    ops=[("acquire", 500), ("commit", 0, 500, None), ("tick", 0.29), ("edge", 1)],
    algorithm="bucket",
    refunds=None,
    day=False,
)
@example(
    ops=[*_DRAIN_REQUESTS, ("tick", 0.5), ("acquire", 0)],
    algorithm="bucket",
    refunds=True,
    day=True,
)
@example(
    ops=[("retry", 0.5), ("tick", 0.29), ("acquire", 1)],
    algorithm="bucket",
    refunds=None,
    day=False,
)
@given(
    ops=ops,
    algorithm=st.sampled_from(["bucket", "window"]),
    refunds=st.sampled_from([None, True, False]),
    day=st.booleans(),
)
def test_admit_now_decides_as_start(
    ops: list[tuple[Any, ...]], algorithm: str, refunds: bool | None, day: bool
) -> None:
    clock = FakeClock()
    limits = WindowLimits(
        tpm=997, rpm=12, tpd=2999 if day else None, rpd=40 if day else None, window=window
    )
    fast = MemoryBackend(limits, clock=clock, refunds=refunds, algorithm=algorithm)
    slow = MemoryBackend(limits, clock=clock, refunds=refunds, algorithm=algorithm)
    held: list[tuple[Any, Any]] = []
    for op in ops:
        kind = op[0]
        if kind == "tick":
            clock.now += op[1]
        elif kind in ("acquire", "edge"):
            tokens = op[1] if kind == "acquire" else max(0, _room(slow, clock.now) + op[1])
            got = fast.admit_now(tokens)
            if got is None:
                ticket = Ticket(tokens)
                fstep = fast.start(ticket)
                if fstep.charge is None:
                    fast.leave(ticket)
                fcharge = fstep.charge
            else:
                assert got[0] == clock.now
                fcharge = got[1]
            ticket = Ticket(tokens)
            sstep = slow.start(ticket)
            if sstep.charge is None:
                slow.leave(ticket)
            assert (fcharge is None) == (sstep.charge is None), "the two paths disagree"
            if fcharge is not None:
                held.append((fcharge, sstep.charge))
        elif kind in ("commit", "cancel") and held:
            fc, sc = held.pop(op[1] % len(held))
            if kind == "cancel":
                fast.settle(fc, None, None)
                slow.settle(sc, None, None)
            else:
                view = None if op[3] is None else _view(op[3], None)
                fast.settle(fc, op[2], view)
                slow.settle(sc, op[2], view)
        elif kind == "observe":
            fast.observe(_view(op[1], op[2]))
            slow.observe(_view(op[1], op[2]))
        elif kind == "retry":
            fast.observe(ServerView(retry_after=op[1]))
            slow.observe(ServerView(retry_after=op[1]))
        fw, sw = fast._state, slow._state
        fw.expire(clock.now)
        sw.expire(clock.now)
        assert _snapshot(fw) == _snapshot(sw)
        assert fast.refunds == slow.refunds


def test_admit_now_never_passes_a_waiter() -> None:
    clock = FakeClock()
    backend = MemoryBackend(WindowLimits(tpm=100, window=10.0), clock=clock, algorithm="bucket")
    first = backend.admit_now(90)
    assert first is not None
    waiter = Ticket(50)
    assert backend.start(waiter).charge is None  # queued: no room yet
    clock.now += 100.0  # room for everybody now, but the waiter is first in line
    assert backend.admit_now(10) is None
    assert backend.poll(waiter).charge is not None
    assert backend.admit_now(10) is not None


@pytest.mark.parametrize("algorithm", ["bucket", "window"])
def test_limiter_paths_agree_through_the_public_api(algorithm: str) -> None:
    """The public acquire with the uncontended path against one forced to the queue's
    path: same admissions, same times, same timeouts, sync and async."""
    clock = FakeClock()

    def make() -> tg.Limiter:
        return tg.Limiter(
            tpm=600, rpm=5, window=10.0, clock=clock, sleep=lambda s: None, algorithm=algorithm
        )

    fast, slow = make(), make()
    slow._admit_now = None  # the queue's path only

    async def run() -> list[Any]:
        seen: list[Any] = []
        for i in range(40):
            clock.now += [0.0, 0.3, 1.7, 4.0][i % 4]
            tokens = [100, 250, 0, 599][i % 4]
            out: list[Any] = []
            for lim in (fast, slow):
                try:
                    if i % 2:
                        r = await lim.acquire_async(tokens, max_wait=0)
                    else:
                        r = lim.acquire(tokens, max_wait=0)
                except tg.RateLimitTimeout as exc:
                    out.append(("timeout", exc.needed_wait))
                    continue
                out.append((r.at, r.waited, r.tokens))
                if i % 3 == 0:
                    r.cancel()
                elif i % 3 == 1:
                    await r.commit_async(tokens // 2)
                else:
                    r.commit(tokens, headers={"x-ratelimit-remaining-tokens": "300"})
            assert out[0] == out[1]
            seen.append(out[0])
        return seen

    seen = asyncio.run(run())
    # Both outcomes were exercised: some admitted at once, some refused for max_wait.
    assert any(s[0] == "timeout" for s in seen)
    assert any(s[0] != "timeout" for s in seen)


# -- the bucket's shortcuts against its general path -----------------------------------


class _General(Buckets):
    """The bucket model with the general form of each shortcut the fast one takes:
    expire ages through the general check, then refills; adopt sums what is seen
    through ``_seen``, and calls ``limit_to``, the refund check and ``_defer_frees``
    whenever they may apply, not only when they can change something."""

    def expire(self, now: float, *, age: bool = True) -> None:
        q = self.open
        if age and q and (not q[0].open or q[0].at + self.window <= now):
            self._age(now)
        if now > self.time:
            super().expire(now, age=False)

    def adopt(
        self,
        now: float,
        view: ServerView,
        mark: tuple[int, int] | None = None,
        sure: int | None = None,
        since: float | None = None,
        given_back: float | None = None,
    ) -> bool:
        changed = False
        seen_t, seen_r = self._seen(now, mark)
        if self.time < now:
            self.expire(now, age=False)
        tpm, rpd = self.tpm, self.rpd
        if tpm is not None and view.limit_tokens is not None and view.limit_tokens > 0:
            changed |= tpm.limit_to(view.limit_tokens)
        if rpd is not None and view.limit_requests is not None and view.limit_requests > 0:
            changed |= rpd.limit_to(view.limit_requests)
        if self.refunds is None and self.learned is not False:
            if self.lesson is None:
                self._check_refunds(view, seen_t, now, since, given_back)
            changed |= self.lesson is not None
            if self.policy is None and view.remaining_tokens is not None:
                self._defer_frees()
        if view.retry_after is not None and now + view.retry_after > self.blocked_until:
            self.blocked_until = now + view.retry_after
            changed = True
        if tpm is not None and view.remaining_tokens is not None:
            # No shortcut in this step: the model's own.
            changed |= self._adopt_remaining(tpm, float(view.remaining_tokens), seen_t, sure)
        if rpd is not None and view.remaining_requests is not None:
            target = float(view.remaining_requests) + seen_r
            if rpd.level > target:
                rpd.level = target
                changed = True
        return changed


def _full_state(model: Buckets) -> Any:
    return (
        _snapshot(model),
        model.learned,
        model.lesson,
        [(lv.limit, lv.cap) for lv in model.levels],
        (model.floor, model.floor_at, model.floor_lag, model.floor_limit, model.floor_mark),
        model.released,
        [(c.mark_tokens, c.settled_mark, c.floor, c.sure_tokens) for c in model.open if c.open],
    )


_views = st.builds(
    ServerView,
    remaining_tokens=st.one_of(st.none(), st.integers(0, 1100)),
    # Below, at and above the configured TPM: a smaller one sets the capacity.
    limit_tokens=st.sampled_from([None, 500, 997, 5000]),
    remaining_requests=st.one_of(st.none(), st.integers(0, 45)),
    limit_requests=st.sampled_from([None, 9, 40, 100]),
    retry_after=st.sampled_from([None, None, 0.0, 0.5]),
)

general_ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.sampled_from([0.0, 1e-6, 0.29, 1.0, 3.0, 25.0])),
        # A run of admissions committed at once (headers or not): fills the buckets.
        st.tuples(
            st.just("burst"),
            st.integers(1, 8),
            st.integers(0, 300),
            st.booleans(),
            st.integers(0, 1100),
        ),
        st.tuples(st.just("acquire"), st.integers(0, 1000)),
        st.tuples(st.just("commit"), st.integers(0, 30), st.integers(0, 1200), _views),
        st.tuples(st.just("commit"), st.integers(0, 30), st.integers(0, 1200), st.none()),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("observe"), _views),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
# A header showing a free of 50 kept (30 more in use than ours): the refund check runs.
@example(
    ops=[
        ("acquire", 100),
        ("commit", 0, 50, None),
        ("observe", ServerView(remaining_tokens=917, limit_tokens=997)),
    ],
    refunds=None,
    day=False,
    header_lag=0.0,
)
@given(
    ops=general_ops,
    refunds=st.sampled_from([None, True, False]),
    day=st.booleans(),
    header_lag=st.sampled_from([0.0, 0.05]),
)
def test_bucket_shortcuts_decide_as_the_general_path(
    ops: list[tuple[Any, ...]], refunds: bool | None, day: bool, header_lag: float
) -> None:
    """The bucket's inlined refill, its adopt's skips (a refund check that cannot
    learn, a capacity that cannot change, what is seen summed without a lag) and its
    named-bucket settle and admission decide exactly as the general forms: the same
    admissions at the same times, the same levels, lessons and learning state."""
    clock = FakeClock()
    limits = WindowLimits(
        tpm=997, rpm=5, tpd=2999 if day else None, rpd=9 if day else None, window=window
    )
    fast = MemoryBackend(limits, clock=clock, refunds=refunds, header_lag=header_lag)
    slow = MemoryBackend(limits, clock=clock, refunds=refunds, header_lag=header_lag)
    fast._state = Buckets(limits, header_lag=header_lag, refunds=refunds)
    slow._state = _General(limits, header_lag=header_lag, refunds=refunds)
    held: list[tuple[Any, Any]] = []

    def acquire(tokens: int) -> tuple[Any, Any] | None:
        # The fast model takes the at-once admission first (then the queue's path when
        # it declines), the general one only the queue's path.
        got = fast.admit_now(tokens)
        if got is None:
            ticket = Ticket(tokens, estimate=True)
            fstep = fast.start(ticket)
            if fstep.charge is None:
                fast.leave(ticket)
            fast_at, fast_charge, fast_until = fstep.now, fstep.charge, fstep.until
        else:
            fast_at, fast_charge, fast_until = got[0], got[1], None
        ticket = Ticket(tokens, estimate=True)
        step = slow.start(ticket)
        if step.charge is None:
            slow.leave(ticket)
        assert (fast_at, fast_charge is None, fast_until) == (
            step.now,
            step.charge is None,
            step.until,
        )
        return None if fast_charge is None else (fast_charge, step.charge)

    for op in ops:
        kind = op[0]
        if kind == "tick":
            clock.now += op[1]
        elif kind == "burst":
            for _ in range(op[1]):
                pair = acquire(op[2])
                if pair is not None:
                    view = _view(op[4], 997) if op[3] else None
                    fast.settle(pair[0], op[2] // 2, view)
                    slow.settle(pair[1], op[2] // 2, view)
        elif kind == "acquire":
            pair = acquire(op[1])
            if pair is not None:
                held.append(pair)
        elif kind in ("commit", "cancel") and held:
            fc, sc = held.pop(op[1] % len(held))
            if kind == "cancel":
                fast.settle(fc, None, None)
                slow.settle(sc, None, None)
            else:
                fast.settle(fc, op[2], op[3])
                slow.settle(sc, op[2], op[3])
        elif kind == "observe":
            fast.observe(op[1])
            slow.observe(op[1])
        fw, sw = fast._state, slow._state
        assert isinstance(fw, Buckets)
        assert isinstance(sw, Buckets)
        fw.expire(clock.now)
        sw.expire(clock.now)
        assert _full_state(fw) == _full_state(sw)
        assert fast.refunds == slow.refunds
