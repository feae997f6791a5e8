"""An experiment's report: per arm the requests, click-through at 1/3/5, helpful and
solve rates and the mean reciprocal rank of the clicked article, each with its 95 %
interval, and the two-sided test of treatment against control (`stats`).

Every figure is a share or a mean over the arm's logged requests (a request without
feedback counts as not clicked, not helpful, not solved):

- click-through at k: a `clicked` event on an article ranked k or better;
- helpful: a `helpful` event; solved: a `ticket_solved` event;
- MRR: 1 / the rank of the best-ranked clicked article (0 without a click).

The verdict names the arm that is better on the primary metric, click-through at 3
(what a help desk widget shows), when its test gives p < 0.05; else none is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from server.experiments.assignment import Arm
from server.experiments.stats import Comparison, Estimate, mean, two_means, two_proportions, wilson
from server.storage.experiment_tables import (
    ExperimentRecord,
    FeedbackEvent,
    LoggedOutcome,
)

RATES: Final = ("ctr@1", "ctr@3", "ctr@5", "helpful", "solved")
METRICS: Final = (*RATES, "mrr")
PRIMARY_METRIC: Final = "ctr@3"
ALPHA: Final = 0.05
LABELS: Final = {
    "ctr@1": "click-through @1",
    "ctr@3": "click-through @3",
    "ctr@5": "click-through @5",
    "helpful": "helpful rate",
    "solved": "solve rate",
    "mrr": "MRR of the clicked article",
}


@dataclass(frozen=True)
class RequestFigures:
    """One logged request, as the report counts it."""

    best_click: int | None  # 1-based rank of the best-ranked clicked article
    helpful: bool
    solved: bool

    @property
    def reciprocal_rank(self) -> float:
        return 0.0 if self.best_click is None else 1.0 / self.best_click

    def counts(self, metric: str) -> bool:
        if metric == "helpful":
            return self.helpful
        if metric == "solved":
            return self.solved
        cutoff = int(metric.removeprefix("ctr@"))
        return self.best_click is not None and self.best_click <= cutoff


def request_figures(outcome: LoggedOutcome) -> RequestFigures:
    ranked = outcome.recommendation.article_ids
    ranks = {article_id: rank for rank, article_id in enumerate(ranked, 1)}
    events = outcome.feedback
    clicked = [
        ranks[e.article_id]
        for e in events
        if e.event is FeedbackEvent.CLICKED and e.article_id in ranks
    ]
    return RequestFigures(
        min(clicked, default=None),
        any(e.event is FeedbackEvent.HELPFUL for e in events),
        any(e.event is FeedbackEvent.TICKET_SOLVED for e in events),
    )


@dataclass(frozen=True)
class ArmFigures:
    arm: Arm
    model_version: int
    requests: int
    with_feedback: int  # requests that got any feedback event
    estimates: dict[str, Estimate]  # by metric name (METRICS)
    successes: dict[str, int]  # requests counted by each rate (RATES)
    reciprocal_ranks: tuple[float, ...]  # one per request, for the MRR's test


@dataclass(frozen=True)
class ExperimentReport:
    experiment: ExperimentRecord
    control: ArmFigures
    treatment: ArmFigures
    comparisons: dict[str, Comparison]  # treatment minus control, by metric

    @property
    def winner(self) -> Arm | None:
        """The arm better on the primary metric at p < ALPHA, if one is."""
        primary = self.comparisons[PRIMARY_METRIC]
        if primary.p_value >= ALPHA or primary.difference == 0:
            return None
        return Arm.TREATMENT if primary.difference > 0 else Arm.CONTROL


def arm_figures(arm: Arm, version: int, outcomes: Sequence[LoggedOutcome]) -> ArmFigures:
    requests = [request_figures(outcome) for outcome in outcomes]
    successes = {metric: sum(r.counts(metric) for r in requests) for metric in RATES}
    estimates = {metric: wilson(successes[metric], len(requests)) for metric in RATES}
    reciprocal_ranks = tuple(r.reciprocal_rank for r in requests)
    estimates["mrr"] = mean(reciprocal_ranks)
    with_feedback = sum(bool(outcome.feedback) for outcome in outcomes)
    return ArmFigures(
        arm, version, len(requests), with_feedback, estimates, successes, reciprocal_ranks
    )


def build_report(
    experiment: ExperimentRecord, outcomes: Sequence[LoggedOutcome]
) -> ExperimentReport:
    """The report of an experiment from its logged requests (other requests are ignored)."""
    by_arm: dict[Arm, list[LoggedOutcome]] = {Arm.CONTROL: [], Arm.TREATMENT: []}
    for outcome in outcomes:
        logged = outcome.recommendation
        if logged.experiment_id == experiment.experiment_id and logged.arm in by_arm:
            by_arm[Arm(logged.arm)].append(outcome)
    control = arm_figures(Arm.CONTROL, experiment.control_version, by_arm[Arm.CONTROL])
    treatment = arm_figures(Arm.TREATMENT, experiment.treatment_version, by_arm[Arm.TREATMENT])
    comparisons = {
        metric: two_proportions(
            control.successes[metric],
            control.requests,
            treatment.successes[metric],
            treatment.requests,
        )
        for metric in RATES
    }
    comparisons["mrr"] = two_means(control.reciprocal_ranks, treatment.reciprocal_ranks)
    return ExperimentReport(experiment, control, treatment, comparisons)


# --- renderings ---------------------------------------------------------------------


def estimate_json(estimate: Estimate) -> dict[str, float]:
    return {
        "value": round(estimate.value, 6),
        "low": round(estimate.low, 6),
        "high": round(estimate.high, 6),
    }


def experiment_json(record: ExperimentRecord) -> dict[str, Any]:
    return {
        "experiment_id": record.experiment_id,
        "state": record.state.value,
        "control_version": record.control_version,
        "treatment_version": record.treatment_version,
        "treatment_share": record.treatment_share,
        "unit": record.unit,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "stopped_at": record.stopped_at,
        "winner": record.winner,
        "activated": record.activated,
    }


def report_json(report: ExperimentReport) -> dict[str, Any]:
    def arm(figures: ArmFigures) -> dict[str, Any]:
        return {
            "model_version": figures.model_version,
            "requests": figures.requests,
            "requests_with_feedback": figures.with_feedback,
            "metrics": {m: estimate_json(figures.estimates[m]) for m in METRICS},
        }

    winner = report.winner
    return {
        "arms": {"control": arm(report.control), "treatment": arm(report.treatment)},
        "comparisons": {
            m: {
                "difference": round(c.difference, 6),
                "p_value": c.p_value,
            }
            for m, c in report.comparisons.items()
        },
        "primary_metric": PRIMARY_METRIC,
        "alpha": ALPHA,
        "winner": None if winner is None else winner.value,
    }


def p_text(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def p_phrase(p: float) -> str:
    """ "p < 0.0001" or "p = 0.0123"."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def difference_text(difference: float, metric: str) -> str:
    """MRR as a number, rates in percentage points."""
    return f"{difference:+.3f}" if metric == "mrr" else f"{difference * 100:+.1f} pp"


