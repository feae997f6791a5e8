"""The figures of an experiment report: per-arm rates with confidence intervals, and a
two-sided test of the difference between the arms.

Rates (click-through at k, helpful, solved) are proportions of requests: Wilson score
intervals, and a two-proportion z-test with the pooled variance. The mean reciprocal
rank of the clicked article is a mean over requests (0 when nothing was clicked):
a normal interval and Welch's z-test. The normal approximations are what an A/B
report needs at hundreds of requests per arm and more; below that the report says
the counts, and a p-value of a handful of requests means little anyway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # two-sided 95 %


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2))


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control, and the two-sided p-value of "no difference"."""

    difference: float
    p_value: float


def wilson(successes: int, n: int, z: float = Z_95) -> Estimate:
    """A proportion with its Wilson score interval (sound near 0 and 1, unlike Wald's)."""
    if n == 0:
        return Estimate(0.0, 0.0, 1.0, 0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding would leave 1 - 1e-16.
    low = 0.0 if successes == 0 else max(centre - half, 0.0)
    high = 1.0 if successes == n else min(centre + half, 1.0)
    return Estimate(p, low, high, n)


def two_proportions(successes_a: int, n_a: int, successes_b: int, n_b: int) -> Comparison:
    """b's rate minus a's, with the pooled two-proportion z-test."""
    if n_a == 0 or n_b == 0:
        return Comparison(0.0, 1.0)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance == 0:
        return Comparison(p_b - p_a, 1.0)
    return Comparison(p_b - p_a, normal_two_sided_p((p_b - p_a) / math.sqrt(variance)))


def mean(values: Sequence[float], z: float = Z_95) -> Estimate:
    """A mean with its normal interval."""
    n = len(values)
    if n == 0:
        return Estimate(0.0, 0.0, 0.0, 0)
    average = sum(values) / n
    if n == 1:
        return Estimate(average, average, average, 1)
    variance = sum((v - average) ** 2 for v in values) / (n - 1)
    half = z * math.sqrt(variance / n)
    return Estimate(average, average - half, average + half, n)


def two_means(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """mean(b) - mean(a), with Welch's test (unequal variances), normal approximation."""
    if len(a) < 2 or len(b) < 2:
        return Comparison(0.0 if not a or not b else sum(b) / len(b) - sum(a) / len(a), 1.0)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    var_a = sum((v - mean_a) ** 2 for v in a) / (len(a) - 1)
    var_b = sum((v - mean_b) ** 2 for v in b) / (len(b) - 1)
    standard_error = math.sqrt(var_a / len(a) + var_b / len(b))
    if standard_error == 0:
        return Comparison(mean_b - mean_a, 1.0 if mean_a == mean_b else 0.0)
    return Comparison(mean_b - mean_a, normal_two_sided_p((mean_b - mean_a) / standard_error))
