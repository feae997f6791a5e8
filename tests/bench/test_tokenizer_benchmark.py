"""bench/tokenizer_benchmark.py prints its table, both ways agreeing on the ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import tokenizer_benchmark


def test_prints_the_library_and_the_fast_path(
    tiny_export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--tokenizer", str(tiny_export_dir / "tokenizer.json"), "--rounds", "2"]
    assert tokenizer_benchmark.main([*argv, "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "µs" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| tokenizers library", "| kbrec"]
    assert all(float(row.split(" | ")[1]) > 0 for row in rows)
