"""What the sliding window and the token bucket share, run against each of them.

Both are the limiter's state behind one protocol (``limiter/_state.py``): the same
property (``limiter_property.py``: any interleaving of acquire, commit with the headers
a token-bucket server sends, cancel, leave, observe and time passing never takes the
server's bucket below zero, nor, for the window, admits more than a limit in any
window), the same lesson from a 429, the same FIFO queue.
"""

from __future__ import annotations

import pytest
from fake_clock import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limiter_property import (
    LEARNING_429,
    OPS,
    SERVERS,
    known_examples,
    memory,
    run_interleaving,
)

from tokenguard.limiter._backend import Signal, Ticket

#: Per algorithm, what the property checks besides the server's bucket: every sliding
#: window (the window only), and answers written before later arrivals (the bucket only).
CHECKS = {
    "window": {"sliding": True, "late_answers": False},
    "bucket": {"sliding": False, "late_answers": True},
}
ALGORITHMS = pytest.mark.parametrize("algorithm", list(CHECKS))


@ALGORITHMS
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=OPS, lag=st.sampled_from([0.0, 3.0]), server=SERVERS)
@known_examples
def test_any_interleaving_keeps_the_server_bucket(
    algorithm: str, steps: list[tuple[object, ...]], lag: float, server: tuple[str, bool | None]
) -> None:
    run_interleaving(steps, lag, server, memory(algorithm), FakeClock(0.0), **CHECKS[algorithm])


@ALGORITHMS
def test_the_property_sees_a_learning_429(algorithm: str) -> None:
    # The property's refusals are reachable: a free the server kept lets one request
    # in too many, and its 429 teaches the limiter.
    sliding = CHECKS[algorithm]["sliding"]
    m = run_interleaving(
        LEARNING_429, 0.0, ("keeps", None), memory(algorithm), FakeClock(0.0), sliding=sliding
    )
    assert m.refused == 1
    assert m.backend.refunds is False


@ALGORITHMS
@pytest.mark.parametrize("costs", [[100, 1], [50, 50, 50], [1, 100, 1]])
def test_queue_is_served_in_order(algorithm: str, costs: list[int]) -> None:
    clock = FakeClock(0.0)
    b = memory(algorithm)(clock, 0.0, None)
    b.start(Ticket(100, Signal(for_async=False)))
    tickets = [Ticket(c, Signal(for_async=False)) for c in costs]
    for t in tickets:
        assert b.start(t).charge is None
    served: list[Ticket] = []
    while len(served) < len(tickets):
        clock.now += 1.0
        for t in tickets:
            if t not in served and b.poll(t).charge is not None:
                served.append(t)
    assert served == tickets
