"""Which versions the model repository holds, and which one may be served.

A version is servable once `kbrec.repository.verify_version` accepts it (metadata
parses, files match their checksums); invalid versions are reported with a
logged reason and never activated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kbrec.repository import (
    ModelVersion,
    RepositoryError,
    list_versions,
    verify_version,
    version_dir,
)

log = logging.getLogger(__name__)


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


def verify_status(repository: Path, number: int) -> VersionStatus | None:
    """Verify one version directory (reads and hashes its files: call off the event
    loop); None if there is no such directory."""
    path = version_dir(repository, number)
    if not path.is_dir():
        return None
    try:
        metadata = verify_version(path)
    except RepositoryError as exc:
        log.warning("model version %d is invalid: %s", number, exc)
        return VersionStatus(number, None, str(exc))
    return VersionStatus(number, ModelVersion(number, path, metadata))


def scan_repository(repository: Path) -> RepositoryScan:
    """Every published version with its verification outcome, newest last."""
    statuses = (verify_status(repository, number) for number in list_versions(repository))
    return RepositoryScan(tuple(status for status in statuses if status is not None))
