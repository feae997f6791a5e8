"""The JSON summary of a run: the one structure every other report is made from.

Latencies are in microseconds. Each step carries its HDR histogram (base64, the
standard HdrHistogram encoding) so runs can be merged or re-analysed later.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any, Final

from loadtest.histogram import merged
from loadtest.recorder import Window
from loadtest.runner import RunResult
from loadtest.step import StepResult

FORMAT: Final = 1


def run_summary(result: RunResult) -> dict[str, Any]:
    totals = result.totals or Window(start=0.0, end=0.0)
    completed = totals.ok + totals.errors.total()
    return {
        "format": FORMAT,
        "tool": "kbrec loadtest",
        "started_at": result.started_at,
        "target": result.target,
        "workload": result.workload,
        "config": dataclasses.asdict(result.config),
        "stop_reason": result.stop_reason,
        "interrupted": result.interrupted,
        "wall_s": round(result.wall_s, 3),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": result.load_average[0],
            "load_average_end": result.load_average[1],
        },
        "generator": {
            "cpu_s": round(result.generator_cpu_s, 3),
            "cpu_ms_per_request": round(result.generator_cpu_s / max(completed, 1) * 1000, 4),
        },
        "totals": {
            "sent": totals.sent,
            "ok": totals.ok,
            "errors": dict(totals.errors),
            "dropped": dict(totals.dropped),
        },
        "steps": [step_summary(step) for step in result.steps],
        "timeline": [interval.to_dict() for interval in result.timeline],
    }


def step_summary(step: StepResult) -> dict[str, Any]:
    measured = step.measured
    return {
        "mode": step.mode,
        "load": step.load,
        "label": step.label,
        "stable": step.stable,
        "windows": len(step.windows),
        "measured_s": round(measured.duration_s, 3),
        "offered_rate": round(measured.offered_rate, 3),
        "achieved_rate": round(measured.throughput, 3),
        "sent": measured.sent,
        "ok": measured.ok,
        "late": measured.late,
        "errors": dict(measured.errors),
        "dropped": dict(measured.dropped),
        "latency_us": measured.latency().to_dict(),
        "by_op": {op: measured.latency(op).to_dict() for op in sorted(measured.histograms)},
        "histogram": _encoded(measured),
        "window_stats": [
            {
                "duration_s": round(w.duration_s, 3),
                "offered_rate": round(w.offered_rate, 3),
                "achieved_rate": round(w.throughput, 3),
                "p99_us": w.latency().p99_us,
            }
            for w in step.windows
        ],
    }


def _encoded(window: Window) -> str:
    histogram = merged(window.histograms.values())
    return histogram.encode().decode("ascii") if histogram.get_total_count() else ""
