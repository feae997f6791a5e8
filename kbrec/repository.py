"""The model repository contract (Triton's layout), shared by conversion and serving.

```
<repository>/<model>/config.pbtxt
<repository>/<model>/<version>/model.onnx, tokenizer.json, metadata.json
```

Versions are positive integers, named `[1-9][0-9]{0,9}` and at most `MAX_VERSION`;
other entries are ignored with a warning. A version directory is built under a
temporary name beside its final place and renamed into it, so readers never
see half a version. Readers trust a version only after `verify_version`: plain
files (no symbolic links, nothing outside the version directory), metadata of the
right types, files matching their recorded sha256, a tokenizer that pads with 0.
A loader reads the model through `ModelVersion.read_model`, which hashes the very
bytes it returns, so a file replaced after verification is refused, not loaded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from kbrec.tokenization import PAD_ID

log = logging.getLogger(__name__)

MODEL_NAME = "encoder"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.pbtxt"
TEMP_PREFIX = ".tmp-"
METADATA_FORMAT = 1
# ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
VERSION_NAME = re.compile(r"[1-9][0-9]{0,9}")
# The article stores keep version numbers in a 32-bit integer column.
MAX_VERSION = 2**31 - 1
METADATA_MAX_BYTES = 1 << 20
READ_CHUNK = 1 << 20
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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
        if type(data.get("format")) is not int or data["format"] != METADATA_FORMAT:
            raise RepositoryError(f"unsupported metadata format {shown(data.get('format'))}")
        try:
            meta = cls(**data)
        except TypeError as exc:
            raise RepositoryError(f"metadata fields: {exc}") from exc
        meta._check_types()
        return meta

    def _check_types(self) -> None:
        """JSON gives any type to any field: check each before anything uses it."""
        for name, minimum in (("dim", 1), ("max_length", 2)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise RepositoryError(
                    f"metadata {name} must be an integer >= {minimum}, got {shown(value)}"
                )
        for name in ("tokenizer_sha256", "model_sha256"):
            value = getattr(self, name)
            if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
                raise RepositoryError(
                    f"metadata {name} must be 64 lowercase hex digits, got {shown(value)}"
                )
        for name in ("input_name", "output_name", "created_at"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise RepositoryError(
                    f"metadata {name} must be a non-empty string, got {shown(value)}"
                )
        for name in ("source", "parity", "extra"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise RepositoryError(f"metadata {name} must be an object, got {shown(value)}")


def shown(value: object, limit: int = 40) -> str:
    """A value for an error message, cut short: reasons are stored and served."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_dir(repository: Path, model: str = MODEL_NAME) -> Path:
    return repository / model


def version_dir(repository: Path, version: int, model: str = MODEL_NAME) -> Path:
    return model_dir(repository, model) / str(version)


def parse_version(name: str) -> int | None:
    """The version number a directory name or path segment stands for, else None."""
    if not VERSION_NAME.fullmatch(name):
        return None
    number = int(name)
    return number if number <= MAX_VERSION else None


@dataclass(frozen=True)
class VersionEntries:
    """A model directory's entries: version numbers (ascending), and the names of other
    directories (not versions, not temporary: someone put them there)."""

    numbers: list[int]
    foreign: list[str]


def version_entries(repository: Path, model: str = MODEL_NAME) -> VersionEntries:
    root = model_dir(repository, model)
    if not root.is_dir():
        return VersionEntries([], [])
    numbers: list[int] = []
    foreign: list[str] = []
    for entry in root.iterdir():
        # A symlink is listed (and then rejected with a reason), whatever it points to.
        if not (entry.is_dir() or entry.is_symlink()) or entry.name.startswith(TEMP_PREFIX):
            continue
        number = parse_version(entry.name)
        if number is None:
            foreign.append(entry.name)
        else:
            numbers.append(number)
    return VersionEntries(sorted(numbers), sorted(foreign))


def warn_foreign(repository: Path, names: list[str]) -> None:
    for name in names:
        log.warning(
            "ignoring %s in %s: not a version (a number from 1 to %d, no leading zero)",
            ascii(name),
            model_dir(repository),
            MAX_VERSION,
        )


def list_versions(repository: Path, model: str = MODEL_NAME) -> list[int]:
    """Published version numbers, ascending; other directories are ignored with a
    warning, temporary ones silently."""
    entries = version_entries(repository, model)
    warn_foreign(repository, entries.foreign)
    return entries.numbers


