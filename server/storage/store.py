"""The article store interface: articles and their vectors, durable on acknowledgement.

Vectors are keyed by (account, article, model version): a vector is only ever
compared with vectors of its own version. Writing an article replaces its text
and drops every vector of the old text, in every version, in the same
transaction as the new vectors. SQLite implements it now (`sqlite_store`); a
PostgreSQL store for several replicas comes later.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from kbrec.records import Article


def utc_now() -> str:
    """The store's timestamps: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StoreError(Exception):
    """The store could not read or write (disk, corruption, locking); not the caller's fault."""


@dataclass(frozen=True)
class StoredArticle:
    article: Article
    updated_at: str  # ISO 8601, UTC
    # Bumped by every write of the article: a vector computed from revision r is stored
    # only while the article is still at r (a background re-embedding never overwrites
    # a newer text's vector with an older text's).
    revision: int = 0


@dataclass(frozen=True)
class ArticleWrite:
    """An article and its vectors for each model version being served."""

    stored: StoredArticle
    embeddings: Mapping[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexRow:
    """What the in-memory index needs of an article that has a vector of the version."""

    account_id: str
    article_id: str
    title: str
    locale: str | None
    vector: np.ndarray


@dataclass(frozen=True)
class EmbeddingWrite:
    account_id: str
    article_id: str
    vector: np.ndarray
    revision: int | None = None  # written only if the article is still at this revision


class VersionRole(enum.StrEnum):
    """What the service does with a model version (persisted, so a restart resumes it)."""

    ACTIVE = "active"  # serves queries
    CANDIDATE = "candidate"  # loaded, articles being re-embedded; switches in when complete
    PREVIOUS = "previous"  # loaded and kept current: activating it again is a rollback
    FAILED = "failed"  # failed validation or loading; never activated on its own
    RETIRED = "retired"  # no longer kept; its vectors are deleted


@dataclass(frozen=True)
class VersionRecord:
    version: int
    role: VersionRole
    model_sha256: str  # which files the record is about (a version number is not reused)
    error: str | None = None
    updated_at: str = ""


class ArticleStore(Protocol):
    async def write_articles(self, writes: Sequence[ArticleWrite]) -> list[bool]:
        """Insert or replace, all in one durable transaction; True where newly created."""
        ...

    async def get_article(self, account_id: str, article_id: str) -> StoredArticle | None: ...

    async def delete_article(self, account_id: str, article_id: str) -> bool:
        """Durably delete the article and its vectors; False if it did not exist."""
        ...

    async def index_rows(self, model_version: int, dim: int) -> list[IndexRow]:
        """Every article with a vector of this version and dimension."""
        ...

    async def articles_without_embedding(self, model_version: int, dim: int) -> list[StoredArticle]:
        """Articles lacking a (valid) vector of this version: to embed before serving it."""
        ...

    async def count_without_embedding(self, model_version: int, dim: int) -> int: ...

    async def write_embeddings(
        self, model_version: int, rows: Sequence[EmbeddingWrite]
    ) -> list[bool]:
        """Add vectors of one version to existing articles; True where written (deleted
        articles, and articles rewritten since the row's revision, are skipped)."""
        ...

    async def embedding_versions(self) -> dict[int, int]:
        """Model version → number of stored vectors."""
        ...

    async def delete_embeddings(self, model_version: int) -> int:
        """Delete every vector of a version no longer kept; returns how many."""
        ...

    async def version_records(self) -> list[VersionRecord]:
        """Every model version the service has seen, by version number."""
        ...

    async def save_version_records(self, records: Sequence[VersionRecord]) -> None:
        """Insert or replace these records in one durable transaction."""
        ...

    async def close(self) -> None: ...
