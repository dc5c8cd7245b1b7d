"""Regression tests for faults the reliability suite found, one per bug."""

from __future__ import annotations

import time

import pytest
from reliability_support import RestartableRedis

import tokenguard as tg

pytestmark = [pytest.mark.reliability, pytest.mark.redis]


async def test_asyncio_callers_keep_the_clients_retry_policy_when_redis_dies() -> None:
    """The asyncio Redis client is built from the sync one's settings, its retry policy
    included: with no retries, a dead Redis is LimiterUnavailable at once for tasks as for
    threads (redis.asyncio's default policy retried for ~3.6 s, past max_wait)."""
    box = RestartableRedis()
    try:
        client = box.client()
        assert client.get_retry() is not None
        lim = tg.Limiter(tpm=1_000, window=1.0, redis=client, key="retry-policy")
        r = await lim.acquire_async(10)
        await r.commit_async(10)
        box.kill()
        t0 = time.monotonic()
        with pytest.raises(tg.LimiterUnavailable):
            await lim.acquire_async(10, max_wait=1.0)
        assert time.monotonic() - t0 < 1.0
        await lim.aclose()
    finally:
        box.close()
