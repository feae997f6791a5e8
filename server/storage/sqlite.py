"""`ArticleStore` on one SQLite file, in WAL mode.

Durability: `synchronous=FULL`. In WAL mode NORMAL syncs only at checkpoints, so
a commit acknowledged just before a power loss or OS crash can be rolled back;
FULL syncs the WAL on every commit, which is what "acknowledged means durable"
needs. Its cost is one fsync per commit, so bulk writes (imports, rebuilds) go
in one transaction.

All SQLite calls run on one dedicated thread with its own connection (SQLite
allows one writer at a time anyway), keeping the event loop free. Several
processes may share the file: one writer at a time means change seqs commit in
order, so the change log has no gap a reader could skip. Leadership is a flock
on `<db>.leader` (`file_lock`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from kbrec.records import Article
from server.storage.accounts import (
    ACCOUNT_COLUMNS,
    KEY_COLUMNS,
    Account,
    ApiKey,
    account_of,
    api_key_of,
)
from server.storage.file_lock import FileLeaderLock
from server.storage.migrate import migrate_sqlite
from server.storage.sqlite_experiments import SqliteExperimentTables
from server.storage.sqlite_transactions import append_change, transaction
from server.storage.store import (
    ArticleWrite,
    Change,
    ChangeKind,
    EmbeddingWrite,
    IndexRow,
    StaleLiveSet,
    StoredArticle,
    StoreError,
    VersionRecord,
    VersionRole,
    missing_live_versions,
    utc_now,
)
from server.storage.vectors import blob_size, blob_vector, vector_blob

T = TypeVar("T")

# Articles lacking a (valid) vector of a version; parameters: version, dim, bytes.
WITHOUT_EMBEDDING = (
    "NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.account_id = a.account_id"
    " AND e.article_id = a.article_id AND e.model_version = ? AND e.dim = ?"
    " AND length(e.vector) = ?)"
)
ARTICLE_COLUMNS = "a.account_id, a.article_id, a.title, a.body, a.locale, a.updated_at, a.revision"
INDEX_ROWS = (
    "SELECT a.account_id, a.article_id, a.title, a.locale, e.vector"
    " FROM articles a JOIN embeddings e USING (account_id, article_id)"
    " WHERE e.model_version = ? AND e.dim = ? AND length(e.vector) = ?"
)
CHANGE_COLUMNS = "seq, kind, account_id, article_id, model_version, at"
# (account, article) pairs per query of `index_rows_for`: within SQLite's variable limit.
KEYS_PER_QUERY = 400
POLL_INTERVAL_S = 0.02  # `wait_for_change`: one cheap max(seq) read per interval


def stored_article(row: sqlite3.Row | tuple) -> StoredArticle:
    account_id, article_id, title, body, locale, updated_at, revision = row
    return StoredArticle(Article(account_id, article_id, title, body, locale), updated_at, revision)


def index_row(row: tuple) -> IndexRow:
    account_id, article_id, title, locale, blob = row
    return IndexRow(account_id, article_id, title, locale, blob_vector(blob))


# Keeps the newest change: it marks the highest seq given out.
PRUNE_CHANGES = "DELETE FROM changes WHERE seq <= ? AND seq < (SELECT max(seq) FROM changes)"


def change(row: tuple) -> Change:
    seq, kind, account_id, article_id, model_version, at = row
    return Change(seq, ChangeKind(kind), account_id, article_id, model_version, at)


BUSY_TIMEOUT_S = 5.0  # how long a statement waits for another connection's lock
WAL_RETRY_S = 0.01


def enter_wal_mode(connection: sqlite3.Connection) -> None:
    """Switch a file still in rollback-journal mode (one older kbrec wrote) to WAL.

    The switch needs the file to itself, and while another process holds a write lock
    (migrating the same old file, say) SQLite refuses it at once instead of waiting
    out the busy timeout: so it is tried again until that timeout has passed. A file
    already in WAL mode (every one kbrec opened before) needs no lock at all."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_S)


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE … COMMIT).
    connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        enter_wal_mode(connection)
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        migrate_sqlite(connection, str(path))
    except BaseException:
        connection.close()
        raise
    return connection


