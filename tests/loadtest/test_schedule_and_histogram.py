"""Arrival schedules and the HDR percentile summary."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from loadtest.histogram import LatencySummary, new_histogram, record_seconds
from loadtest.schedule import arrival_offsets


def test_constant_arrivals_are_evenly_spaced_without_drift() -> None:
    offsets = list(itertools.islice(arrival_offsets(400.0, False, 0), 1_000_001))
    assert offsets[:3] == [0.0, 0.0025, 0.005]
    assert offsets[-1] == 2500.0  # k / rate, not a running sum


def test_poisson_arrivals_are_seeded_and_have_the_rate() -> None:
    first = list(itertools.islice(arrival_offsets(100.0, True, 3), 20_000))
    assert first == list(itertools.islice(arrival_offsets(100.0, True, 3), 20_000))
    gaps = np.diff(first)
    assert (gaps > 0).all()
    assert gaps.mean() == pytest.approx(0.01, rel=0.03)
    assert gaps.std() == pytest.approx(0.01, rel=0.05)  # exponential: std = mean


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError):
        arrival_offsets(rate, False, 0)


def test_summary_matches_hdrhistogram_itself() -> None:
    histogram = new_histogram()
    rng = random.Random(1)
    for _ in range(20_000):
        record_seconds(histogram, rng.lognormvariate(-5, 1.5))
    summary = LatencySummary.of(histogram)
    at = histogram.get_value_at_percentile
    expected = (at(50), at(90), at(95), at(99), at(99.9), histogram.get_max_value())
    assert (
        summary.p50_us,
        summary.p90_us,
        summary.p95_us,
        summary.p99_us,
        summary.p999_us,
        summary.max_us,
    ) == expected
    assert summary.mean_us == pytest.approx(histogram.get_mean_value())
    assert summary.count == 20_000
    assert summary.ms("p99") == summary.p99_us / 1000


def test_an_empty_histogram_summarises_to_zeros() -> None:
    assert LatencySummary.of(new_histogram()).to_dict() == dict.fromkeys(
        ("count", "mean_us", "p50_us", "p90_us", "p95_us", "p99_us", "p999_us", "max_us"), 0
    )
