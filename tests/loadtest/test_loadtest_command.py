"""`kbrec loadtest` as a user runs it: reports, one-line errors, Ctrl-C with a partial report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from loadtest_helpers import QUERIES

from loadtest.stub_server import stub_thread

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60


def kbrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "loadtest", *args]


def queries_file(tmp_path: Path) -> Path:
    path = tmp_path / "queries.jsonl"
    lines = [json.dumps({"account_id": q.account_id, "text": q.text}) for q in QUERIES]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_run_prints_markdown_and_writes_reports(tmp_path: Path) -> None:
    with stub_thread(delay_s=0.002) as stub:
        args = ["--url", stub.url, "--rate", "50", "--duration", "2", "--warmup-s", "0.5"]
        args += ["--workload", f"file:{queries_file(tmp_path)}", "--out", str(tmp_path / "out")]
        done = subprocess.run(kbrec(*args), cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=DEADLINE_S)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| 50/s |" in done.stdout
    assert "[    1s] step 1/1 open 50" in done.stderr  # the progress line, once a second
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"perf.csv", "summary.json"}


def test_ctrl_c_ends_the_run_with_a_partial_report(tmp_path: Path) -> None:
    with stub_thread(delay_s=0.002) as stub:
        args = ["--url", stub.url, "--rate", "50", "--duration", "600", "--warmup-s", "0"]
        args += ["--window-s", "1", "--workload", f"file:{queries_file(tmp_path)}"]
        args += ["--out", str(tmp_path / "out")]
        process = subprocess.Popen(
            kbrec(*args), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert process.stderr is not None
        for line in process.stderr:  # wait for the second progress line: a window has closed
            if line.startswith("[    2s]"):
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 130, stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["stop_reason"] == "interrupted (SIGINT)"
    assert summary["steps"][0]["ok"] > 0
    assert "stopped: interrupted (SIGINT)" in stdout


def test_unusable_arguments_are_one_line_errors(tmp_path: Path) -> None:
    with stub_thread() as stub:
        closed_url = stub.url
    cases = [
        (["--url", "https://127.0.0.1:1"], "only http:// URLs"),
        (["--url", closed_url, "--workload", f"file:{queries_file(tmp_path)}"], "connection error"),
        (["--url", "http://127.0.0.1:1", "--workload", "file:/nonexistent"], "cannot read"),
        (["--url", "grpc://127.0.0.1:1", "--target", "triton", "--write-fraction", "0.1",
          "--workload", f"file:{queries_file(tmp_path)}"], "Triton has no article API"),
        (["--url", "http://127.0.0.1:1", "--rate", "0"], "must be > 0"),
    ]  # fmt: skip
    for args, message in cases:
        done = subprocess.run(kbrec(*args), cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=DEADLINE_S)  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("kbrec loadtest: error: ") and message in done.stderr
        assert done.stderr.count("\n") == 1
