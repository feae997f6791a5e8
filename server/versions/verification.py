"""Which versions the model repository holds, and which one may be served.

A version is servable once `kbrec.repository.verify_version` accepts it (plain
files, no symbolic links; metadata of the right types; files matching their
checksums; a tokenizer that pads with 0); invalid versions are reported with a
logged reason and never activated. Whatever goes wrong while verifying one
directory makes that version invalid with the reason: nothing raised here can
stop a scan or the repository watch.

The embedded backend loads the model from the bytes it hashed again
(`ModelVersion.read_model`). Triton reads the version's files itself: they are
verified before `BackendProvider.hold` asks Triton to load them, but a file
swapped between that check and Triton's read is not caught here (Triton's
repository must be writable only by whoever publishes versions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kbrec.repository import (
    ModelVersion,
    RepositoryError,
    verify_version,
    version_dir,
    version_entries,
    warn_foreign,
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
    foreign: tuple[str, ...] = ()  # directories that are not versions (ignored, warned)

    @property
    def newest_valid(self) -> ModelVersion | None:
        valid = [status.version for status in self.statuses if status.version is not None]
        return valid[-1] if valid else None


def verify_status(repository: Path, number: int) -> VersionStatus | None:
    """Verify one version directory (reads and hashes its files: call off the event
    loop); None if there is no such directory."""
    path = version_dir(repository, number)
    try:
        if not (path.is_dir() or path.is_symlink()):
            return None
        metadata = verify_version(path)
    except RepositoryError as exc:
        return invalid(number, str(exc))
    except Exception as exc:  # anything else in a version's files: that version only
        log.exception("verifying model version %d", number)
        return invalid(number, f"cannot be verified: {type(exc).__name__}: {str(exc)[:200]}")
    return VersionStatus(number, ModelVersion(number, path, metadata))


def invalid(number: int, reason: str) -> VersionStatus:
    log.warning("model version %d is invalid: %s", number, reason)
    return VersionStatus(number, None, reason)


def scan_repository(repository: Path) -> RepositoryScan:
    """Every published version with its verification outcome, newest last."""
    entries = version_entries(repository)
    warn_foreign(repository, entries.foreign)
    statuses = (verify_status(repository, number) for number in entries.numbers)
    return RepositoryScan(
        tuple(status for status in statuses if status is not None), tuple(entries.foreign)
    )
