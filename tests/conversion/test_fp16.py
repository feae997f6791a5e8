"""`kbrec convert --fp16`: model_fp16.onnx next to the FP32 model, with its contract, its
agreement with FP32 on the corpus (the gate), and GPU Triton's config serving it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cli.main import main
from conversion import fp16
from conversion.errors import ConversionError
from conversion.fp16 import FP16_MODEL_FILE, compare_fp16, require_fp16
from conversion.source import read_export_dir
from conversion.triton_config import render_config
from kbrec.repository import list_versions
from kbrec.tokenization import sha256_file


def convert(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["convert", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def io_of(path: Path) -> list[tuple[str, str]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [(n.name, n.type) for n in [*session.get_inputs(), *session.get_outputs()]]


def embed(path: Path, token_ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"input_ids": token_ids})[0]


def test_an_fp16_version_keeps_the_contract_and_records_its_check(
    tiny_export_dir: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    status, out, err = convert(
        capsys,
        "--saved-model", str(tiny_export_dir),
        "--repository", str(repository),
        "--fp16", "--corpus", str(tiny_corpus),
    )  # fmt: skip
    assert status == 0, err
    assert "FP16 vs FP32 on 36 articles" in out and "FP16 model size" in out
    version = repository / "encoder" / "1"
    full, half = version / "model.onnx", version / FP16_MODEL_FILE
    assert (
        io_of(half)
        == io_of(full)
        == [("input_ids", "tensor(int32)"), ("embedding", "tensor(float)")]
    )
    assert half.stat().st_size < 0.6 * full.stat().st_size  # FP16 weights inside
    ids = np.random.default_rng(0).integers(1, 500, size=(4, 20)).astype(np.int32)
    a, b = embed(full, ids), embed(half, ids)
    assert b.dtype == np.float32
    cosine = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.999
    check = json.loads((version / "metadata.json").read_text())["extra"]["fp16"]
    assert check["sha256"] == sha256_file(half)
    assert check["min_cosine"] >= 0.999 and check["top5_agreement"] >= 0.99
    assert check["queries"] > 0
    config = (repository / "encoder" / "config.pbtxt").read_text()
    assert f'default_model_filename: "{FP16_MODEL_FILE}"' in config


def test_the_config_keeps_fp32_while_a_loaded_version_has_no_fp16_model(
    tiny_model_repository: Path,
    tiny_export_dir: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(tiny_model_repository, repository)  # version 1: FP32 only
    status, out, err = convert(
        capsys,
        "--saved-model", str(tiny_export_dir),
        "--repository", str(repository),
        "--fp16", "--corpus", str(tiny_corpus),
    )  # fmt: skip
    assert status == 0, err
    assert (repository / "encoder" / "2" / FP16_MODEL_FILE).is_file()
    assert "config.pbtxt keeps model.onnx: version(s) [1] have no model_fp16.onnx" in out
    assert "default_model_filename" not in (repository / "encoder" / "config.pbtxt").read_text()


def test_a_disagreeing_fp16_model_publishes_nothing(
    tiny_export_dir: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fp16, "MIN_COSINE", 1.5)  # no model can pass: the refusal path
    repository = tmp_path / "repo"
    status, _, err = convert(
        capsys,
        "--saved-model", str(tiny_export_dir),
        "--repository", str(repository),
        "--fp16", "--corpus", str(tiny_corpus),
    )  # fmt: skip
    assert status == 2
    assert err.startswith("kbrec convert: error: FP16 model refused: FP16 vs FP32 on 36 articles")
    assert list_versions(repository) == []


def test_a_missing_corpus_is_refused_before_converting(
    tiny_export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    args = ["--saved-model", str(tiny_export_dir), "--repository", str(repository)]
    status, out, err = convert(capsys, *args, "--fp16", "--corpus", str(tmp_path / "none"))
    assert status == 2
    assert "the FP16 check needs" in err and "articles.jsonl" in err
    assert out == "" and not repository.exists()


def hashed_embedder(dim: int, noise: float, seed: int) -> fp16.Embed:
    table = np.random.default_rng(0).standard_normal((5000, dim)).astype(np.float32)
    jitter = np.random.default_rng(seed)

    def embed(token_ids: np.ndarray) -> np.ndarray:
        pooled = (table[token_ids % len(table)] * (token_ids > 0)[..., None]).sum(axis=1)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled + noise * jitter.standard_normal(pooled.shape).astype(np.float32)

    return embed


def test_the_gate_passes_rounding_and_refuses_a_different_model(
    tiny_export_dir: Path, tiny_corpus: Path
) -> None:
    export = read_export_dir(tiny_export_dir)
    reference = hashed_embedder(32, 0.0, 0)

    def rounded(token_ids: np.ndarray) -> np.ndarray:
        return reference(token_ids).astype(np.float16).astype(np.float32)

    args = (tiny_corpus, export.tokenizer, export.max_length, lambda _: None)
    close = compare_fp16(reference, rounded, *args)
    assert close.passed and close.min_cosine > 0.9999 and close.top5_agreement == 1.0
    require_fp16(close)
    far = compare_fp16(reference, hashed_embedder(32, 0.5, 1), *args)
    assert not far.passed and far.min_cosine < 0.999
    with pytest.raises(ConversionError, match="FP16 model refused"):
        require_fp16(far)


def test_gpu_config_names_the_fp16_model() -> None:
    text = render_config(
        model="encoder", backend="onnxruntime", dim=8, max_length=16, model_filename="m.onnx"
    )
    assert 'default_model_filename: "m.onnx"' in text
    with pytest.raises(ValueError, match="onnxruntime backend only"):
        render_config(model="encoder", backend="python", dim=8, max_length=16, model_filename="m")
