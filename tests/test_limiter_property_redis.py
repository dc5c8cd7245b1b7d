"""The Lua port under the same interleaving property as the Python model.

The scripts in ``tokenguard/limiter/lua`` reimplement ``_window.py`` (``lib.lua``) and
``_bucket.py`` (``bucket.lua``); this runs the property of ``limiter_property.py``
against both on a real ``redis-server``, and checks that the bucket's two ports admit
the same requests at the same times. The scripts read Redis ``TIME``; to replay any
interleaving the test gives its fake clock as every script's last argument
(``RedisBackend._test_clock``), which the scripts read instead; in use that argument
is empty (a test checks it). A bounded number of examples keeps the run to a few
seconds; every interleaving that once broke either port is kept as an example.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from limiter_property import (
    KEPT_DRAINED,
    KEPT_LATE_ARRIVAL,
    KEPT_SLOW_ANSWER,
    LEARNING,
    LEARNING_429,
    LIMIT,
    OPS,
    PERIOD,
    REFUNDS_PROVEN,
    SERVER_LIMITS,
    SERVERS,
    SMALLER_SERVER,
    TEACHING_OPS,
    FakeClock,
    Model,
    known_examples,
    run_interleaving,
)
from redis_support import redis_client, redis_srv
from structlog.testing import capture_logs

import tokenguard as tg
from tokenguard.limiter._backend import Step, Ticket
from tokenguard.limiter._memory import MemoryBackend
from tokenguard.limiter._redis import RedisBackend
from tokenguard.limiter._window import WindowLimits

__all__ = ["redis_client", "redis_srv"]

pytestmark = pytest.mark.redis

# Leases are real-time bookkeeping for crashed waiters; the fake clock jumps by whole
# windows, so a lease that long keeps every waiter's place, as the memory queue does.
LEASE = 1e6


def _redis_run(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
    algorithm: str = "window",
    server_limit: int = LIMIT,
    any_order: bool = False,
    soonests: list[object] | None = None,
) -> Model:
    """``soonests``: ask every waiting ticket for its soonest and record them there."""
    key = f"prop-{uuid.uuid4().hex[:12]}"

    def make(clock: FakeClock, lag: float, refunds: bool | None) -> Any:
        backend = RedisBackend(
            WindowLimits(tpm=LIMIT, window=PERIOD),
            client,
            key=key,
            lease=LEASE,
            # A fake clock's steps are no crash: no waiter loses its place.
            waiter_lease=LEASE,
            header_lag=lag,
            refunds=refunds,
            algorithm=algorithm,
        )
        backend._test_clock = clock  # the scripts' time: see RedisBackend._args
        return backend if soonests is None else _Soonests(backend, soonests)

    clock = FakeClock(0.0)
    try:
        bucket = algorithm == "bucket"
        return run_interleaving(
            steps,
            lag,
            server,
            make,
            clock,
            sliding=not bucket,
            late_answers=bucket,
            server_limit=server_limit,
            any_order=any_order,
        )
    finally:
        keys = client.keys("{" + key + "}:*")
        if keys:
            client.delete(*keys)


@pytest.mark.parametrize("algorithm", ["window", "bucket"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=OPS, lag=st.sampled_from([0.0, 3.0]), server=SERVERS)
@known_examples
def test_lua_keeps_every_window_and_the_server_bucket(
    client: redis.Redis,
    algorithm: str,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
) -> None:
    # The window's ledgers and the bucket model, each checked by the same property.
    _redis_run(client, steps, lag, server, algorithm)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=OPS, lag=st.sampled_from([0.0, 3.0]), server=SERVERS)
@example(steps=SMALLER_SERVER, lag=0.0, server=("refunds", True))
def test_lua_bucket_refills_a_smaller_server_bucket_at_its_rate(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
) -> None:
    # The server's headers give 60 where the limiter was told 100 (see the memory test).
    _redis_run(client, steps, lag, server, "bucket", server_limit=60)


@pytest.mark.parametrize("algorithm", ["window", "bucket"])
def test_the_lua_port_learns_from_the_same_429(client: redis.Redis, algorithm: str) -> None:
    m = _redis_run(client, LEARNING_429, 0.0, ("keeps", None), algorithm)
    assert m.refused == 1
    assert m.backend.refunds is False


def test_in_use_the_scripts_read_redis_time(client: redis.Redis) -> None:
    # Production calls leave the test clock empty: admissions are stamped in Redis time.
    key = f"clock-{uuid.uuid4().hex[:8]}"
    lim = tg.Limiter(tpm=100, window=60.0, redis=client, key=key)
    assert lim._backend._test_clock is None  # type: ignore[attr-defined]
    r = lim.acquire(30)
    seconds, micros = client.time()
    assert abs(r.at - (seconds + micros / 1e6)) < 5.0
    r.cancel()


def _memory_bucket(clock: FakeClock, lag: float, refunds: bool | None) -> MemoryBackend:
    """The Python port of the bucket, for the side-by-side properties."""
    limits = WindowLimits(tpm=LIMIT, window=PERIOD)
    return MemoryBackend(limits, clock=clock, header_lag=lag, refunds=refunds, algorithm="bucket")


def _python_run(
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
    server_limit: int,
    make: Any = _memory_bucket,
    any_order: bool = False,
) -> Model:
    """An interleaving against the Python port of the bucket (``make`` builds it)."""
    return run_interleaving(
        steps,
        lag,
        server,
        make,
        FakeClock(0.0),
        sliding=False,
        late_answers=True,
        server_limit=server_limit,
        any_order=any_order,
    )


#: A commit whose headers show the estimate kept, then waiters with nothing in flight:
#: the deferred tokens are no longer counted as freeable (then one in flight again).
KEPT_THEN_WAITING: list[tuple[object, ...]] = [
    ("acquire", 80),
    ("advance", 1.0),
    ("commit", 0, 0.1, 0.0, 1.0, True),
    ("acquire", 60),
    ("advance", 1.0),
    ("acquire", 10),
    ("advance", 5.0),
    ("acquire", 30),
]


class _Soonests:
    """A backend whose tickets all ask for their soonest (as with ``max_wait``); each
    waiting step's soonest (``None`` for an admission) is recorded in ``seen``."""

    def __init__(self, backend: Any, seen: list[object]) -> None:
        self.backend = backend
        self.seen = seen

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def start(self, ticket: Ticket) -> Step:
        ticket.estimate = True
        return self._saw(self.backend.start(ticket))

    def poll(self, ticket: Ticket) -> Step:
        ticket.estimate = True
        return self._saw(self.backend.poll(ticket))

    def _saw(self, step: Step) -> Step:
        s = step.soonest
        self.seen.append(None if s is None else (round(s.at, 6), s.limit, round(s.resets, 6)))
        return step


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=TEACHING_OPS | OPS,
    lag=st.sampled_from([0.0, 3.0]),
    server=SERVERS,
    server_limit=SERVER_LIMITS,
)
@example(steps=KEPT_THEN_WAITING, lag=0.0, server=("keeps", None), server_limit=LIMIT)
@example(steps=KEPT_THEN_WAITING, lag=0.0, server=("keeps", False), server_limit=LIMIT)
def test_lua_bucket_reports_the_soonest_the_python_model_does(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
    server_limit: int,
) -> None:
    # Every waiter asks for its soonest (what refuses a call at once): both ports give
    # the same, deferred tokens counted only while an answer is still to come.
    python_seen: list[object] = []
    lua_seen: list[object] = []

    def python_bucket(clock: FakeClock, lag: float, refunds: bool | None) -> Any:
        return _Soonests(_memory_bucket(clock, lag, refunds), python_seen)

    python = _python_run(steps, lag, server, server_limit, python_bucket)
    lua = _redis_run(
        client, steps, lag, server, "bucket", server_limit=server_limit, soonests=lua_seen
    )
    assert [round(a.at, 6) for a in lua.admitted] == [round(a.at, 6) for a in python.admitted]
    assert lua_seen == python_seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=OPS, lag=st.sampled_from([0.0, 3.0]), server=SERVERS, server_limit=SERVER_LIMITS)
