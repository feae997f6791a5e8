"""conversion.convert end to end: published layout, metadata, and failures that publish nothing."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import conversion.convert as convert_module
from conversion.convert import ConvertOptions, convert
from conversion.errors import ConversionError
from conversion.onnx_export import check_onnx_contract
from conversion.source import saved_model_digest
from kbrec.repository import list_versions, read_metadata, verify_version

TEMPLATE = Path(__file__).parents[2] / "conversion" / "templates" / "triton_python_model.py"


def test_two_conversions_publish_versions_1_and_2(published: Any) -> None:
    assert (published.first.version, published.second.version) == (1, 2)
    assert list_versions(published.repository) == [1, 2]
    model_dir = published.repository / "encoder"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.pbtxt"]
    for version in (1, 2):
        path = model_dir / str(version)
        verify_version(path)
        assert sorted(p.name for p in path.iterdir()) == [
            "__pycache__",
            "metadata.json",
            "model.onnx",
            "model.py",
            "tokenizer.json",
        ]
        assert (path / "model.py").read_text() == TEMPLATE.read_text()
        check_onnx_contract(path / "model.onnx", 32)


def test_metadata(published: Any, tiny_export_dir: Path) -> None:
    meta = read_metadata(published.repository / "encoder" / "1")
    assert (meta.dim, meta.max_length) == (32, 64)
    assert (meta.input_name, meta.output_name) == ("input_ids", "embedding")
    assert meta.source == {
        "saved_model": str(tiny_export_dir.resolve()),
        "digest": saved_model_digest(tiny_export_dir),
    }
    assert meta.parity["tolerance"] == 1e-4
    cases = meta.parity["cases"]
    assert len(cases) == 2 * 3 * 2  # kinds × batch sizes × lengths {8, 64}
    assert {(c["kind"], c["batch"], c["length"]) for c in cases} == {
        (k, b, n) for k in ("random", "real") for b in (1, 8, 64) for n in (8, 64)
    }
    assert meta.parity["max_abs_diff"] == max(c["max_abs_diff"] for c in cases)
    assert 0 <= meta.parity["max_abs_diff"] <= 1e-4
    created = datetime.fromisoformat(meta.created_at)
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created).total_seconds()) < 3600
    assert meta.extra["onnx_opset"] == 18
    assert meta.extra["converted_for_backend"] == "python"


def test_config_follows_the_latest_conversion(published: Any) -> None:
    config = published.repository / "encoder" / "config.pbtxt"
    text = config.read_text()
    assert 'backend: "onnxruntime"' in text and "dims: [ 32 ]" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o644


def test_progress_lines(published: Any) -> None:
    lines = published.lines
    assert lines[:3] == ["converting to ONNX (opset 18)…", "checker ok", "ORT ok"]
    assert any(
        line.startswith("parity max abs diff ") and "over 12 cases" in line for line in lines
    )
    path = published.repository / "encoder" / "2"
    assert f"published version 2 at {path}" in lines
    assert any(line.startswith("model size ") and line.endswith(" MB") for line in lines)


def assert_nothing_left(repository: Path, versions: list[int], tmp_root: Path) -> None:
    assert list_versions(repository) == versions
    model_dir = repository / "encoder"
    if model_dir.exists():
        assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".tmp-")]
    # Only our own: TF's autograph also writes generated modules into tempfile's directory.
    assert list(tmp_root.glob("kbrec-convert-*")) == [], "conversion temp directory removed"


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's directory, so that leftovers of the conversion are visible."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_parity_failure_publishes_nothing(
    published: Any,
    tiny_export_dir: Path,
    tmp_path: Path,
    private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(published.repository, repository)
    config_before = (repository / "encoder" / "config.pbtxt").read_text()
    real_loader = convert_module.load_onnx_embedder

    def perturbed_loader(path: Path) -> Any:
        embed = real_loader(path)
        calls = iter(range(1000))

        # Cases run in a fixed order; the fifth is random batch 8 × length 8.
        def perturbed(ids: np.ndarray) -> np.ndarray:
            return embed(ids) + np.float32(1e-3 if next(calls) == 4 else 0.0)

        return perturbed

    monkeypatch.setattr(convert_module, "load_onnx_embedder", perturbed_loader)
    temp_seen: list[bool] = []  # the temp directory exists while converting, so the check bites
    with pytest.raises(ConversionError) as raised:
        convert(
            ConvertOptions(tiny_export_dir, repository),
            lambda _: temp_seen.append(bool(list(private_tmp.glob("kbrec-convert-*")))),
        )
    assert temp_seen and all(temp_seen)
    message = str(raised.value)
    assert message.startswith("parity failed: max abs diff 0.001 > tolerance 0.0001")
    assert "worst case: random batch 8 × length 8" in message
    assert_nothing_left(repository, [1, 2], private_tmp)
    assert (repository / "encoder" / "config.pbtxt").read_text() == config_before


def test_zero_tolerance_refuses(tiny_export_dir: Path, tmp_path: Path, private_tmp: Path) -> None:
    repository = tmp_path / "repo"
    with pytest.raises(ConversionError, match=r"parity failed: .* > tolerance 0 "):
        convert(ConvertOptions(tiny_export_dir, repository, tolerance=0.0), lambda _: None)
    assert_nothing_left(repository, [], private_tmp)
    assert not (repository / "encoder" / "config.pbtxt").exists()


def test_unconvertible_model_publishes_nothing(
    stand_in_export: Any, tmp_path: Path, private_tmp: Path
) -> None:
    repository = tmp_path / "repo"
    with pytest.raises(ConversionError, match=r"ONNX export failed .*Erfc"):
        convert(ConvertOptions(stand_in_export(use_erfc=True), repository), lambda _: None)
    assert not repository.exists()
    assert list(private_tmp.glob("kbrec-convert-*")) == []


def test_explicit_version_and_model_name(tiny_export_dir: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    options = ConvertOptions(tiny_export_dir, repository, model="kb-encoder", version=7)
    result = convert(options, lambda _: None)
    assert result.version == 7 and result.path == repository / "kb-encoder" / "7"
    assert list_versions(repository, "kb-encoder") == [7]
    assert 'name: "kb-encoder"' in (repository / "kb-encoder" / "config.pbtxt").read_text()
    assert result.model_bytes == (result.path / "model.onnx").stat().st_size
    assert json.loads((result.path / "metadata.json").read_text())["dim"] == 32
