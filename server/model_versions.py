"""Which versions the model repository holds, and which one may be served.

A version is servable once `kbrec.repository.verify_version` accepts it (metadata
parses, files match their checksums); invalid versions are skipped with a logged
reason and never activated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kbrec.repository import (
    TOKENIZER_FILE,
    RepositoryError,
    VersionMetadata,
    list_versions,
    verify_version,
    version_dir,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """A verified version directory."""

    number: int
    path: Path
    metadata: VersionMetadata

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE


@dataclass(frozen=True)
class VersionStatus:
    number: int
    version: ModelVersion | None  # None when invalid
    error: str | None = None


@dataclass(frozen=True)
class RepositoryScan:
    """Every published version, newest last, with its verification outcome."""

    statuses: tuple[VersionStatus, ...]

    @property
    def newest_valid(self) -> ModelVersion | None:
        valid = [status.version for status in self.statuses if status.version is not None]
        return valid[-1] if valid else None


def scan_repository(repository: Path) -> RepositoryScan:
    """Verify every published version (reads and hashes the files: call off the event loop)."""
    statuses = []
    for number in list_versions(repository):
        path = version_dir(repository, number)
        try:
            metadata = verify_version(path)
        except RepositoryError as exc:
            log.warning("skipping model version %d: %s", number, exc)
            statuses.append(VersionStatus(number, None, str(exc)))
            continue
        statuses.append(VersionStatus(number, ModelVersion(number, path, metadata)))
    return RepositoryScan(tuple(statuses))
