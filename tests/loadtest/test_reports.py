"""Report files: perf_analyzer CSV, JSON, Markdown and two PNG plots, all parseable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from loadtest_helpers import config, run_against
from matplotlib.image import imread

from loadtest.report import write_reports
from loadtest.report.plots import main as plot_main
from loadtest.report.summary_json import run_summary
from loadtest.stub_server import StubThread

PERF_ANALYZER_COLUMNS = [
    "Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
    "Server Compute Infer", "Server Compute Output", "Client Recv",
    "p50 latency", "p90 latency", "p95 latency", "p99 latency",
]  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep_summary() -> dict:
    with StubThread(delay_s=0.002) as stub:
        run = config(loads=(40.0, 80.0), sweep=True, window_s=0.4, max_windows=3, duration_s=20.0)
        return run_summary(run_against(stub.url, run))


def test_every_report_file_is_written_and_parses(sweep_summary: dict, tmp_path: Path) -> None:
    written = write_reports(sweep_summary, tmp_path / "run", "stub sweep")
    names = sorted(path.name for path in written)
    assert names == [
        "latency_over_time.png", "latency_vs_throughput.png", "perf.csv", "summary.json",
        "summary.md",
    ]  # fmt: skip
    out = tmp_path / "run"

    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(sweep_summary))
    assert [step["load"] for step in summary["steps"]] == [40.0, 80.0]
    assert summary["timeline"] and summary["stop_reason"] == "completed"

    rows = list(csv.DictReader((out / "perf.csv").open()))
    header = next(csv.reader((out / "perf.csv").open()))
    assert header[:2] == ["Request Rate", "Inferences/Second"]
    assert header[2:13] == PERF_ANALYZER_COLUMNS  # perf_analyzer's columns, in its order
    throughputs = [float(row["Inferences/Second"]) for row in rows]
    assert throughputs == sorted(throughputs)  # perf_analyzer sorts by throughput
    by_rate = {float(row["Request Rate"]): row for row in rows}
    for step in summary["steps"]:
        row = by_rate[step["load"]]
        assert int(row["p99 latency"]) == step["latency_us"]["p99_us"]  # microseconds
        assert float(row["Inferences/Second"]) == pytest.approx(step["achieved_rate"], abs=0.1)

    markdown = (out / "summary.md").read_text()
    assert markdown.startswith("### stub sweep\n")
    assert markdown.count("\n| 40/s |") == 1 and markdown.count("\n| 80/s |") == 1

    for name in ("latency_vs_throughput.png", "latency_over_time.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        height, width, _ = imread(out / name).shape
        assert height > 300 and width > 500


def test_closed_loop_csv_starts_with_concurrency(tmp_path: Path) -> None:
    with StubThread(delay_s=0.002) as stub:
        result = run_against(stub.url, config(mode="closed", loads=(2,), duration_s=1.0))
    write_reports(run_summary(result), tmp_path, "closed")
    rows = list(csv.DictReader((tmp_path / "perf.csv").open()))
    assert [row["Concurrency"] for row in rows] == ["2"]


def test_runs_can_share_one_throughput_plot(sweep_summary: dict, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps(sweep_summary))
    out = tmp_path / "both.png"
    assert (
        plot_main(["--out", str(out), f"a={tmp_path / 'a.json'}", f"b={tmp_path / 'b.json'}"]) == 0
    )
    assert out.read_bytes().startswith(PNG_SIGNATURE)
