"""`ArticleStore` on one SQLite file, in WAL mode.

Durability: `synchronous=FULL`. In WAL mode NORMAL syncs only at checkpoints, so
a commit acknowledged just before a power loss or OS crash can be rolled back;
FULL syncs the WAL on every commit, which is what "acknowledged means durable"
needs. Its cost is one fsync per commit, so bulk writes (imports, rebuilds) go
in one transaction.

All SQLite calls run on one dedicated thread with its own connection (SQLite
allows one writer at a time anyway), keeping the event loop free.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from kbrec.records import Article
from server.storage.store import (
    ArticleWrite,
    EmbeddingWrite,
    IndexRow,
    StoredArticle,
    StoreError,
    VersionRecord,
    VersionRole,
)

T = TypeVar("T")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    account_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    locale TEXT,
    updated_at TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, article_id)
);
CREATE TABLE IF NOT EXISTS embeddings (
    account_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,  -- little-endian float32 [dim]
    PRIMARY KEY (account_id, article_id, model_version),
    FOREIGN KEY (account_id, article_id) REFERENCES articles (account_id, article_id)
        ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS embeddings_by_version ON embeddings (model_version);
CREATE TABLE IF NOT EXISTS model_versions (
    version INTEGER PRIMARY KEY,
    role TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    error TEXT,
    updated_at TEXT NOT NULL
);
"""
# What turns a database of schema N into N + 1 (run before SCHEMA, in the same transaction).
MIGRATIONS = {
    1: "ALTER TABLE articles ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;",
}
VECTOR_DTYPE = np.dtype("<f4")
# Articles lacking a (valid) vector of a version; parameters: version, dim, bytes.
WITHOUT_EMBEDDING = (
    "NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.account_id = a.account_id"
    " AND e.article_id = a.article_id AND e.model_version = ? AND e.dim = ?"
    " AND length(e.vector) = ?)"
)
ARTICLE_COLUMNS = "a.account_id, a.article_id, a.title, a.body, a.locale, a.updated_at, a.revision"


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def blob_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=VECTOR_DTYPE).astype(np.float32)


