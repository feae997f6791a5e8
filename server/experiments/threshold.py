"""The precision knob: how a minimum score trades answering more tickets against
answering them right.

Each judged request is (its top score, whether its top article was right). A
threshold t answers the requests whose top score is >= t: coverage is their share
of all requests, precision the share of them that were right. `suggest` picks the
lowest threshold whose precision reaches the target (the most tickets answered at
that precision), from the curve over every distinct score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Judged:
    top_score: float
    right: bool


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    precision: float
    coverage: float
    answered: int


def precision_coverage(judged: Sequence[Judged]) -> list[CurvePoint]:
    """One point per distinct top score, highest threshold first."""
    ordered = sorted(judged, key=lambda j: -j.top_score)
    points: list[CurvePoint] = []
    right = 0
    for i, item in enumerate(ordered):
        right += item.right
        last_of_score = i + 1 == len(ordered) or ordered[i + 1].top_score < item.top_score
        if last_of_score:
            answered = i + 1
            points.append(
                CurvePoint(item.top_score, right / answered, answered / len(ordered), answered)
            )
    return points


def suggest(judged: Sequence[Judged], target_precision: float) -> CurvePoint | None:
    """The lowest threshold whose precision is >= the target, or None if none is.

    Precision is not monotone in the threshold; among the thresholds that reach the
    target, the lowest answers the most tickets.
    """
    reaching = [p for p in precision_coverage(judged) if p.precision >= target_precision]
    return min(reaching, key=lambda p: p.threshold) if reaching else None


def measured_precision(judged: Sequence[Judged], threshold: float) -> float | None:
    """Precision of the requests answered at `threshold` (None if none is)."""
    answered = [j for j in judged if j.top_score >= threshold]
    return sum(j.right for j in answered) / len(answered) if answered else None


def between_scores(curve: Sequence[CurvePoint], point: CurvePoint) -> float:
    """A minimum score answering exactly the requests of `point`: halfway down to the next
    lower top score, so scores rounded in the log or the response do not move a request
    across it (the point's own threshold when nothing scores lower)."""
    lower = [p.threshold for p in curve if p.threshold < point.threshold]
    return (point.threshold + max(lower)) / 2 if lower else point.threshold
