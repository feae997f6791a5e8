"""The model repository contract (Triton's layout), shared by conversion and serving.

```
<repository>/<model>/config.pbtxt
<repository>/<model>/<version>/model.onnx, tokenizer.json, metadata.json
```

Versions are positive integers. A version directory is built under a
temporary name beside its final place and renamed into it, so readers never
see half a version. Readers trust a version only after `verify_version`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbrec.tokenization import sha256_file

MODEL_NAME = "encoder"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.pbtxt"
TEMP_PREFIX = ".tmp-"
METADATA_FORMAT = 1


class RepositoryError(Exception):
    """A repository or version that cannot be trusted or written; the message says why."""


@dataclass(frozen=True)
class VersionMetadata:
    """What a server needs to trust a version (metadata.json)."""

    dim: int
    max_length: int
    tokenizer_sha256: str
    model_sha256: str
    source: dict[str, Any]  # {"saved_model": path, "digest": sha256 of the SavedModel files}
    parity: dict[str, Any]  # {"max_abs_diff": float, "tolerance": float, "cases": [...]}
    created_at: str  # ISO 8601, UTC
    input_name: str = "input_ids"
    output_name: str = "embedding"
    format: int = METADATA_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: object) -> VersionMetadata:
        if not isinstance(data, dict):
            raise RepositoryError("metadata is not a JSON object")
        if data.get("format") != METADATA_FORMAT:
            raise RepositoryError(f"unsupported metadata format {data.get('format')!r}")
        try:
            meta = cls(**data)
        except TypeError as exc:
            raise RepositoryError(f"metadata fields: {exc}") from exc
        for name in ("dim", "max_length"):
            value = getattr(meta, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RepositoryError(f"metadata {name} must be a positive integer, got {value!r}")
        return meta


def model_dir(repository: Path, model: str = MODEL_NAME) -> Path:
    return repository / model


def version_dir(repository: Path, version: int, model: str = MODEL_NAME) -> Path:
    return model_dir(repository, model) / str(version)


def list_versions(repository: Path, model: str = MODEL_NAME) -> list[int]:
    """Published version numbers, ascending; temporary and foreign entries are ignored."""
    root = model_dir(repository, model)
    if not root.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in root.iterdir()
        if entry.is_dir() and entry.name.isdigit() and int(entry.name) > 0
    )


def read_metadata(path: Path) -> VersionMetadata:
    meta_path = path / METADATA_FILE
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RepositoryError(f"{meta_path} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RepositoryError(f"{meta_path} is unreadable: {exc}") from exc
    return VersionMetadata.from_dict(data)


def verify_version(path: Path) -> VersionMetadata:
    """Metadata parses and the model and tokenizer files match their recorded sha256."""
    meta = read_metadata(path)
    expected_digests = {MODEL_FILE: meta.model_sha256, TOKENIZER_FILE: meta.tokenizer_sha256}
    for name, expected in expected_digests.items():
        file = path / name
        if not file.is_file():
            raise RepositoryError(f"{file} is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise RepositoryError(
                f"{file} sha256 {actual[:12]}… does not match metadata {expected[:12]}…"
            )
    return meta


@dataclass(frozen=True)
class ModelVersion:
    """A version directory that `verify_version` accepted: what a server may load."""

    number: int
    path: Path
    metadata: VersionMetadata

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def model_sha256(self) -> str:
        """Which model file this is: a record of the version names it, a reused number
        with other files does not match."""
        return self.metadata.model_sha256


def publish_version(
    repository: Path,
    build: Callable[[Path], None],
    model: str = MODEL_NAME,
    version: int | None = None,
) -> int:
    """Build a version in a temporary directory, then rename it into place.

    `build(tmp_dir)` writes the files; if it raises, the temporary directory is
    removed and nothing is published. Without `version`, the next free number
    is used. Returns the published version number.
    """
    if repository.exists() and not repository.is_dir():
        raise RepositoryError(f"repository {repository} is a file, not a directory")
    root = model_dir(repository, model)
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"{root} is a file, not a directory")
    root.mkdir(parents=True, exist_ok=True)
    if version is not None and version <= 0:
        raise RepositoryError(f"version must be a positive integer, got {version}")
    if version is None:
        version = max(list_versions(repository, model), default=0) + 1
    target_version = version
    target = root / str(target_version)
    if target.exists():
        raise RepositoryError(f"version {target_version} already exists at {target}")
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)
        # os.rename onto an existing non-empty directory fails, so a concurrent
        # publisher of the same number loses cleanly instead of merging.
        os.rename(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.exists():
            raise RepositoryError(f"version {target_version} already exists at {target}") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target_version