def estimate_text(estimate: Estimate, metric: str) -> str:
    if metric == "mrr":
        return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"
    return f"{estimate.value:.1%} [{estimate.low:.1%}, {estimate.high:.1%}]"


def verdict_text(report: ExperimentReport) -> str:
    primary = report.comparisons[PRIMARY_METRIC]
    winner = report.winner
    label = LABELS[PRIMARY_METRIC]
    if winner is None:
        return (
            f"No significant difference in {label} ({p_phrase(primary.p_value)}, "
            f"two-sided, against {ALPHA})."
        )
    figures = report.treatment if winner is Arm.TREATMENT else report.control
    return (
        f"The {winner.value} (model version {figures.model_version}) is better: {label} "
        f"{difference_text(primary.difference, PRIMARY_METRIC)} for the treatment, "
        f"{p_phrase(primary.p_value)} (two-sided, < {ALPHA})."
    )


def report_markdown(report: ExperimentReport) -> str:
    record = report.experiment
    control, treatment = report.control, report.treatment
    stopped = f", stopped {record.stopped_at}" if record.stopped_at else ""
    lines = [
        f"## Experiment {record.experiment_id}: model version {record.control_version} "
        f"(control) against {record.treatment_version} (treatment)",
        "",
        f"State {record.state.value}; {record.treatment_share:.0%} of the units (by "
        f"{record.unit}) to the treatment; created {record.created_at}"
        f"{', running since ' + record.started_at if record.started_at else ''}{stopped}.",
        "",
        f"| metric | control (v{control.model_version}) | treatment (v{treatment.model_version}) "
        "| difference | p-value |",
        "|---|---|---|---:|---:|",
        f"| requests (with feedback) | {control.requests} ({control.with_feedback}) "
        f"| {treatment.requests} ({treatment.with_feedback}) | | |",
    ]
    for metric in METRICS:
        comparison = report.comparisons[metric]
        difference = difference_text(comparison.difference, metric)
        lines.append(
            f"| {LABELS[metric]} | {estimate_text(control.estimates[metric], metric)} "
            f"| {estimate_text(treatment.estimates[metric], metric)} | {difference} "
            f"| {p_text(comparison.p_value)} |"
        )
    lines += [
        "",
        "Rates are shares of the arm's requests with a 95 % Wilson interval; MRR is a mean "
        "with a normal interval. Tests: pooled two-proportion z-test (rates), Welch (MRR).",
        "",
        f"**{verdict_text(report)}**",
    ]
    if record.winner is not None:
        action = "activated" if record.activated else "kept"
        lines += ["", f"Stopped with the {record.winner} as the winner ({action})."]
    return "\n".join(lines) + "\n"
