"""The SQLite article store: durable writes, vectors per model version, restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from kbrec.records import Article
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import (
    ArticleWrite,
    EmbeddingWrite,
    StoredArticle,
    StoreError,
    VersionRecord,
    VersionRole,
)

NOW = "2026-11-27T12:00:00.000+00:00"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def write(article_id: str, title: str, vectors: dict[int, np.ndarray], account: str = "acme"):
    article = Article(account, article_id, title, f"body of {title}", "en-us")
    return ArticleWrite(StoredArticle(article, NOW), vectors)


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_writes_reads_and_replaces(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "sub" / "kbrec.sqlite")
        assert await store.write_articles([write("1", "first", {1: vec(1, 0)})]) == [True]
        assert await store.write_articles([write("1", "second", {1: vec(0, 1)})]) == [False]
        stored = await store.get_article("acme", "1")
        assert stored is not None
        assert stored.article == Article("acme", "1", "second", "body of second", "en-us")
        assert stored.updated_at == NOW
        (row,) = await store.index_rows(1, 2)
        assert (row.account_id, row.article_id, row.title, row.locale) == (
            "acme",
            "1",
            "second",
            "en-us",
        )
        np.testing.assert_array_equal(row.vector, vec(0, 1))
        assert await store.get_article("acme", "2") is None
        assert await store.get_article("other", "1") is None
        await store.close()

    run(test)


def test_a_rewrite_drops_vectors_of_the_old_text_in_every_version(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        await store.write_articles([write("1", "old", {1: vec(1, 0), 2: vec(1, 0, 0)})])
        await store.write_articles([write("1", "new", {2: vec(0, 1, 0)})])
        assert await store.index_rows(1, 2) == []
        assert [a.article.title for a in await store.articles_without_embedding(1, 2)] == ["new"]
        (row,) = await store.index_rows(2, 3)
        np.testing.assert_array_equal(row.vector, vec(0, 1, 0))
        await store.close()

    run(test)


def test_vectors_of_another_dimension_count_as_missing(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        await store.write_articles([write("1", "one", {1: vec(1, 0)})])
        assert await store.index_rows(1, 3) == []
        assert len(await store.articles_without_embedding(1, 3)) == 1
        await store.close()

    run(test)


def test_embeddings_are_added_per_version_and_skip_deleted_articles(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        await store.write_articles([write("1", "one", {}), write("2", "two", {})])
        missing = await store.articles_without_embedding(1, 2)
        assert sorted(a.article.article_id for a in missing) == ["1", "2"]
        written = await store.write_embeddings(
            1,
            [
                EmbeddingWrite("acme", "1", vec(1, 0)),
                EmbeddingWrite("acme", "gone", vec(0, 1)),
            ],
        )
        assert written == [True, False]
        assert [a.article.article_id for a in await store.articles_without_embedding(1, 2)] == ["2"]
        assert [r.article_id for r in await store.index_rows(1, 2)] == ["1"]
        await store.close()

    run(test)


def test_delete_removes_the_article_and_its_vectors(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        await store.write_articles([write("1", "one", {1: vec(1, 0)}), write("2", "two", {})])
        assert await store.delete_article("acme", "1")
        assert not await store.delete_article("acme", "1")
        assert await store.get_article("acme", "1") is None
        assert await store.index_rows(1, 2) == []
        await store.close()

    run(test)


def test_everything_survives_a_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "kbrec.sqlite"

    async def first() -> None:
        store = await SqliteArticleStore.open(path)
        writes = [write(str(i), f"title {i}", {1: vec(i, 1)}) for i in range(50)]
        assert all(await store.write_articles(writes))
        await store.close()

    async def second() -> None:
        store = await SqliteArticleStore.open(path)
        rows = await store.index_rows(1, 2)
        assert len(rows) == 50
        assert {r.article_id: float(r.vector[0]) for r in rows}["7"] == 7.0
        await store.close()

    run(first)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    run(second)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version=99")

    async def test() -> None:
        with pytest.raises(StoreError, match="schema 99"):
            await SqliteArticleStore.open(path)

    run(test)


def test_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "a_directory.sqlite").mkdir()

    async def test() -> None:
        with pytest.raises(StoreError):
            await SqliteArticleStore.open(tmp_path / "a_directory.sqlite")

    run(test)


def test_commits_are_synced_to_disk(tmp_path: Path) -> None:
    """synchronous=FULL: in WAL mode NORMAL could lose acknowledged commits on power loss."""

    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        connection = store._connection  # the pragma is per connection: ask the store's own
        (level,) = await store._call(lambda: connection.execute("PRAGMA synchronous").fetchone())
        assert level == 2  # FULL
        await store.close()

    run(test)


def test_a_vector_of_an_older_revision_is_not_stored(tmp_path: Path) -> None:
    """A background re-embedding must not store the old text's vector over a newer text."""

    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        await store.write_articles([write("1", "old", {})])
        (snapshot,) = await store.articles_without_embedding(2, 2)
        await store.write_articles([write("1", "new", {})])  # rewritten meanwhile
        stale = EmbeddingWrite("acme", "1", vec(1, 0), revision=snapshot.revision)
        assert await store.write_embeddings(2, [stale]) == [False]
        (current,) = await store.articles_without_embedding(2, 2)
        assert current.revision == snapshot.revision + 1
        fresh = EmbeddingWrite("acme", "1", vec(0, 1), revision=current.revision)
        assert await store.write_embeddings(2, [fresh]) == [True]
        assert await store.count_without_embedding(2, 2) == 0
        await store.close()

    run(test)


