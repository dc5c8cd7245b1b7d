"""The Lua port under the same interleaving property as the Python model.

The scripts in ``tokenguard/limiter/lua`` reimplement ``_window.py``; this runs the
property of ``limiter_property.py`` against them on a real ``redis-server``. The
scripts read Redis ``TIME``; to replay any interleaving the test writes its fake
clock to the ``:clock`` key, which the scripts read instead (tests only: the library
never writes that key, as the last test checks). A bounded number of examples keeps
the run to a few seconds; every interleaving that once broke either port is kept as
an example.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limiter_property import (
    LEARNING_429,
    LIMIT,
    OPS,
    PERIOD,
    SERVERS,
    FakeClock,
    Model,
    known_examples,
    run_interleaving,
)
from redis_support import RedisServer, redis_srv

import tokenguard as tg
from tokenguard.limiter._redis import RedisBackend
from tokenguard.limiter._window import WindowLimits

__all__ = ["redis_srv"]

pytestmark = pytest.mark.redis

# Leases are real-time bookkeeping for crashed waiters; the fake clock jumps by whole
# windows, so a lease that long keeps every waiter's place, as the memory queue does.
LEASE = 1e6


@pytest.fixture(scope="module")
def client(redis_srv: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    yield c
    c.close()


def _redis_run(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
) -> Model:
    key = f"prop-{uuid.uuid4().hex[:12]}"
    clock_key = "{" + key + "}:clock"

    def make(clock: FakeClock, lag: float, refunds: bool | None) -> RedisBackend:
        return RedisBackend(
            WindowLimits(tpm=LIMIT, window=PERIOD),
            client,
            key=key,
            lease=LEASE,
            header_lag=lag,
            refunds=refunds,
        )

    def set_clock(t: float) -> None:
        client.set(clock_key, repr(t))

    clock = FakeClock(on_set=set_clock)
    try:
        return run_interleaving(steps, lag, server, make, clock)
    finally:
        client.delete(*client.keys("{" + key + "}:*"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=OPS, lag=st.sampled_from([0.0, 3.0]), server=SERVERS)
@known_examples
def test_lua_keeps_every_window_and_the_server_bucket(
    client: redis.Redis,
    steps: list[tuple[object, ...]],
    lag: float,
    server: tuple[str, bool | None],
) -> None:
    _redis_run(client, steps, lag, server)


def test_the_lua_port_learns_from_the_same_429(client: redis.Redis) -> None:
    m = _redis_run(client, LEARNING_429, 0.0, ("keeps", None))
    assert m.refused == 1
    assert m.backend.refunds is False


def test_the_library_never_writes_the_test_clock(client: redis.Redis) -> None:
    key = f"noclock-{uuid.uuid4().hex[:8]}"
    lim = tg.Limiter(tpm=100, tpd=1000, rpd=100, window=0.5, redis=client, key=key)
    r = lim.acquire(30)
    r.commit(20, headers={"x-ratelimit-remaining-tokens": "50"})
    lim.acquire(10).cancel()
    lim.observe({"x-ratelimit-remaining-tokens": "10", "retry-after": "0"})
    names = {k.decode() for k in client.keys("{" + key + "}:*") if isinstance(k, bytes)}
    assert names  # the limiter did write its state...
    assert "{" + key + "}:clock" not in names  # ...and never the test clock
