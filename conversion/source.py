"""The export directory that `kbrec train` writes, checked before anything is converted.

```
<dir>/saved_model.pb, variables/   TF SavedModel, serving_default: input_ids → {"embedding"}
<dir>/tokenizer.json               the tokenizer the model was trained with
<dir>/encoder_config.json          at least "max_length" and "dim"
```
These checks need no TensorFlow, so a wrong path fails in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from conversion.errors import ConversionError
from kbrec.tokenization import TextTokenizer, sha256_file

SAVED_MODEL_FILE = "saved_model.pb"
TOKENIZER_FILE = "tokenizer.json"
ENCODER_CONFIG_FILE = "encoder_config.json"
# What tf.saved_model.save writes; the digest covers these, not the sibling files.
SAVED_MODEL_PARTS = (SAVED_MODEL_FILE, "fingerprint.pb", "variables", "assets", "assets.extra")


@dataclass(frozen=True)
class ExportDir:
    path: Path  # absolute
    tokenizer: Path
    max_length: int
    dim: int


def read_export_dir(path: Path) -> ExportDir:
    """Check the layout and encoder_config.json; raise ConversionError naming what is wrong."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise ConversionError(f"saved model directory {path} does not exist")
    if not path.is_dir():
        raise ConversionError(f"saved model path {path} is a file, not a directory")
    if not (path / SAVED_MODEL_FILE).is_file():
        raise ConversionError(f"{path} is not a TF SavedModel (no {SAVED_MODEL_FILE})")
    for name in (TOKENIZER_FILE, ENCODER_CONFIG_FILE):
        if not (path / name).is_file():
            raise ConversionError(f"{path} has no {name} (expected beside the SavedModel)")
    max_length, dim = _read_encoder_config(path / ENCODER_CONFIG_FILE)
    tokenizer = path / TOKENIZER_FILE
    try:
        TextTokenizer(tokenizer, max_length)
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise ConversionError(f"{tokenizer} cannot be loaded: {exc}") from exc
    return ExportDir(path=path, tokenizer=tokenizer, max_length=max_length, dim=dim)


def _read_encoder_config(path: Path) -> tuple[int, int]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise ConversionError(f"{path} is not a JSON object")
    # training.encoder.EncoderConfig serialises its fields; dim is hidden_size there.
    values = {"max_length": config.get("max_length"), "dim": config.get("dim")}
    if values["dim"] is None:
        values["dim"] = config.get("hidden_size")
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConversionError(f"{path}: {name} must be a positive integer, got {value!r}")
    if values["max_length"] < 2:
        raise ConversionError(f"{path}: max_length must be >= 2, got {values['max_length']}")
    return values["max_length"], values["dim"]


def saved_model_digest(path: Path) -> str:
    """sha256 over the SavedModel's files in sorted path order (path and content of each)."""
    files: list[Path] = []
    for part in SAVED_MODEL_PARTS:
        entry = path / part
        if entry.is_file():
            files.append(entry)
        elif entry.is_dir():
            files.extend(f for f in entry.rglob("*") if f.is_file())
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.relative_to(path).as_posix()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()
