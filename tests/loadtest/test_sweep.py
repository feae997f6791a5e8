"""Sweeps: perf_analyzer's stability rule per step, and the stop at a p99 threshold."""

from __future__ import annotations

import pytest
from loadtest_helpers import config, run_against

from loadtest.recorder import Window
from loadtest.step import WindowPolicy, is_stable
from loadtest.stub_server import stub_thread


def window(throughput: float, p99_ms: float, seconds: float = 1.0) -> Window:
    """A closed window with `throughput` ok/s whose latencies' p99 is about `p99_ms`."""
    w = Window(start=0.0, end=seconds)
    w.ok = round(throughput * seconds)
    for k in range(100):
        w.record("recommend", (p99_ms if k >= 98 else p99_ms / 4) / 1000)
    return w


def test_stable_means_three_windows_within_ten_percent() -> None:
    steady = [window(100, 50), window(104, 52), window(98, 49)]
    assert is_stable(steady, 0.10)
    assert not is_stable(steady[:2], 0.10)  # fewer than three
    assert not is_stable([window(100, 50), window(120, 50), window(100, 50)], 0.10)
    assert not is_stable([window(100, 50), window(100, 60), window(100, 50)], 0.10)
    assert not is_stable([window(0, 50), window(0, 50), window(0, 50)], 0.10)
    # Only the last three count: an unsteady start does not matter.
    assert is_stable([window(10, 500), *steady], 0.10)


def test_a_policy_stops_when_stable_or_at_its_cap() -> None:
    policy = WindowPolicy(window_s=1, warmup_s=0, max_windows=5, stability=0.1)
    assert policy.enough([window(100, 50)] * 3)
    assert not policy.enough([window(100, 50), window(200, 50), window(100, 50)])
    unsteady = [window(100 * (k % 2 + 1), 50) for k in range(5)]
    assert policy.enough(unsteady)
    fixed = WindowPolicy(window_s=1, warmup_s=0, max_windows=4, stability=None)
    assert not fixed.enough([window(100, 50)] * 3)


def test_policy_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        WindowPolicy(window_s=0, warmup_s=0, max_windows=3, stability=0.1)
    with pytest.raises(ValueError):
        WindowPolicy(window_s=1, warmup_s=0, max_windows=2, stability=0.1)


def test_a_sweep_stops_at_the_first_step_over_the_p99_limit() -> None:
    with stub_thread(delay_s=0.02) as stub:
        sweep = {"sweep": True, "window_s": 0.5, "max_windows": 3, "duration_s": 30.0}
        run = config(loads=(20.0, 40.0, 80.0), max_p99_ms=10.0, **sweep)
        result = run_against(stub.url, run)
    assert [step.load for step in result.steps] == [20.0]
    assert result.stop_reason.startswith("p99 ") and "> 10 ms at 20/s" in result.stop_reason


def test_a_sweep_stops_when_requests_fail() -> None:
    with stub_thread() as stub:
        run = config(loads=(20.0, 40.0), sweep=True, window_s=0.5, max_windows=3, duration_s=30.0)

        # Healthy during the pre-flight check, then every answer is a 503.
        def degrade() -> None:
            stub.server.status = 503

        stub.loop.call_soon_threadsafe(stub.loop.call_later, 0.2, degrade)
        result = run_against(stub.url, run)
    assert len(result.steps) == 1
    assert "failed or dropped" in result.stop_reason
    assert result.steps[0].measured.errors["HTTP 503"] > 0


def test_a_sweep_measures_each_step_until_stable_or_capped() -> None:
    with stub_thread(delay_s=0.005) as stub:
        sweep = {"sweep": True, "window_s": 0.4, "max_windows": 6, "duration_s": 30.0}
        run = config(mode="closed", loads=(1, 2), **sweep)
        result = run_against(stub.url, run)
    assert [step.load for step in result.steps] == [1.0, 2.0]
    for step in result.steps:
        assert 3 <= len(step.windows) <= 6
        # A step ends before its cap only when its windows were stable as they closed.
        assert step.stable or len(step.windows) == 6
        # What a sweep step reports is its last three windows.
        assert step.measured.ok == sum(w.ok for w in step.windows[-3:])
    assert result.stop_reason == "completed"


def test_the_duration_bounds_a_sweep() -> None:
    with stub_thread(delay_s=0.005) as stub:
        # A stability no run reaches: every step would take its 10 windows.
        sweep = {"sweep": True, "window_s": 0.5, "max_windows": 10, "stability": 1e-9}
        run = config(loads=(20.0, 40.0, 80.0), duration_s=2.0, **sweep)
        result = run_against(stub.url, run)
    assert result.stop_reason == "duration limit"
    assert result.wall_s < 2.0 + 6.0  # the duration, the drain and start-up