def stored_article(row: sqlite3.Row | tuple) -> StoredArticle:
    account_id, article_id, title, body, locale, updated_at, revision = row
    return StoredArticle(Article(account_id, article_id, title, body, locale), updated_at, revision)


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE … COMMIT).
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=5000")
        (found,) = connection.execute("PRAGMA user_version").fetchone()
        if found > SCHEMA_VERSION:
            raise StoreError(f"{path} has schema {found}, newer than this kbrec ({SCHEMA_VERSION})")
        # A new file (user_version 0) gets SCHEMA as it is; an older one migrates first.
        migrations = "".join(MIGRATIONS[n] for n in range(found, SCHEMA_VERSION)) if found else ""
        # executescript commits on its own, so the transaction is part of the script.
        connection.executescript(
            f"BEGIN IMMEDIATE; {migrations} {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        )
    except BaseException:
        connection.close()
        raise
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the block raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class SqliteArticleStore:
    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._connection = connection
        self._executor = executor

    @classmethod
    async def open(cls, path: Path) -> SqliteArticleStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        loop = asyncio.get_running_loop()
        try:
            # The connection is created on, and only ever used by, the executor's thread.
            connection = await loop.run_in_executor(executor, connect, path)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"cannot open article store {path}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(connection, executor)

    async def write_articles(self, writes: Sequence[ArticleWrite]) -> list[bool]:
        return await self._call(self._write_articles, writes)

    async def get_article(self, account_id: str, article_id: str) -> StoredArticle | None:
        return await self._call(self._get_article, account_id, article_id)

    async def delete_article(self, account_id: str, article_id: str) -> bool:
        return await self._call(self._delete_article, account_id, article_id)

    async def index_rows(self, model_version: int, dim: int) -> list[IndexRow]:
        return await self._call(self._index_rows, model_version, dim)

    async def articles_without_embedding(self, model_version: int, dim: int) -> list[StoredArticle]:
        return await self._call(self._articles_without_embedding, model_version, dim)

    async def count_without_embedding(self, model_version: int, dim: int) -> int:
        return await self._call(self._count_without_embedding, model_version, dim)

    async def write_embeddings(
        self, model_version: int, rows: Sequence[EmbeddingWrite]
    ) -> list[bool]:
        return await self._call(self._write_embeddings, model_version, rows)

    async def embedding_versions(self) -> dict[int, int]:
        return await self._call(self._embedding_versions)

    async def delete_embeddings(self, model_version: int) -> int:
        return await self._call(self._delete_embeddings, model_version)

    async def version_records(self) -> list[VersionRecord]:
        return await self._call(self._version_records)

    async def save_version_records(self, records: Sequence[VersionRecord]) -> None:
        await self._call(self._save_version_records, records)

    async def close(self) -> None:
        try:
            await self._call(self._connection.close)
        finally:
            await asyncio.to_thread(self._executor.shutdown, True)

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"article store: {exc}") from exc

    def _write_articles(self, writes: Sequence[ArticleWrite]) -> list[bool]:
        created = []
        with transaction(self._connection) as db:
            for write in writes:
                article = write.stored.article
                key = (article.account_id, article.article_id)
                exists = db.execute(
                    "SELECT 1 FROM articles WHERE account_id = ? AND article_id = ?", key
                ).fetchone()
                created.append(exists is None)
                db.execute(
                    "INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?, 0)"
                    " ON CONFLICT (account_id, article_id) DO UPDATE SET title = excluded.title,"
                    " body = excluded.body, locale = excluded.locale,"
                    " updated_at = excluded.updated_at, revision = articles.revision + 1",
                    (*key, article.title, article.body, article.locale, write.stored.updated_at),
                )
                # Vectors of the old text are stale in every version.
                db.execute("DELETE FROM embeddings WHERE account_id = ? AND article_id = ?", key)
                db.executemany(
                    "INSERT INTO embeddings VALUES (?, ?, ?, ?, ?)",
                    [
                        (*key, version, vector.shape[0], vector_blob(vector))
                        for version, vector in write.embeddings.items()
                    ],
                )
        return created

    def _get_article(self, account_id: str, article_id: str) -> StoredArticle | None:
        row = self._connection.execute(
            f"SELECT {ARTICLE_COLUMNS} FROM articles a WHERE account_id = ? AND article_id = ?",
            (account_id, article_id),
        ).fetchone()
        return None if row is None else stored_article(row)

    def _delete_article(self, account_id: str, article_id: str) -> bool:
        with transaction(self._connection) as db:
            cursor = db.execute(
                "DELETE FROM articles WHERE account_id = ? AND article_id = ?",
                (account_id, article_id),
            )
        return cursor.rowcount > 0

    def _index_rows(self, model_version: int, dim: int) -> list[IndexRow]:
        rows = self._connection.execute(
            "SELECT a.account_id, a.article_id, a.title, a.locale, e.vector"
            " FROM articles a JOIN embeddings e USING (account_id, article_id)"
            " WHERE e.model_version = ? AND e.dim = ? AND length(e.vector) = ?",
            (model_version, dim, dim * VECTOR_DTYPE.itemsize),
        )
        return [
            IndexRow(account_id, article_id, title, locale, blob_vector(blob))
            for account_id, article_id, title, locale, blob in rows
        ]

    def _articles_without_embedding(self, model_version: int, dim: int) -> list[StoredArticle]:
        rows = self._connection.execute(
            f"SELECT {ARTICLE_COLUMNS} FROM articles a WHERE {WITHOUT_EMBEDDING}",
            (model_version, dim, dim * VECTOR_DTYPE.itemsize),
        )
        return [stored_article(row) for row in rows]

    def _count_without_embedding(self, model_version: int, dim: int) -> int:
        (count,) = self._connection.execute(
            f"SELECT count(*) FROM articles a WHERE {WITHOUT_EMBEDDING}",
            (model_version, dim, dim * VECTOR_DTYPE.itemsize),
        ).fetchone()
        return count

    def _write_embeddings(self, model_version: int, rows: Sequence[EmbeddingWrite]) -> list[bool]:
        written = []
        with transaction(self._connection) as db:
            for row in rows:
                cursor = db.execute(
                    "INSERT OR REPLACE INTO embeddings"
                    " SELECT account_id, article_id, ?, ?, ? FROM articles"
                    " WHERE account_id = ? AND article_id = ? AND (? IS NULL OR revision = ?)",
                    (
                        model_version,
                        row.vector.shape[0],
                        vector_blob(row.vector),
                        row.account_id,
                        row.article_id,
                        row.revision,
                        row.revision,
                    ),
                )
                written.append(cursor.rowcount > 0)
        return written

    def _embedding_versions(self) -> dict[int, int]:
        rows = self._connection.execute(
            "SELECT model_version, count(*) FROM embeddings GROUP BY model_version"
        )
        return dict(rows.fetchall())

    def _delete_embeddings(self, model_version: int) -> int:
        with transaction(self._connection) as db:
            cursor = db.execute("DELETE FROM embeddings WHERE model_version = ?", (model_version,))
        return cursor.rowcount

    def _version_records(self) -> list[VersionRecord]:
        rows = self._connection.execute(
            "SELECT version, role, model_sha256, error, updated_at FROM model_versions"
            " ORDER BY version"
        )
        return [
            VersionRecord(version, VersionRole(role), sha, error, updated_at)
            for version, role, sha, error, updated_at in rows
        ]

    def _save_version_records(self, records: Sequence[VersionRecord]) -> None:
        with transaction(self._connection) as db:
            db.executemany(
                "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?)",
                [(r.version, r.role.value, r.model_sha256, r.error, r.updated_at) for r in records],
            )
