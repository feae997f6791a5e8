"""The article store interface: articles and their vectors, durable on acknowledgement.

Vectors are keyed by (account, article, model version): a vector is only ever
compared with vectors of its own version. Writing an article replaces its text
and drops every vector of the old text, in every version, in the same
transaction as the new vectors. SQLite implements it now (`sqlite_store`); a
PostgreSQL store for several replicas comes later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from training.corpus.records import Article


class StoreError(Exception):
    """The store could not read or write (disk, corruption, locking); not the caller's fault."""


@dataclass(frozen=True)
class StoredArticle:
    article: Article
    updated_at: str  # ISO 8601, UTC


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

    async def write_embeddings(self, model_version: int, rows: Sequence[EmbeddingWrite]) -> None:
        """Add vectors of one version to existing articles (deleted ones are skipped)."""
        ...

    async def close(self) -> None: ...
