"""An experiment's report from logged requests and feedback: every figure checked by
hand on a small log, the verdict on a simulated one, the Markdown and the PNG; and the
judging of requests for the threshold suggestion."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from server.experiments.assignment import Arm
from server.experiments.judging import judged_requests
from server.experiments.report import build_report, report_json, report_markdown
from server.experiments.report_plot import write_report_png
from server.experiments.stats import two_proportions
from server.storage.experiment_tables import (
    ExperimentRecord,
    ExperimentState,
    Feedback,
    FeedbackEvent,
    LoggedOutcome,
    LoggedRecommendation,
)

AT = "2026-11-27T12:00:00.000+00:00"
EXPERIMENT = ExperimentRecord("exp-1", 1, 2, 0.5, "key", ExperimentState.RUNNING, AT, AT)
CLICKED, HELPFUL, NOT_HELPFUL, SOLVED = (
    FeedbackEvent.CLICKED,
    FeedbackEvent.HELPFUL,
    FeedbackEvent.NOT_HELPFUL,
    FeedbackEvent.TICKET_SOLVED,
)


def outcome(
    request_id: str,
    arm: str | None,
    events: Sequence[tuple[str, FeedbackEvent]] = (),
    experiment_id: str = "exp-1",
    scores: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4),
) -> LoggedOutcome:
    ids = tuple(f"a{i}" for i in range(1, len(scores) + 1))
    version = 2 if arm == "treatment" else 1
    logged = LoggedRecommendation(request_id, "acme", version, ids, scores, AT, experiment_id, arm)
    return LoggedOutcome(logged, tuple(Feedback(request_id, a, e, AT) for a, e in events))


def test_every_figure_by_hand() -> None:
    outcomes = [
        # control: a click at rank 1 (helpful, solved), one at rank 4, one without feedback
        outcome("c1", "control", [("a1", CLICKED), ("a1", HELPFUL), ("", SOLVED)]),
        outcome("c2", "control", [("a4", CLICKED), ("a2", CLICKED)]),  # best click: rank 2
        outcome("c3", "control"),
        # treatment: clicks at ranks 3 and 6, a click on an article not in the response
        outcome("t1", "treatment", [("a3", CLICKED), ("", SOLVED)]),
        outcome("t2", "treatment", [("a6", CLICKED), ("a6", NOT_HELPFUL)]),
        outcome("t3", "treatment", [("zz", CLICKED)]),
        outcome("t4", "treatment", [("a1", HELPFUL)]),  # helpful without a click
        outcome("x1", None, [("a1", CLICKED)], experiment_id=""),  # outside: not counted
        outcome("x2", "control", [("a1", CLICKED)], experiment_id="exp-0"),  # another one
    ]
    report = build_report(EXPERIMENT, outcomes)
    control, treatment = report.control, report.treatment
    assert (control.requests, treatment.requests) == (3, 4)
    assert (control.with_feedback, treatment.with_feedback) == (2, 4)
    assert (control.model_version, treatment.model_version) == (1, 2)
    value = {m: e.value for m, e in control.estimates.items()}
    assert value == pytest.approx(
        {"ctr@1": 1 / 3, "ctr@3": 2 / 3, "ctr@5": 2 / 3, "helpful": 1 / 3, "solved": 1 / 3,
         "mrr": (1 + 1 / 2) / 3}
    )  # fmt: skip
    value = {m: e.value for m, e in treatment.estimates.items()}
    assert value == pytest.approx(
        {"ctr@1": 0, "ctr@3": 1 / 4, "ctr@5": 1 / 4, "helpful": 1 / 4, "solved": 1 / 4,
         "mrr": (1 / 3 + 1 / 6) / 4}
    )  # fmt: skip
    ctr3 = report.comparisons["ctr@3"]
    assert ctr3.difference == pytest.approx(1 / 4 - 2 / 3)
    assert ctr3.p_value == pytest.approx(two_proportions(2, 3, 1, 4).p_value)
    assert report.winner is None  # a handful of requests proves nothing
    body = report_json(report)
    assert body["arms"]["control"]["metrics"]["ctr@1"]["value"] == pytest.approx(1 / 3, abs=1e-6)
    assert body["winner"] is None and body["primary_metric"] == "ctr@3"


def simulated(rates: dict[str, float], n: int, seed: int) -> list[LoggedOutcome]:
    """n requests per arm; the right article is clicked at rank 1 with the arm's rate."""
    rng = random.Random(seed)
    outcomes = []
    for arm, rate in rates.items():
        for i in range(n):
            events = [("a1", CLICKED)] if rng.random() < rate else []
            outcomes.append(outcome(f"{arm}-{i}", arm, events))
    return outcomes


def test_the_verdict_names_the_better_arm_only_when_significant(tmp_path: Path) -> None:
    better = build_report(EXPERIMENT, simulated({"control": 0.3, "treatment": 0.5}, 400, 1))
    assert better.winner is Arm.TREATMENT
    assert better.comparisons["ctr@3"].p_value < 0.001
    assert better.comparisons["mrr"].p_value < 0.001 and better.comparisons["mrr"].difference > 0
    worse = build_report(EXPERIMENT, simulated({"control": 0.5, "treatment": 0.3}, 400, 2))
    assert worse.winner is Arm.CONTROL
    same = build_report(EXPERIMENT, simulated({"control": 0.4, "treatment": 0.4}, 400, 3))
    assert same.winner is None and same.comparisons["ctr@3"].p_value > 0.05

    markdown = report_markdown(better)
    assert "| click-through @3 |" in markdown and "| MRR of the clicked article |" in markdown
    assert "The treatment (model version 2) is better" in markdown
    assert "No significant difference" in report_markdown(
        build_report(EXPERIMENT, simulated({"control": 0.4, "treatment": 0.4}, 20, 4))
    )
    png = write_report_png(better, tmp_path / "out" / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_judging_for_the_threshold() -> None:
    judged = judged_requests(
        [
            outcome("r1", None, [("a1", CLICKED)], scores=(0.9, 0.5)),  # right
            outcome("r2", None, [("a2", CLICKED)], scores=(0.8, 0.7)),  # another was right
            outcome("r3", None, [("a1", HELPFUL), ("a1", NOT_HELPFUL)], scores=(0.7,)),
            outcome("r4", None, [("a1", NOT_HELPFUL)], scores=(0.6,)),  # wrong
            outcome("r5", None, [("", SOLVED)], scores=(0.5,)),  # no article event: unjudged
            outcome("r6", None, [], scores=(0.4,)),  # no feedback: unjudged
            outcome("r7", None, [("a1", CLICKED)], scores=()),  # nothing returned
        ]
    )
    assert [(j.top_score, j.right) for j in judged] == [
        (0.9, True),
        (0.8, False),
        (0.7, False),
        (0.6, False),
    ]
