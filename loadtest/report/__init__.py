"""Report files of a run: perf_analyzer CSV, JSON and Markdown summaries, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from kbrec.atomic import write_text_atomic
from loadtest.report.perf_csv import perf_csv
from loadtest.report.summary_markdown import markdown_summary

CSV_FILE: Final = "perf.csv"
JSON_FILE: Final = "summary.json"
MARKDOWN_FILE: Final = "summary.md"
THROUGHPUT_PLOT: Final = "latency_vs_throughput.png"
TIMELINE_PLOT: Final = "latency_over_time.png"


def write_reports(summary: dict[str, Any], out: Path, title: str) -> list[Path]:
    """Write every report into `out` (created); returns the paths written."""
    # Imported here, so `python -m loadtest.report.plots` does not import itself twice.
    from loadtest.report.plots import plot_latency_over_time, plot_latency_vs_throughput

    out.mkdir(parents=True, exist_ok=True)
    texts = {
        CSV_FILE: perf_csv(summary),
        JSON_FILE: json.dumps(summary, indent=1) + "\n",
        MARKDOWN_FILE: markdown_summary(summary, title),
    }
    written = []
    for name, text in texts.items():
        write_text_atomic(out / name, text)
        written.append(out / name)
    written.append(plot_latency_vs_throughput([(title, summary)], out / THROUGHPUT_PLOT, title))
    written.append(plot_latency_over_time(summary, out / TIMELINE_PLOT, title))
    return written