def test_lua_bucket_admits_when_the_python_model_does(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
    server_limit: int,
) -> None:
    # The same interleaving against both ports of the bucket: same admissions, same times.
    python = _python_run(steps, lag, server, server_limit)
    lua = _redis_run(client, steps, lag, server, "bucket", server_limit=server_limit)
    assert [round(a.at, 6) for a in lua.admitted] == [round(a.at, 6) for a in python.admitted]
    assert [a.cost for a in lua.admitted] == [a.cost for a in python.admitted]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=TEACHING_OPS,
    lag=st.sampled_from([0.0, 3.0]),
    server_limit=SERVER_LIMITS,
    any_order=st.booleans(),
)
@example(steps=KEPT_SLOW_ANSWER, lag=0.0, server_limit=LIMIT, any_order=False)
@example(steps=KEPT_DRAINED, lag=0.0, server_limit=LIMIT, any_order=False)
@example(steps=KEPT_LATE_ARRIVAL, lag=0.0, server_limit=LIMIT, any_order=True)
def test_lua_learning_never_proves_refunds_from_a_server_that_keeps(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server_limit: int,
    any_order: bool,
) -> None:
    _redis_run(
        client,
        steps,
        lag,
        ("keeps", None),
        "bucket",
        server_limit=server_limit,
        any_order=any_order,
    )


def _lessons(logs: list[Any]) -> list[tuple[object, ...]]:
    return [
        (e["refunds"], e["evidence"], e["server_used"], e["ledger_used"])
        for e in logs
        if e["event"] == "tokenguard.limiter.refunds_learned"
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=TEACHING_OPS,
    lag=st.sampled_from([0.0, 3.0]),
    server=LEARNING,
    server_limit=SERVER_LIMITS,
    any_order=st.booleans(),
)
@example(
    steps=REFUNDS_PROVEN, lag=0.0, server=("refunds", None), server_limit=LIMIT, any_order=False
)
def test_lua_bucket_learns_as_the_python_model(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
    server_limit: int,
    any_order: bool,
) -> None:
    # Learning (either lesson) against both ports: the same admissions at the same
    # times, the same lessons from the same evidence, and the server's bucket kept.
    with capture_logs() as logs:
        python = _python_run(steps, lag, server, server_limit, any_order=any_order)
    with capture_logs() as lua_logs:
        lua = _redis_run(
            client, steps, lag, server, "bucket", server_limit=server_limit, any_order=any_order
        )
    assert [round(a.at, 6) for a in lua.admitted] == [round(a.at, 6) for a in python.admitted]
    assert [a.cost for a in lua.admitted] == [a.cost for a in python.admitted]
    assert lua.backend.refunds == python.backend.refunds
    assert _lessons(lua_logs) == _lessons(logs)


def test_the_lua_port_learns_refunds_proven(client: redis.Redis) -> None:
    m = _redis_run(client, REFUNDS_PROVEN, 0.0, ("refunds", None), "bucket")
    assert m.backend.refunds is True
