"""`kbrec convert` through cli.main.main: the user-facing errors and a successful run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from kbrec.repository import list_versions


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["convert", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_refused(
    capsys: pytest.CaptureFixture[str], repository: Path, message: str, *args: str
) -> None:
    status, _, err = run_cli(capsys, *args, "--repository", str(repository))
    assert status == 2
    assert err.startswith("kbrec convert: error: ")
    assert message in err
    assert err.count("\n") == 1, "one line"
    assert not repository.exists(), "nothing written"


def test_missing_saved_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert_refused(capsys, tmp_path / "repo", "does not exist", "--saved-model", str(missing))


def test_saved_model_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "model.pb"
    file.write_text("x")
    assert_refused(
        capsys, tmp_path / "repo", "is a file, not a directory", "--saved-model", str(file)
    )


def test_not_a_saved_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    args = ("--saved-model", str(tmp_path / "empty"))
    assert_refused(capsys, tmp_path / "repo", "is not a TF SavedModel (no saved_model.pb)", *args)


@pytest.mark.parametrize("name", ["tokenizer.json", "encoder_config.json"])
def test_missing_sibling_file(
    name: str, stand_in_export: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = stand_in_export()
    (export / name).unlink()
    assert_refused(capsys, tmp_path / "repo", f"has no {name}", "--saved-model", str(export))


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"signature_key": "predict"}, "has no 'serving_default' signature (signatures: predict)"),
        ({"input_name": "tokens"}, "inputs must be exactly ['input_ids'], got ['tokens']"),
        ({"input_dtype": "int64"}, "input_ids must be int32 [batch, seq], got int64"),
        ({"output_key": "output_0"}, "outputs must include 'embedding', got ['output_0']"),
    ],
)
def test_signature_breaks_the_contract(
    variant: dict[str, str],
    message: str,
    stand_in_export: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    export = stand_in_export(**variant)
    assert_refused(capsys, tmp_path / "repo", message, "--saved-model", str(export))


def test_dim_disagrees_with_the_signature(
    stand_in_export: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = stand_in_export(dim=8)
    (export / "encoder_config.json").write_text(json.dumps({"max_length": 16, "dim": 12}))
    args = ("--saved-model", str(export))
    assert_refused(
        capsys, tmp_path / "repo", "embedding has dim 8, encoder_config.json says 12", *args
    )


def test_repository_is_a_file(
    stand_in_export: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    repository.write_text("x")
    status, _, err = run_cli(
        capsys, "--saved-model", str(stand_in_export()), "--repository", str(repository)
    )
    assert status == 2
    assert f"repository {repository} is a file, not a directory" in err
    assert repository.read_text() == "x"


def test_tensorrt_needs_the_onnxruntime_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--saved-model", str(tmp_path), "--backend", "python", "--tensorrt-fp16")
    assert_refused(capsys, tmp_path / "repo", "--tensorrt-fp16 needs --backend onnxruntime", *args)


def test_version_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--saved-model", str(tmp_path), "--version", "0")
    assert_refused(capsys, tmp_path / "repo", "--version must be a positive integer, got 0", *args)


def test_existing_version_is_refused_before_converting(
    published: Any, tiny_export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(published.repository, repository)
    config_before = (repository / "encoder" / "config.pbtxt").read_text()
    status, out, err = run_cli(
        capsys,
        "--saved-model", str(tiny_export_dir),
        "--repository", str(repository),
        "--version", "2",
        "--backend", "python",
    )  # fmt: skip
    assert status == 2
    assert f"version 2 already exists at {repository / 'encoder' / '2'}" in err
    assert out == "", "refused before any conversion work"
    assert list_versions(repository) == [1, 2]
    assert (repository / "encoder" / "config.pbtxt").read_text() == config_before


def test_successful_run_prints_progress(
    tiny_export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    status, out, err = run_cli(
        capsys,
        "--saved-model", str(tiny_export_dir),
        "--repository", str(repository),
        "--backend", "python",
    )  # fmt: skip
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "convert: converting to ONNX (opset 18)…"
    assert "convert: checker ok" in lines and "convert: ORT ok" in lines
    assert any(line.startswith("convert: parity max abs diff") for line in lines)
    assert f"convert: published version 1 at {repository / 'encoder' / '1'}" in lines
    assert lines[-1].startswith("convert: model size ")
    assert 'backend: "python"' in (repository / "encoder" / "config.pbtxt").read_text()
