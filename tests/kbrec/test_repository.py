"""The model repository contract against what a directory may really hold: odd names,
metadata of the wrong types, a tokenizer that pads with another id, symbolic links,
files that change after they were checked. Each is a `RepositoryError` with the
reason, never another exception and never a hang."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from kbrec.repository import (
    MAX_VERSION,
    METADATA_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ModelVersion,
    RepositoryError,
    list_versions,
    model_dir,
    parse_version,
    publish_version,
    verify_version,
    version_entries,
)

MODEL_BYTES = b"stands in for model.onnx: verification only hashes it"


def write_tokenizer(path: Path, vocab: dict[str, int] | None = None, pad_id: int | None = None):
    tokenizer = Tokenizer(WordLevel(vocab or {"[PAD]": 0, "[UNK]": 1, "word": 2}, "[UNK]"))
    if pad_id is not None:
        tokenizer.enable_padding(pad_id=pad_id, pad_token="[UNK]")
    tokenizer.save(str(path))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metadata_for(out: Path) -> dict[str, Any]:
    return {
        "dim": 8,
        "max_length": 16,
        "tokenizer_sha256": sha256(out / TOKENIZER_FILE),
        "model_sha256": sha256(out / MODEL_FILE),
        "source": {"saved_model": "tests", "digest": "0" * 64},
        "parity": {"max_abs_diff": 0.0, "tolerance": 1e-4, "cases": []},
        "created_at": "2026-11-27T00:00:00+00:00",
        "input_name": "input_ids",
        "output_name": "embedding",
        "format": 1,
        "extra": {},
    }


def build(
    out: Path,
    change: Callable[[dict[str, Any]], None] = lambda meta: None,
    tokenizer: Callable[[Path], None] = write_tokenizer,
) -> None:
    """A version's files (metadata hashing the real files), then `change` on its metadata."""
    (out / MODEL_FILE).write_bytes(MODEL_BYTES)
    tokenizer(out / TOKENIZER_FILE)
    metadata = metadata_for(out)
    change(metadata)
    (out / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")


@pytest.fixture
def version_path(tmp_path: Path) -> Path:
    number = publish_version(tmp_path / "repository", build)
    return model_dir(tmp_path / "repository") / str(number)


# --- version names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("1", 1),
        ("42", 42),
        (str(MAX_VERSION), MAX_VERSION),
        (str(MAX_VERSION + 1), None),  # more than the stores' 32-bit column
        ("9999999999", None),
        ("12345678901", None),  # eleven digits
        ("1" * 4301, None),  # past Python's int() digit limit: never parsed
        ("0", None),
        ("0123", None),
        ("²", None),  # str.isdigit() says yes, int() says no
        ("١٢", None),  # Arabic-Indic digits: int() would accept them
        ("1\n", None),
        (" 1", None),
        ("+1", None),
        ("-1", None),
        ("", None),
        ("1e3", None),
    ],
)
def test_version_names(name: str, number: int | None) -> None:
    assert parse_version(name) == number


def test_directories_not_named_as_versions_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = model_dir(tmp_path)
    for name in ("3", "10", "²", "0123", "0", "latest", ".tmp-abc", "1" * 11):
        (root / name).mkdir(parents=True)
    (root / "config.pbtxt").write_text("", encoding="utf-8")  # a file, not a candidate
    (root / "7").write_text("", encoding="utf-8")  # a file named like a version
    with caplog.at_level(logging.WARNING, logger="kbrec.repository"):
        assert list_versions(tmp_path) == [3, 10]
    warned = sorted(r.getMessage() for r in caplog.records)
    assert len(warned) == 5, warned
    for name in ("'\\xb2'", "'0123'", "'0'", "'latest'", "'11111111111'"):
        assert any(name in message for message in warned), (name, warned)
    assert not any(".tmp-" in message for message in warned)
    assert version_entries(tmp_path).foreign == sorted(["²", "0123", "0", "latest", "1" * 11])


def test_a_version_number_past_the_limit_is_not_published(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="from 1 to"):
        publish_version(tmp_path, build, version=MAX_VERSION + 1)
    assert list_versions(tmp_path) == []


# --- metadata ------------------------------------------------------------------------


def test_a_complete_version_verifies(version_path: Path) -> None:
    meta = verify_version(version_path)
    assert (meta.dim, meta.max_length, meta.model_sha256) == (
        8,
        16,
        sha256(version_path / MODEL_FILE),
    )


