"""`kbrec train` with evaluation, and `kbrec evaluate`, end to end on the tiny corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_factory import TINY_TRAIN_ARGS

from cli.main import main


def test_train_evaluates_against_bm25_and_records_metrics(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    args = ["train", "--corpus", str(tiny_corpus), "--out", str(out), *TINY_TRAIN_ARGS]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| BM25 (stemmed) |" in printed and "| fine-tuned (30 steps) |" in printed
    evaluation = json.loads((out / "metrics.json").read_text())["evaluation"]["index entries"]
    assert set(evaluation) == {
        "BM25 (stemmed)", "BM25 (no stemming)", "random init", "fine-tuned (30 steps)",
    }  # fmt: skip
    queries = {row["queries"] for row in evaluation.values()}
    assert queries == {36}  # every model ranked the same test queries
    # Titles and index entries share words here: training must beat random weights.
    assert evaluation["fine-tuned (30 steps)"]["mrr_at_10"] > evaluation["random init"]["mrr_at_10"]


def test_evaluate_command_ranks_an_export(
    tiny_corpus: Path, tiny_export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--corpus", str(tiny_corpus), "--saved-model", str(tiny_export_dir)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"| {tiny_export_dir} |" in printed


def test_train_without_a_corpus_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--corpus", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "kbrec corpus fetch" in capsys.readouterr().err