class SqliteArticleStore(SqliteExperimentTables):
    def __init__(
        self, path: Path, connection: sqlite3.Connection, executor: ThreadPoolExecutor
    ) -> None:
        self.path = path
        self._connection = connection
        self._executor = executor
        self._leader = FileLeaderLock(path.with_name(path.name + ".leader"))

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
        return cls(path, connection, executor)

    async def write_articles(
        self, writes: Sequence[ArticleWrite], live_versions: Collection[int] | None = None
    ) -> list[bool]:
        return await self._call(self._write_articles, writes, live_versions)

    async def get_article(self, account_id: str, article_id: str) -> StoredArticle | None:
        return await self._call(self._get_article, account_id, article_id)

    async def delete_article(self, account_id: str, article_id: str) -> bool:
        return await self._call(self._delete_article, account_id, article_id)

    async def delete_articles_except(self, account_id: str, keep: Collection[str]) -> list[str]:
        return await self._call(self._delete_articles_except, account_id, frozenset(keep))

    async def index_rows(self, model_version: int, dim: int) -> list[IndexRow]:
        return await self._call(self._index_rows, model_version, dim)

    async def index_rows_for(
        self, keys: Sequence[tuple[str, str]], model_version: int, dim: int
    ) -> list[IndexRow]:
        return await self._call(self._index_rows_for, keys, model_version, dim)

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

    async def changes_since(self, after_seq: int, limit: int = 1000) -> list[Change]:
        return await self._call(self._changes_since, after_seq, limit)

    async def last_change_seq(self) -> int:
        return await self._call(self._scalar, "SELECT coalesce(max(seq), 0) FROM changes")

    async def first_change_seq(self) -> int:
        return await self._call(self._scalar, "SELECT coalesce(min(seq), 0) FROM changes")

    async def prune_changes(self, keep_after_seq: int) -> int:
        return await self._call(self._prune_changes, keep_after_seq)

    async def wait_for_change(self, after_seq: int, timeout_s: float) -> None:
        # One writer at a time and no notifications in SQLite: a cheap poll of max(seq)
        # (the primary key's last entry). Cancelling it abandons at most one read.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await self.last_change_seq() <= after_seq:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(POLL_INTERVAL_S, remaining))

    async def try_lead(self) -> bool:
        try:
            return self._leader.try_acquire()
        except OSError as exc:
            raise StoreError(f"cannot lock {self._leader.path}: {exc}") from exc

    def leads(self) -> bool:
        return self._leader.held

    async def still_leading(self) -> bool:
        return self._leader.still_held()

    async def resign(self) -> None:
        self._leader.release()

    async def close(self) -> None:
        self._leader.release()
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

    def _scalar(self, sql: str, *parameters: object) -> int:
        (value,) = self._connection.execute(sql, parameters).fetchone()
        return value

    def _write_articles(
        self, writes: Sequence[ArticleWrite], live_versions: Collection[int] | None
    ) -> list[bool]:
        created = []
        at = utc_now()
        with transaction(self._connection) as db:
            if live_versions is not None:  # one writer at a time: no role changes meanwhile
                recorded = db.execute("SELECT version, role FROM model_versions").fetchall()
                missing = missing_live_versions(recorded, live_versions)
                if missing:
                    raise StaleLiveSet(missing)
            for write in writes:
                article = write.stored.article
                key = (article.account_id, article.article_id)
                exists = db.execute(
                    "SELECT 1 FROM articles WHERE account_id = ? AND article_id = ?", key
                ).fetchone()
                created.append(exists is None)
                # The change's seq is the new revision: never given out before.
                revision = append_change(db, ChangeKind.ARTICLE, at, *key)
                db.execute(
                    "INSERT INTO articles VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (account_id, article_id) DO UPDATE SET title = excluded.title,"
                    " body = excluded.body, locale = excluded.locale,"
                    " updated_at = excluded.updated_at, revision = excluded.revision",
                    (
                        *key,
                        article.title,
                        article.body,
                        article.locale,
                        write.stored.updated_at,
                        revision,
                    ),
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
            deleted = cursor.rowcount > 0
            if deleted:
                append_change(db, ChangeKind.ARTICLE, utc_now(), account_id, article_id)
        return deleted

    def _delete_articles_except(self, account_id: str, keep: frozenset[str]) -> list[str]:
        # The difference is taken here, not in SQL: `keep` may hold more ids than SQLite
        # takes as parameters. BEGIN IMMEDIATE: no write can come between read and delete.
        at = utc_now()
        with transaction(self._connection) as db:
            ids = db.execute(
                "SELECT article_id FROM articles WHERE account_id = ? ORDER BY article_id",
                (account_id,),
            )
            gone = [article_id for (article_id,) in ids.fetchall() if article_id not in keep]
            for article_id in gone:
                db.execute(
                    "DELETE FROM articles WHERE account_id = ? AND article_id = ?",
                    (account_id, article_id),
                )
                append_change(db, ChangeKind.ARTICLE, at, account_id, article_id)
        return gone

    def _index_rows(self, model_version: int, dim: int) -> list[IndexRow]:
        rows = self._connection.execute(INDEX_ROWS, (model_version, dim, blob_size(dim)))
        return [index_row(row) for row in rows]

    def _index_rows_for(
        self, keys: Sequence[tuple[str, str]], model_version: int, dim: int
    ) -> list[IndexRow]:
        unique = list(dict.fromkeys(keys))
        found: list[IndexRow] = []
        for start in range(0, len(unique), KEYS_PER_QUERY):
            chunk = unique[start : start + KEYS_PER_QUERY]
            pairs = ", ".join(["(?, ?)"] * len(chunk))
            rows = self._connection.execute(
                f"{INDEX_ROWS} AND (a.account_id, a.article_id) IN (VALUES {pairs})",
                (model_version, dim, blob_size(dim), *(part for key in chunk for part in key)),
            )
            found.extend(index_row(row) for row in rows)
        return found

    def _articles_without_embedding(self, model_version: int, dim: int) -> list[StoredArticle]:
        rows = self._connection.execute(
            f"SELECT {ARTICLE_COLUMNS} FROM articles a WHERE {WITHOUT_EMBEDDING}",
            (model_version, dim, blob_size(dim)),
        )
        return [stored_article(row) for row in rows]

    def _count_without_embedding(self, model_version: int, dim: int) -> int:
        return self._scalar(
            f"SELECT count(*) FROM articles a WHERE {WITHOUT_EMBEDDING}",
            model_version,
            dim,
            blob_size(dim),
        )

    def _write_embeddings(self, model_version: int, rows: Sequence[EmbeddingWrite]) -> list[bool]:
        written = []
        at = utc_now()
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
                if written[-1]:
                    key = (row.account_id, row.article_id)
                    append_change(db, ChangeKind.EMBEDDING, at, *key, model_version)
        return written

    def _embedding_versions(self) -> dict[int, int]:
        rows = self._connection.execute(
            "SELECT model_version, count(*) FROM embeddings GROUP BY model_version"
        )
        return dict(rows.fetchall())

    def _delete_embeddings(self, model_version: int) -> int:
        with transaction(self._connection) as db:
            cursor = db.execute("DELETE FROM embeddings WHERE model_version = ?", (model_version,))
            if cursor.rowcount > 0:
                append_change(
                    db, ChangeKind.EMBEDDINGS_DELETED, utc_now(), model_version=model_version
                )
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
        if not records:
            return
        with transaction(self._connection) as db:
            db.executemany(
                "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?)",
                [(r.version, r.role.value, r.model_sha256, r.error, r.updated_at) for r in records],
            )
            append_change(db, ChangeKind.VERSIONS, utc_now())

    def _changes_since(self, after_seq: int, limit: int) -> list[Change]:
        rows = self._connection.execute(
            f"SELECT {CHANGE_COLUMNS} FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [change(row) for row in rows]

    def _prune_changes(self, keep_after_seq: int) -> int:
        with transaction(self._connection) as db:
            cursor = db.execute(PRUNE_CHANGES, (keep_after_seq,))
        return cursor.rowcount

    # --- accounts and API keys ----------------------------------------------------

    async def create_accounts(self, accounts: Sequence[Account]) -> list[bool]:
        return await self._call(self._create_accounts, accounts)

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._call(
            self._fetch_one,
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = ?",
            account_id,
        )
        return None if row is None else account_of(row)

    async def count_articles(self, account_id: str, among: Collection[str] | None = None) -> int:
        return await self._call(self._count_articles, account_id, among)

    async def create_api_key(self, key: ApiKey, key_sha256: str, account: Account) -> bool:
        return await self._call(self._create_api_key, key, key_sha256, account)

    async def api_keys(self, account_id: str | None = None) -> list[ApiKey]:
        where = "" if account_id is None else " WHERE account_id = ?"
        rows = await self._call(
            self._fetch_all,
            f"SELECT {KEY_COLUMNS} FROM api_keys{where} ORDER BY created_at, key_id",
            *([] if account_id is None else [account_id]),
        )
        return [api_key_of(row) for row in rows]

    async def valid_api_keys(self) -> dict[str, ApiKey]:
        rows = await self._call(
            self._fetch_all,
            f"SELECT key_sha256, {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL",
        )
        return {row[0]: api_key_of(row[1:]) for row in rows}

    async def revoke_api_key(self, key_id: str, at: str) -> ApiKey | None:
        return await self._call(self._revoke_api_key, key_id, at)

    def _fetch_one(self, sql: str, *parameters: object) -> tuple | None:
        return self._connection.execute(sql, parameters).fetchone()

    def _fetch_all(self, sql: str, *parameters: object) -> list[tuple]:
        return self._connection.execute(sql, parameters).fetchall()

    def _create_accounts(self, accounts: Sequence[Account]) -> list[bool]:
        with transaction(self._connection) as db:
            return self._create_accounts_in(db, accounts)

    @staticmethod
    def _create_accounts_in(db: sqlite3.Connection, accounts: Sequence[Account]) -> list[bool]:
        return [
            db.execute(
                f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (account_id) DO NOTHING",
                (a.account_id, a.created_at, a.max_articles, a.max_article_bytes),
            ).rowcount
            > 0
            for a in accounts
        ]

    def _count_articles(self, account_id: str, among: Collection[str] | None) -> int:
        if among is None:
            return self._scalar("SELECT count(*) FROM articles WHERE account_id = ?", account_id)
        ids = sorted(set(among))
        total = 0
        for start in range(0, len(ids), KEYS_PER_QUERY):
            chunk = ids[start : start + KEYS_PER_QUERY]
            total += self._scalar(
                "SELECT count(*) FROM articles WHERE account_id = ?"
                f" AND article_id IN ({', '.join('?' * len(chunk))})",
                account_id,
                *chunk,
            )
        return total

    def _create_api_key(self, key: ApiKey, key_sha256: str, account: Account) -> bool:
        with transaction(self._connection) as db:
            (created,) = self._create_accounts_in(db, [account])
            db.execute(
                "INSERT INTO api_keys (key_id, account_id, key_sha256, label, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key.key_id, key.account_id, key_sha256, key.label, key.created_at),
            )
        return created

    def _revoke_api_key(self, key_id: str, at: str) -> ApiKey | None:
        with transaction(self._connection) as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            row = db.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        return None if row is None else api_key_of(row)
