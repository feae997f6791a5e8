"""The Markdown summary: what was run, why it stopped, one table row per step."""

from __future__ import annotations

from typing import Any

HEADER = (
    "| load | offered req/s | achieved req/s | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms "
    "| max ms | errors | dropped | windows | stable |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|"
)


def markdown_summary(summary: dict[str, Any], title: str = "kbrec loadtest") -> str:
    config = summary["config"]
    lines = [
        f"### {title}",
        "",
        f"- target: {summary['target']}",
        f"- workload: {summary['workload']}",
        f"- load: {_load_description(config)}",
        f"- stopped: {summary['stop_reason']}; {summary['wall_s']:.1f} s wall, "
        f"generator CPU {summary['generator']['cpu_s']:.2f} s "
        f"({summary['generator']['cpu_ms_per_request']:.3f} ms per request)",
        "",
        HEADER,
    ]
    lines += [_row(step) for step in summary["steps"]]
    ops = sorted({op for step in summary["steps"] for op in step["by_op"]})
    if len(ops) > 1:
        lines += ["", "By operation (p50 / p99 / max ms):", ""]
        lines += ["| load | " + " | ".join(ops) + " |", "|---|" + "---|" * len(ops)]
        for step in summary["steps"]:
            cells = [_op_cell(step["by_op"].get(op)) for op in ops]
            lines.append(f"| {step['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _load_description(config: dict[str, Any]) -> str:
    loads = ", ".join(f"{load:g}" for load in config["loads"])
    if config["mode"] == "open":
        arrivals = "Poisson" if config["poisson"] else "constant"
        what = f"open loop, {arrivals} arrivals at {loads} req/s"
    else:
        what = f"closed loop, concurrency {loads}"
        # Older summaries lack the field; they were written before clients honoured it.
        if config.get("honour_retry_after", False):
            what += ", Retry-After honoured"
        else:
            what += ", next request at once after a 429/503"
    if config["sweep"]:
        limit = f", stop at p99 > {config['max_p99_ms']:g} ms" if config["max_p99_ms"] else ""
        what += f" (sweep{limit}; windows of {config['window_s']:g} s until stable)"
    return what


def _ms(value_us: float) -> str:
    return f"{value_us / 1000:.1f}"


def _row(step: dict[str, Any]) -> str:
    latency = step["latency_us"]
    percentiles = " | ".join(
        _ms(latency[key]) for key in ("p50_us", "p90_us", "p95_us", "p99_us", "p999_us", "max_us")
    )
    return (
        f"| {step['label']} | {step['offered_rate']:.1f} | {step['achieved_rate']:.1f} "
        f"| {percentiles} | {_counts(step['errors'])} | {_counts(step['dropped'])} "
        f"| {step['windows']} | {'yes' if step['stable'] else 'no'} |"
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items())) or "0"


def _op_cell(latency: dict[str, Any] | None) -> str:
    if not latency or not latency["count"]:
        return "–"
    return f"{_ms(latency['p50_us'])} / {_ms(latency['p99_us'])} / {_ms(latency['max_us'])}"
