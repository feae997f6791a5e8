"""The report's statistics against values computed by hand and against simulation."""

from __future__ import annotations

import random

import pytest

from server.experiments.stats import mean, normal_two_sided_p, two_means, two_proportions, wilson


def test_normal_tail() -> None:
    assert normal_two_sided_p(0.0) == pytest.approx(1.0)
    assert normal_two_sided_p(1.959963984540054) == pytest.approx(0.05, abs=1e-9)
    assert normal_two_sided_p(-2.5758293035489) == pytest.approx(0.01, abs=1e-9)


def test_wilson_interval() -> None:
    # 40 of 100: the textbook Wilson interval is [0.3094, 0.4980].
    estimate = wilson(40, 100)
    assert (estimate.value, estimate.n) == (0.4, 100)
    assert estimate.low == pytest.approx(0.3094, abs=1e-4)
    assert estimate.high == pytest.approx(0.4980, abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == 1.0
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)


def test_two_proportions() -> None:
    # 120/1000 against 150/1000: z = 1.9652, p = 0.0494 (pooled z-test, by hand).
    result = two_proportions(120, 1000, 150, 1000)
    assert result.difference == pytest.approx(0.03)
    assert result.p_value == pytest.approx(0.0494, abs=5e-4)
    assert two_proportions(5, 10, 5, 10).p_value == pytest.approx(1.0)
    assert two_proportions(0, 0, 3, 10).p_value == 1.0


def test_mean_and_welch() -> None:
    assert mean([1.0, 2.0, 3.0]).value == pytest.approx(2.0)
    assert mean([1.0, 2.0, 3.0]).low == pytest.approx(2.0 - 1.959964 * (1 / 3) ** 0.5, abs=1e-6)
    assert two_means([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    assert two_means([0.0, 0.0], [1.0, 1.0]).p_value == 0.0


def test_the_tests_hold_their_level_under_the_null() -> None:
    """Same true rate in both arms: about 5 % of experiments reach p < 0.05."""
    rng = random.Random(7)
    false_alarms = 0
    trials = 2000
    for _ in range(trials):
        a = sum(rng.random() < 0.2 for _ in range(400))
        b = sum(rng.random() < 0.2 for _ in range(400))
        false_alarms += two_proportions(a, 400, b, 400).p_value < 0.05
    assert 0.03 < false_alarms / trials < 0.07


def test_a_real_difference_is_found() -> None:
    rng = random.Random(3)
    a = [1.0 if rng.random() < 0.3 else 0.0 for _ in range(1000)]
    b = [1.0 if rng.random() < 0.4 else 0.0 for _ in range(1000)]
    assert two_means(a, b).p_value < 0.001
    assert two_means(a, b).difference > 0