@contextmanager
def _open_version_dir(path: Path) -> Iterator[int]:
    """A descriptor of the version directory itself, never of a symlink's target: files
    are then opened relative to it, so no path component can be swapped meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if path.is_symlink():
            raise RepositoryError(
                f"{path} is a symbolic link; versions must be real directories"
            ) from exc
        raise RepositoryError(f"{path} cannot be opened: {exc.strerror or exc}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _open_plain_file(dir_fd: int, path: Path) -> Iterator[int]:
    """A regular file directly in the version directory, not a symlink."""
    try:
        # O_NONBLOCK: a FIFO put there must not block the open; it is refused below.
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise RepositoryError(f"{path} is missing") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RepositoryError(
                f"{path} is a symbolic link; version files must be plain files"
            ) from exc
        raise RepositoryError(f"{path} cannot be opened: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RepositoryError(f"{path} is not a regular file")
        yield fd
    finally:
        os.close(fd)


def _read(fd: int, limit: int | None = None) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise RepositoryError(f"file larger than {limit} bytes")
    return data


def _hash(fd: int) -> str:
    digest = hashlib.sha256()
    with os.fdopen(os.dup(fd), "rb") as handle:
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise RepositoryError(
            f"{path} sha256 {actual[:12]}… does not match metadata {expected[:12]}…"
        )


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """A version file's bytes, read once and hashed: what is returned is what matched
    `expected_sha256` (a file replaced after verification is refused here)."""
    with _open_version_dir(path.parent) as dir_fd, _open_plain_file(dir_fd, path) as fd:
        data = _read(fd)
    _check_digest(path, hashlib.sha256(data).hexdigest(), expected_sha256)
    return data


def _read_metadata(dir_fd: int, path: Path) -> VersionMetadata:
    meta_path = path / METADATA_FILE
    with _open_plain_file(dir_fd, meta_path) as fd:
        try:
            data = _read(fd, METADATA_MAX_BYTES)
        except RepositoryError as exc:
            raise RepositoryError(f"{meta_path}: {exc}") from exc
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RepositoryError(f"{meta_path} is unreadable: {exc}") from exc
    return VersionMetadata.from_dict(parsed)


def read_metadata(path: Path) -> VersionMetadata:
    with _open_version_dir(path) as dir_fd:
        return _read_metadata(dir_fd, path)


def check_tokenizer(path: Path, data: bytes) -> None:
    """The tokenizer parses and pads with PAD_ID: the encoder masks id 0 as padding, so
    a tokenizer that pads with another id would have padding read as text."""
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # the tokenizers library raises plain Exception
        raise RepositoryError(f"{path} is not a tokenizer: {exc}") from exc
    pad = tokenizer.token_to_id("[PAD]")
    if pad is not None and pad != PAD_ID:
        raise RepositoryError(f"{path}: [PAD] has id {pad}; the encoder expects {PAD_ID}")
    padding = tokenizer.padding
    if padding is not None and padding.get("pad_id") != PAD_ID:
        raise RepositoryError(
            f"{path}: pads with id {padding.get('pad_id')!r}; the encoder expects {PAD_ID}"
        )


def verify_version(path: Path) -> VersionMetadata:
    """Metadata parses and has the right types, the model and tokenizer files are plain
    files matching their recorded sha256, and the tokenizer pads with PAD_ID."""
    with _open_version_dir(path) as dir_fd:
        meta = _read_metadata(dir_fd, path)
        model_path = path / MODEL_FILE
        with _open_plain_file(dir_fd, model_path) as fd:
            _check_digest(model_path, _hash(fd), meta.model_sha256)
        tokenizer_path = path / TOKENIZER_FILE
        with _open_plain_file(dir_fd, tokenizer_path) as fd:
            tokenizer = _read(fd)
    _check_digest(tokenizer_path, hashlib.sha256(tokenizer).hexdigest(), meta.tokenizer_sha256)
    check_tokenizer(tokenizer_path, tokenizer)
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

    def read_model(self) -> bytes:
        """model.onnx as verified: the returned bytes are the ones that matched the
        recorded sha256 (`RepositoryError` if the file changed). Load from these, not by
        path, so nothing can swap the file between the check and the load."""
        return read_verified(self.path / MODEL_FILE, self.metadata.model_sha256)

    def read_tokenizer(self) -> bytes:
        """tokenizer.json as verified (as `read_model`)."""
        return read_verified(self.tokenizer_path, self.metadata.tokenizer_sha256)


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
    if version is not None and not 0 < version <= MAX_VERSION:
        raise RepositoryError(f"version must be an integer from 1 to {MAX_VERSION}, got {version}")
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
