"""What only the SQLite store has: WAL, synchronous=FULL, files of older releases.

Behaviour both backends share is in test_article_store.py."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from store_helpers import run, vec, write

from server.storage.migrate import latest_version
from server.storage.sqlite import SqliteArticleStore, connect
from server.storage.store import EmbeddingWrite, StoreError

SCHEMA_1 = """
CREATE TABLE articles (account_id TEXT NOT NULL, article_id TEXT NOT NULL,
    title TEXT NOT NULL, body TEXT NOT NULL, locale TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (account_id, article_id));
CREATE TABLE embeddings (account_id TEXT NOT NULL, article_id TEXT NOT NULL,
    model_version INTEGER NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (account_id, article_id, model_version));
INSERT INTO articles VALUES ('acme', '1', 'one', 'body', NULL, 'then');
PRAGMA user_version=1;
"""
# What kbrec wrote before the change log (schema 2): revisions counted per article.
SCHEMA_2 = """
CREATE TABLE articles (account_id TEXT NOT NULL, article_id TEXT NOT NULL,
    title TEXT NOT NULL, body TEXT NOT NULL, locale TEXT, updated_at TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (account_id, article_id));
CREATE TABLE embeddings (account_id TEXT NOT NULL, article_id TEXT NOT NULL,
    model_version INTEGER NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (account_id, article_id, model_version),
    FOREIGN KEY (account_id, article_id) REFERENCES articles (account_id, article_id)
        ON DELETE CASCADE);
CREATE INDEX embeddings_by_version ON embeddings (model_version);
CREATE TABLE model_versions (version INTEGER PRIMARY KEY, role TEXT NOT NULL,
    model_sha256 TEXT NOT NULL, error TEXT, updated_at TEXT NOT NULL);
INSERT INTO articles VALUES ('acme', '1', 'one', 'body', NULL, 'then', 7);
INSERT INTO articles VALUES ('acme', '2', 'two', 'body', NULL, 'then', 0);
PRAGMA user_version=2;
"""


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA user_version").fetchone()[0]


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "kbrec.sqlite"

    async def test() -> None:
        store = await SqliteArticleStore.open(path)
        await store.write_articles([write("1", "one")])
        await store.close()

    run(test)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert user_version(path) == latest_version("sqlite")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version=99")

    async def test() -> None:
        with pytest.raises(StoreError, match="schema 99"):
            await SqliteArticleStore.open(path)

    run(test)
    assert user_version(path) == 99  # left alone


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


def test_a_schema_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """Databases written before version records existed keep their articles and vectors."""
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_1)
        blob = vec(1, 0).astype("<f4").tobytes()
        connection.execute("INSERT INTO embeddings VALUES ('acme', '1', 1, 2, ?)", (blob,))

    async def test() -> None:
        store = await SqliteArticleStore.open(path)
        (row,) = await store.index_rows(1, 2)
        assert row.article_id == "1"
        stored = await store.get_article("acme", "1")
        assert stored is not None and stored.revision == 0
        assert await store.version_records() == []
        assert await store.changes_since(0) == []
        await store.close()

    run(test)
    assert user_version(path) == latest_version("sqlite")


def test_a_schema_2_database_gets_the_change_log_and_revisions_above_the_old_ones(
    tmp_path: Path,
) -> None:
    """Old revisions were per-article counters: a new revision must exceed all of them,
    or a vector computed at revision 7 could pass the check after a new write."""
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_2)

    async def test() -> None:
        store = await SqliteArticleStore.open(path)
        assert await store.last_change_seq() == 0
        await store.write_articles([write("2", "two, again")])
        stored = await store.get_article("acme", "2")
        assert stored is not None and stored.revision == 8
        stale = EmbeddingWrite("acme", "2", vec(1, 0), revision=7)
        assert await store.write_embeddings(1, [stale]) == [False]
        await store.close()

    run(test)
    assert user_version(path) == latest_version("sqlite")


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """All pending migrations run in one transaction: none is half applied."""
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_2)
        connection.execute("CREATE TABLE changes (x INTEGER)")  # in the way of migration 3

    async def test() -> None:
        with pytest.raises(StoreError, match="changes"):
            await SqliteArticleStore.open(path)

    run(test)
    assert user_version(path) == 2
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(changes)")]
    assert columns == ["x"]


def test_processes_opening_an_old_file_together_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_1)

    async def test() -> None:
        import asyncio

        stores = await asyncio.gather(*(SqliteArticleStore.open(path) for _ in range(4)))
        for store in stores:
            await store.close()

    run(test)
    assert user_version(path) == latest_version("sqlite")


def test_an_old_file_opens_while_another_process_migrates_it(tmp_path: Path) -> None:
    # The one interleaving of the test above that failed (in CI): another connection
    # holds the write lock (BEGIN IMMEDIATE, as a migration does) while this one asks
    # for WAL mode, which SQLite refuses at once instead of waiting.
    path = tmp_path / "kbrec.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA_1)
    migrating = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    migrating.execute("BEGIN IMMEDIATE")
    done = threading.Timer(0.3, migrating.execute, ["COMMIT"])
    done.start()
    try:
        connection = connect(path)
    finally:
        done.join()
        migrating.close()
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()
    assert user_version(path) == latest_version("sqlite")