def test_vectors_per_version_are_counted_and_deleted(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        await store.write_articles(
            [write("1", "one", {1: vec(1, 0), 2: vec(0, 1)}), write("2", "two", {1: vec(1, 0)})]
        )
        assert await store.embedding_versions() == {1: 2, 2: 1}
        assert await store.delete_embeddings(1) == 2
        assert await store.embedding_versions() == {2: 1}
        assert await store.count_without_embedding(1, 2) == 2
        await store.close()

    run(test)


def test_version_records_persist(tmp_path: Path) -> None:
    path = tmp_path / "kbrec.sqlite"
    records = [
        VersionRecord(1, VersionRole.PREVIOUS, "a" * 64, None, NOW),
        VersionRecord(2, VersionRole.ACTIVE, "b" * 64, None, NOW),
        VersionRecord(3, VersionRole.FAILED, "c" * 64, "model.onnx: sha256 mismatch", NOW),
    ]

    async def first() -> None:
        store = await SqliteArticleStore.open(path)
        await store.save_version_records(records)
        await store.save_version_records([VersionRecord(1, VersionRole.RETIRED, "a" * 64)])
        await store.close()

    async def second() -> None:
        store = await SqliteArticleStore.open(path)
        found = await store.version_records()
        assert [(r.version, r.role) for r in found] == [
            (1, VersionRole.RETIRED),
            (2, VersionRole.ACTIVE),
            (3, VersionRole.FAILED),
        ]
        assert found[2] == records[2]
        await store.close()

    run(first)
    run(second)


def test_a_schema_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """Databases written before version records existed keep their articles and vectors."""
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """
            CREATE TABLE articles (account_id TEXT NOT NULL, article_id TEXT NOT NULL,
                title TEXT NOT NULL, body TEXT NOT NULL, locale TEXT, updated_at TEXT NOT NULL,
                PRIMARY KEY (account_id, article_id));
            CREATE TABLE embeddings (account_id TEXT NOT NULL, article_id TEXT NOT NULL,
                model_version INTEGER NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
                PRIMARY KEY (account_id, article_id, model_version));
            INSERT INTO articles VALUES ('acme', '1', 'one', 'body', NULL, 'then');
            PRAGMA user_version=1;
            """
        )
        blob = vec(1, 0).astype("<f4").tobytes()
        connection.execute("INSERT INTO embeddings VALUES ('acme', '1', 1, 2, ?)", (blob,))

    async def test() -> None:
        store = await SqliteArticleStore.open(path)
        (row,) = await store.index_rows(1, 2)
        assert row.article_id == "1"
        stored = await store.get_article("acme", "1")
        assert stored is not None and stored.revision == 0
        assert await store.version_records() == []
        await store.close()

    run(test)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
