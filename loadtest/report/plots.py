"""PNG plots of JSON summaries: latency percentiles against throughput, latency over time.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global
state). Several runs can share one latency/throughput plot, e.g. batching on and off:

    python -m loadtest.report.plots --out docs/sweep.png "on=reports/a/summary.json" ...
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

CURVES: Final = (("p50_us", "p50", ":"), ("p99_us", "p99", "-"), ("p999_us", "p99.9", "--"))
COLORS: Final = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
DPI: Final = 110


def plot_latency_vs_throughput(
    runs: Sequence[tuple[str, dict[str, Any]]], path: Path, title: str
) -> Path:
    """One line per run and percentile; each point is a step (rate or concurrency)."""
    figure = Figure(figsize=(8, 5), dpi=DPI)
    axes = figure.add_subplot()
    for (label, summary), color in zip(runs, COLORS * 4, strict=False):
        steps = summary["steps"]
        x = [s["achieved_rate"] for s in steps]
        for key, name, style in CURVES:
            y = [s["latency_us"][key] / 1000 for s in steps]
            axes.plot(x, y, style, marker="o", markersize=3, color=color, label=f"{label} {name}")
        for step, px in zip(steps, x, strict=True):
            py = step["latency_us"]["p99_us"] / 1000
            axes.annotate(_short(step), (px, py), fontsize=7, color=color,
                          textcoords="offset points", xytext=(3, 4))  # fmt: skip
    limit = next((s["config"]["max_p99_ms"] for _, s in runs if s["config"]["max_p99_ms"]), None)
    if limit:
        axes.axhline(limit, color="grey", linewidth=0.8, label=f"p99 limit {limit:g} ms")
    _log_y(axes)
    axes.set_xlabel("achieved throughput (successful requests/s)")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncols=2)
    return _save(figure, path)


def plot_latency_over_time(summary: dict[str, Any], path: Path, title: str) -> Path:
    """Per second: latency percentiles (top) and sent / ok / failed requests (bottom)."""
    timeline = summary["timeline"]
    figure = Figure(figsize=(9, 6), dpi=DPI)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    t = [i["t"] for i in timeline]
    for key, name, style in (
        ("p50_us", "p50", ":"),
        ("p99_us", "p99", "-"),
        ("max_us", "max", "--"),
    ):
        top.plot(t, [i["latency_us"][key] / 1000 for i in timeline], style, label=name)
    _log_y(top)
    top.set_ylabel("latency (ms, log)")
    top.set_title(title)
    bottom.plot(t, [i["sent"] for i in timeline], label="sent/s")
    bottom.plot(t, [i["ok"] for i in timeline], label="ok/s")
    failed = [i["errors"] + i["dropped"] for i in timeline]
    bottom.plot(t, failed, label="errors + dropped /s", color="tab:red")
    bottom.set_ylabel("requests per second")
    bottom.set_xlabel("time since start (s)")
    for axes in (top, bottom):
        for when in _step_starts(timeline):
            axes.axvline(when, color="grey", linewidth=0.6, alpha=0.6)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, loc="upper left")
    return _save(figure, path)


def _log_y(axes: Any) -> None:
    """Log scale with plain numbers (2, 5, 10, 200 ms) rather than powers of ten."""
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # Label only the 2s and 5s between decades: every minor tick labelled is unreadable.
    axes.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else "")
    )
    axes.tick_params(axis="y", which="minor", labelsize=7)


def _step_starts(timeline: Sequence[dict[str, Any]]) -> list[float]:
    return [b["t"] - 1 for a, b in itertools.pairwise(timeline) if a["step"] != b["step"]]


def _short(step: dict[str, Any]) -> str:
    return f"{step['load']:g}/s" if step["mode"] == "open" else f"c{step['load']:g}"


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot latency against throughput of runs.")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="kbrec loadtest")
    parser.add_argument("runs", nargs="+", metavar="LABEL=SUMMARY.json")
    args = parser.parse_args(argv)
    runs = []
    for spec in args.runs:
        label, _, file = spec.partition("=")
        runs.append((label, json.loads(Path(file).read_text(encoding="utf-8"))))
    plot_latency_vs_throughput(runs, args.out, args.title)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
