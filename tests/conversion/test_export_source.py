"""conversion.source: the export directory layout and the SavedModel digest (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conversion.errors import ConversionError
from conversion.source import read_export_dir, saved_model_digest


def fake_export(root: Path, tokenizer_file: Path, config: object | None = None) -> Path:
    """The file layout only: enough for everything checked before TensorFlow loads."""
    root.mkdir()
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables").mkdir()
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights")
    (root / "tokenizer.json").write_bytes(tokenizer_file.read_bytes())
    config = {"max_length": 16, "dim": 8} if config is None else config
    (root / "encoder_config.json").write_text(json.dumps(config), encoding="utf-8")
    return root


def test_reads_a_complete_export(tmp_path: Path, tokenizer_file: Path) -> None:
    export = read_export_dir(fake_export(tmp_path / "export", tokenizer_file))
    assert export.path == (tmp_path / "export").resolve()
    assert export.path.is_absolute()
    assert (export.max_length, export.dim) == (16, 8)
    assert export.tokenizer == export.path / "tokenizer.json"


def test_dim_falls_back_to_hidden_size(tmp_path: Path, tokenizer_file: Path) -> None:
    """training.encoder.EncoderConfig.to_dict() has hidden_size, not dim."""
    config = {"max_length": 16, "hidden_size": 24, "num_layers": 2}
    export = read_export_dir(fake_export(tmp_path / "export", tokenizer_file, config))
    assert export.dim == 24


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda root: root.rename(root.with_name("gone")), "does not exist"),
        (lambda root: (root / "saved_model.pb").unlink(), "is not a TF SavedModel"),
        (lambda root: (root / "tokenizer.json").unlink(), "has no tokenizer.json"),
        (lambda root: (root / "encoder_config.json").unlink(), "has no encoder_config.json"),
        (lambda root: (root / "encoder_config.json").write_text("{"), "is unreadable"),
        (lambda root: (root / "encoder_config.json").write_text("[1]"), "not a JSON object"),
        (
            lambda root: (root / "encoder_config.json").write_text('{"max_length": 16}'),
            "dim must be a positive integer, got None",
        ),
        (
            lambda root: (root / "encoder_config.json").write_text(
                '{"max_length": true, "dim": 8}'
            ),
            "max_length must be a positive integer, got True",
        ),
        (
            lambda root: (root / "tokenizer.json").write_text("{}"),
            "tokenizer.json cannot be loaded",
        ),
    ],
)
def test_rejects_a_broken_export(
    tmp_path: Path, tokenizer_file: Path, arrange: object, message: str
) -> None:
    root = fake_export(tmp_path / "export", tokenizer_file)
    arrange(root)
    with pytest.raises(ConversionError, match=message):
        read_export_dir(root)


def test_rejects_a_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(ConversionError, match="is a file, not a directory"):
        read_export_dir(path)


def test_digest_covers_the_savedmodel_files_only(tmp_path: Path, tokenizer_file: Path) -> None:
    root = fake_export(tmp_path / "export", tokenizer_file)
    first = saved_model_digest(root)
    assert first == saved_model_digest(root)
    (root / "metrics.json").write_text("{}")
    (root / "tokenizer.json").write_text("changed")
    assert saved_model_digest(root) == first
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"other weights")
    assert saved_model_digest(root) != first


def test_digest_depends_on_file_names(tmp_path: Path, tokenizer_file: Path) -> None:
    root = fake_export(tmp_path / "export", tokenizer_file)
    first = saved_model_digest(root)
    (root / "variables" / "variables.index").rename(root / "variables" / "renamed.index")
    assert saved_model_digest(root) != first
