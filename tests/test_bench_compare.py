"""The side-by-side benchmark's own logic: arrivals, fairness, spread, interpreters, and one
real row (a process of its own against the emulator) whose figures must add up."""

from __future__ import annotations

import importlib
import statistics
import sys
from typing import Any

import pytest


def _bench(name: str) -> Any:
    # benchmarks/ is not a package to mypy (its scripts are top-level modules there).
    return importlib.import_module(f"benchmarks.compare.{name}")


envs, report, run, scenarios, workload = (
    _bench(n) for n in ("envs", "report", "run", "scenarios", "workload")
)
BY_KEY, Traffic, jain, schedule = (
    scenarios.BY_KEY,
    workload.Traffic,
    workload.jain,
    workload.schedule,
)

COSTS = [100, 200, 300, 1400]  # mean 500: at TPM 6,000 the limit allows 12 per window


def test_jain_is_one_when_even_and_one_over_n_when_one_caller_gets_all() -> None:
    assert jain([5, 5, 5, 5]) == pytest.approx(1.0)
    assert jain([9, 0, 0]) == pytest.approx(1 / 3)
    assert 1 / 3 < jain([3, 1, 1]) < 1


def test_poisson_arrivals_come_at_the_share_of_the_limit_asked_for() -> None:
    for load in (0.5, 0.9, 1.2):
        got = schedule(Traffic("poisson", load=load), 2000.0, 2.0, 6000, 30, COSTS)
        expected = load * 12 * 2000.0 / 2.0  # per window x windows
        assert abs(len(got) - expected) < 0.05 * expected
        assert all(0 <= t < 2000.0 for t, _, _ in got)
        assert sorted(got) == got
        assert {c for _, _, c in got} == set(range(8))
    # RPM binds when it is the lower limit: 3 requests per window at most.
    few = schedule(Traffic("poisson", load=1.0), 2000.0, 2.0, 6000, 3, COSTS)
    assert abs(len(few) - 3000) < 150
    # Drawn once from the seed: every tool gets the same arrivals.
    assert schedule(Traffic("poisson", 0.9), 60, 2, 6000, 30, COSTS) == schedule(
        Traffic("poisson", 0.9), 60, 2, 6000, 30, COSTS
    )


def test_bursts_come_after_idle_and_hold_the_share_of_the_limit_asked_for() -> None:
    got = schedule(Traffic("burst", load=1.5, period=4), 24.0, 2.0, 6000, 30, COSTS)
    starts = sorted({t for t, _, _ in got})
    assert starts == [0.0, 8.0, 16.0]
    for s in starts:
        tokens = sum(COSTS[k] for t, k, _ in got if t == s)
        assert 9000 <= tokens < 9000 + max(COSTS)
    with pytest.raises(ValueError, match="open-loop"):
        schedule(Traffic("closed"), 10, 2, 6000, 30, COSTS)


def test_spread_shows_the_median_and_the_range_only_when_runs_differ() -> None:
    assert report.spread([3, 1, 2], report._int) == "2 (1-3)"
    assert report.spread([0.501, 0.499, 0.5], report._ratio) == "0.50"
    assert report.spread([float("nan")], report._int) == "-"


def test_an_interpreter_is_found_only_when_one_fits() -> None:
    here = sys.version_info[:2]
    found = envs.interpreter((3, 0))
    assert found == (sys.executable, here)
    assert envs.interpreter((3, 99)) is None
    python, note = envs.python_for(None)
    assert (python, note) == (sys.executable, f"Python {here[0]}.{here[1]}")


def test_a_row_runs_in_its_own_process_and_its_figures_add_up() -> None:
    sc = BY_KEY["equal"]
    short = type(sc)(**{**sc.__dict__, "window": 1.0, "windows": 4})
    got = run.one_run(
        short, "tokenguard_guard", "threads", "redis://unused", 1, sys.executable, None
    )
    assert "failed" not in got, got
    assert got["s429"] == 0
    assert got["errors"] == {}
    assert got["unfinished"] == 0
    # The server saw every call the callers counted as served (the start came across
    # processes as wall-clock time: a wrong offset would lose or add windows' calls).
    assert got["server_ok"] == got["ok"] == got["issued"] > 0
    assert 0.5 < statistics.fmean(got["per_window"][1:-1]) / 6000 < 1.3
    assert 0 < got["fairness"] <= 1
    assert got["python"] == ".".join(map(str, sys.version_info[:3]))
