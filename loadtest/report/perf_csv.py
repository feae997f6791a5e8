"""perf_analyzer's `-f` CSV, so existing spreadsheets and model_analyzer-style parsers work.

The first 13 columns are perf_analyzer's, in its order; latencies are microseconds
and rows are sorted by increasing throughput, as perf_analyzer writes them. The
server-side breakdown (queue, compute) comes from Triton's statistics in
perf_analyzer and is not visible to an HTTP client: those columns are 0, and
"Network+Server Send/Recv" holds the whole mean latency. Extra columns follow the
standard ones, so parsers that read columns by name are unaffected.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Final

BREAKDOWN: Final = (
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
)
PERCENTILE_COLUMNS: Final = (
    ("p50 latency", "p50_us"),
    ("p90 latency", "p90_us"),
    ("p95 latency", "p95_us"),
    ("p99 latency", "p99_us"),
)
EXTRA: Final = (
    "Avg latency",
    "p99.9 latency",
    "Max latency",
    "Offered Rate",
    "Errors",
    "Dropped",
    "Stable",
)


def load_column(mode: str) -> str:
    return "Request Rate" if mode == "open" else "Concurrency"


def perf_csv(summary: dict[str, Any]) -> str:
    mode = summary["config"]["mode"]
    header = [load_column(mode), "Inferences/Second", *BREAKDOWN]
    header += [name for name, _ in PERCENTILE_COLUMNS] + list(EXTRA)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for step in sorted(summary["steps"], key=lambda s: s["achieved_rate"]):
        latency = step["latency_us"]
        mean_us = round(latency["mean_us"])
        breakdown = [0, mean_us, 0, 0, 0, 0, 0]
        load = int(step["load"]) if mode == "closed" else step["load"]
        writer.writerow(
            [load, round(step["achieved_rate"], 1), *breakdown]
            + [latency[key] for _, key in PERCENTILE_COLUMNS]
            + [
                mean_us,
                latency["p999_us"],
                latency["max_us"],
                round(step["offered_rate"], 1),
                sum(step["errors"].values()),
                sum(step["dropped"].values()),
                int(step["stable"]),
            ]
        )
    return out.getvalue()
