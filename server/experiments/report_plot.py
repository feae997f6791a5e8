"""The report as a PNG: each metric's value per arm with its 95 % interval.

matplotlib comes with the `loadtest` extra (`pip install 'kbrec[loadtest]'`); a
serving install does without it, so it is imported only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from server.experiments.report import LABELS, METRICS, PRIMARY_METRIC, ExperimentReport, p_phrase

DPI: Final = 110
WIDTH: Final = 0.38


def write_report_png(report: ExperimentReport, path: Path) -> Path:
    """Grouped bars, control and treatment side by side, with their intervals as
    error bars; each group's title carries the p-value of the difference."""
    from matplotlib.figure import Figure  # the loadtest extra

    figure = Figure(figsize=(10, 4.5), dpi=DPI)
    axes = figure.add_subplot()
    for offset, figures, color in (
        (-WIDTH / 2, report.control, "tab:blue"),
        (WIDTH / 2, report.treatment, "tab:orange"),
    ):
        values = [figures.estimates[m].value for m in METRICS]
        errors = [
            [figures.estimates[m].value - figures.estimates[m].low for m in METRICS],
            [figures.estimates[m].high - figures.estimates[m].value for m in METRICS],
        ]
        axes.bar(
            [i + offset for i in range(len(METRICS))],
            values,
            WIDTH,
            yerr=errors,
            capsize=3,
            color=color,
            label=f"{figures.arm.value} (v{figures.model_version}, {figures.requests} requests)",
        )
    axes.set_xticks(
        range(len(METRICS)),
        [
            f"{LABELS[m]}{' *' if m == PRIMARY_METRIC else ''}\n"
            f"{p_phrase(report.comparisons[m].p_value)}"
            for m in METRICS
        ],
        fontsize=7,
    )
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("share of requests (MRR: mean)")
    record = report.experiment
    axes.set_title(
        f"Experiment {record.experiment_id}: v{record.control_version} against "
        f"v{record.treatment_version} (* primary metric; bars: 95 % intervals)",
        fontsize=9,
    )
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