def set_field(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta.__setitem__(name, value)


def drop_field(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta.pop(name)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (set_field("model_sha256", 12345), "model_sha256 must be 64 lowercase hex"),
        (set_field("model_sha256", None), "model_sha256 must be 64 lowercase hex"),
        (set_field("model_sha256", ["a" * 64]), "model_sha256 must be 64 lowercase hex"),
        (set_field("model_sha256", "A" * 64), "model_sha256 must be 64 lowercase hex"),
        (set_field("tokenizer_sha256", {"sha": 1}), "tokenizer_sha256 must be 64"),
        (set_field("dim", "8"), "dim must be an integer"),
        (set_field("dim", True), "dim must be an integer"),
        (set_field("dim", 8.0), "dim must be an integer"),
        (set_field("dim", 0), "dim must be an integer >= 1"),
        (set_field("max_length", 1), "max_length must be an integer >= 2"),
        (set_field("input_name", 3), "input_name must be a non-empty string"),
        (set_field("output_name", ""), "output_name must be a non-empty string"),
        (set_field("created_at", None), "created_at must be a non-empty string"),
        (set_field("source", "tests"), "source must be an object"),
        (set_field("parity", []), "parity must be an object"),
        (set_field("extra", None), "extra must be an object"),
        (set_field("format", "1"), "unsupported metadata format"),
        (set_field("format", True), "unsupported metadata format"),
        (set_field("format", 2), "unsupported metadata format"),
        (set_field("surprise", 1), "unexpected keyword argument 'surprise'"),
        (drop_field("model_sha256"), "missing 1 required positional argument: 'model_sha256'"),
        (drop_field("dim"), "missing 1 required positional argument: 'dim'"),
    ],
)
def test_metadata_of_the_wrong_type_or_shape_makes_the_version_invalid(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    number = publish_version(tmp_path, lambda out: build(out, change))
    with pytest.raises(RepositoryError, match=reason):
        verify_version(model_dir(tmp_path) / str(number))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b"{", "unreadable"),
        (b"\xff\xfe", "unreadable"),
        (b"[" * 100_000, "unreadable"),  # nesting deeper than the parser's recursion
        (b'{"dim": 1' + b"0" * 5000 + b"}", "unreadable"),  # past int()'s digit limit
        (b" " * (2 << 20), "larger than"),
    ],
)
def test_unreadable_metadata_makes_the_version_invalid(
    version_path: Path, content: bytes, reason: str
) -> None:
    (version_path / METADATA_FILE).write_bytes(content)
    with pytest.raises(RepositoryError, match=reason):
        verify_version(version_path)


def test_long_values_are_cut_short_in_the_reason(tmp_path: Path) -> None:
    number = publish_version(tmp_path, lambda out: build(out, set_field("dim", "x" * 10_000)))
    with pytest.raises(RepositoryError) as caught:
        verify_version(model_dir(tmp_path) / str(number))
    assert len(str(caught.value)) < 200


# --- the tokenizer -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokenizer", "reason"),
    [
        (lambda path: write_tokenizer(path, {"[UNK]": 0, "[PAD]": 5}), r"\[PAD\] has id 5"),
        (lambda path: write_tokenizer(path, pad_id=1), "pads with id 1"),
        (lambda path: path.write_text("{}", encoding="utf-8"), "not a tokenizer"),
        (lambda path: path.write_bytes(b"\xff"), "not a tokenizer"),
    ],
)
def test_a_tokenizer_that_does_not_pad_with_0_makes_the_version_invalid(
    tmp_path: Path, tokenizer: Callable[[Path], None], reason: str
) -> None:
    number = publish_version(tmp_path, lambda out: build(out, tokenizer=tokenizer))
    with pytest.raises(RepositoryError, match=reason):
        verify_version(model_dir(tmp_path) / str(number))


def test_a_tokenizer_without_a_pad_token_that_pads_with_0_is_fine(tmp_path: Path) -> None:
    def tokenizer(path: Path) -> None:
        write_tokenizer(path, {"<pad>": 0, "[UNK]": 1}, pad_id=0)

    number = publish_version(tmp_path, lambda out: build(out, tokenizer=tokenizer))
    verify_version(model_dir(tmp_path) / str(number))


# --- files: plain files of the version directory ---------------------------------------


@pytest.mark.parametrize("name", [MODEL_FILE, TOKENIZER_FILE, METADATA_FILE])
def test_a_symlinked_file_makes_the_version_invalid(
    version_path: Path, tmp_path: Path, name: str
) -> None:
    """Even to a copy with the very same bytes: the checksum matches, the link does not."""
    outside = tmp_path / f"outside-{name}"
    shutil.copy(version_path / name, outside)
    (version_path / name).unlink()
    (version_path / name).symlink_to(outside)
    with pytest.raises(RepositoryError, match=f"{name} is a symbolic link"):
        verify_version(version_path)


def test_a_symlinked_version_directory_is_listed_and_invalid(
    version_path: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(version_path, elsewhere)
    link = version_path.parent / "2"
    link.symlink_to(elsewhere)
    assert list_versions(tmp_path / "repository") == [1, 2]
    with pytest.raises(RepositoryError, match="is a symbolic link"):
        verify_version(link)
    dangling = version_path.parent / "3"
    dangling.symlink_to(tmp_path / "nothing")
    assert list_versions(tmp_path / "repository") == [1, 2, 3]
    with pytest.raises(RepositoryError, match="is a symbolic link"):
        verify_version(dangling)


def test_a_model_file_that_is_a_fifo_is_refused_without_blocking(version_path: Path) -> None:
    (version_path / MODEL_FILE).unlink()
    os.mkfifo(version_path / MODEL_FILE)
    with pytest.raises(RepositoryError, match="not a regular file"):
        verify_version(version_path)


def test_a_missing_file_makes_the_version_invalid(version_path: Path) -> None:
    (version_path / TOKENIZER_FILE).unlink()
    with pytest.raises(RepositoryError, match=f"{TOKENIZER_FILE} is missing"):
        verify_version(version_path)


def test_the_model_is_read_as_verified_or_not_at_all(version_path: Path) -> None:
    version = ModelVersion(1, version_path, verify_version(version_path))
    assert version.read_model() == MODEL_BYTES
    (version_path / MODEL_FILE).write_bytes(b"another model, put there after the check")
    with pytest.raises(RepositoryError, match="does not match metadata"):
        version.read_model()
    (version_path / MODEL_FILE).unlink()
    (version_path / MODEL_FILE).symlink_to(version_path / METADATA_FILE)
    with pytest.raises(RepositoryError, match="symbolic link"):
        version.read_model()
