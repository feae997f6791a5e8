"""`kbrec serve` turns user-fixable problems into one-line errors (exit status 2)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from serving_helpers import REPO_ROOT, publish_bag_of_words_version

from cli.main import main
from kbrec.repository import MODEL_FILE


def test_an_empty_repository_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--repository", str(tmp_path), "--db", str(tmp_path / "db")]) == 2
    assert "no model version in" in capsys.readouterr().err


def test_a_malformed_variable_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KBREC_MAX_BATCH_SIZE", "lots")
    assert main(["serve", "--repository", str(tmp_path)]) == 2
    assert "KBREC_MAX_BATCH_SIZE" in capsys.readouterr().err


def test_a_bad_flag_value_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--repository", str(tmp_path), "--max-queue", "0"]) == 2
    assert "max_queue must be > 0" in capsys.readouterr().err


def test_a_port_in_use_is_refused(
    bow_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        args = ["serve", "--repository", str(bow_repository), "--db", str(tmp_path / "db")]
        assert main([*args, "--port", port]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_only_invalid_versions_fail_startup(tmp_path: Path) -> None:
    publish_bag_of_words_version(tmp_path)
    (tmp_path / "encoder" / "1" / MODEL_FILE).write_bytes(b"tampered")
    command = [sys.executable, "-m", "cli.main", "serve", "--port", "0"]
    result = subprocess.run(
        [*command, "--repository", str(tmp_path), "--db", str(tmp_path / "db.sqlite")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "model version 1 is invalid" in result.stderr
    assert "startup failed: no valid model version" in result.stderr
