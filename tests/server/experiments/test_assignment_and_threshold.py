"""Arm assignment (sticky, balanced, independent per experiment) and the threshold curve."""

from __future__ import annotations

import random

import pytest

from server.experiments.assignment import Arm, arm_for, unit_position
from server.experiments.threshold import (
    Judged,
    between_scores,
    measured_precision,
    precision_coverage,
    suggest,
)


def test_assignment_is_sticky_balanced_and_independent() -> None:
    units = [f"user-{i}" for i in range(10_000)]
    first = [arm_for("exp-1", unit, 0.5) for unit in units]
    assert first == [arm_for("exp-1", unit, 0.5) for unit in units]  # sticky
    share = sum(arm is Arm.TREATMENT for arm in first) / len(units)
    assert 0.48 < share < 0.52
    quarter = sum(arm_for("exp-1", u, 0.25) is Arm.TREATMENT for u in units) / len(units)
    assert 0.23 < quarter < 0.27
    # Growing the share only moves control units into treatment.
    assert all(arm_for("exp-1", u, 0.5) is Arm.TREATMENT for u in units if
               arm_for("exp-1", u, 0.25) is Arm.TREATMENT)  # fmt: skip
    other = [arm_for("exp-2", unit, 0.5) for unit in units]
    agree = sum(a == b for a, b in zip(first, other, strict=True)) / len(units)
    assert 0.47 < agree < 0.53  # another experiment splits the units afresh
    assert 0 <= unit_position("exp-1", "") < 1
    assert arm_for("exp-1", "x", 0.0) is Arm.CONTROL and arm_for("exp-1", "x", 1.0) is Arm.TREATMENT


def test_precision_coverage_curve_by_hand() -> None:
    judged = [Judged(0.9, True), Judged(0.8, True), Judged(0.8, False), Judged(0.5, False)]
    curve = precision_coverage(judged)
    assert [(p.threshold, p.precision, p.coverage) for p in curve] == [
        (0.9, 1.0, 0.25),
        (0.8, pytest.approx(2 / 3), 0.75),
        (0.5, 0.5, 1.0),
    ]
    assert suggest(judged, 0.6) == curve[1]
    assert suggest(judged, 1.0) == curve[0]
    assert suggest([Judged(0.3, False)], 0.5) is None
    assert measured_precision(judged, 0.8) == pytest.approx(2 / 3)
    assert measured_precision(judged, 0.95) is None


def test_the_suggested_threshold_holds_on_new_requests() -> None:
    """Right answers score higher on average: a threshold fitted on one half of the
    requests gives about the target precision on the other half."""
    rng = random.Random(11)

    def request() -> Judged:
        right = rng.random() < 0.6
        return Judged(rng.gauss(0.7 if right else 0.5, 0.1), right)

    fit, check = [request() for _ in range(4000)], [request() for _ in range(4000)]
    point = suggest(fit, 0.9)
    assert point is not None and 0.2 < point.coverage < 0.8
    precision = measured_precision(check, point.threshold)
    assert precision is not None and abs(precision - 0.9) < 0.02


def test_a_threshold_between_scores_answers_the_same_requests() -> None:
    judged = [Judged(0.9, True), Judged(0.8, True), Judged(0.8, False), Judged(0.5, False)]
    curve = precision_coverage(judged)
    assert between_scores(curve, curve[0]) == pytest.approx(0.85)
    assert between_scores(curve, curve[1]) == pytest.approx(0.65)
    assert between_scores(curve, curve[2]) == 0.5  # nothing scores lower
    for point in curve:
        answered = [j for j in judged if j.top_score >= between_scores(curve, point)]
        assert len(answered) == point.answered
