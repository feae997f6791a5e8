"""`ArticleStore` on PostgreSQL, shared by several kbrec processes and hosts.

The same tables and semantics as SQLite (`sqlite.py`): vectors as bytea
(little-endian float32), a returned write is committed (with the server's
`synchronous_commit` on, which `require_durable_commits` restores if a default
turned it off), every write appends its change rows in its own transaction.

No gap in the change log: a reader that has seen seq 12 must never get 11 later,
but an identity hands out seqs at insert time and transactions commit in any
order, so 11 could commit after 12. Every write transaction therefore takes one
transaction-level advisory lock (`CHANGES_LOCK`) as its first statement, before it
draws any seq, and holds it until it commits: seqs are drawn and committed in the
same order, one transaction at a time. A transaction that rolls back leaves a gap
that nobody will fill, which is harmless. Reads are not blocked; writes were one
at a time with SQLite too.

Connections come from a psycopg_pool pool (autocommit: a write opens its own
transaction); LISTEN and the leader's advisory lock have a connection each
(`postgres_notify`, `postgres_leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from kbrec.records import Article
from server.storage.accounts import (
    ACCOUNT_COLUMNS,
    KEY_COLUMNS,
    Account,
    ApiKey,
    account_of,
    api_key_of,
)
from server.storage.migrate import migrate_postgres
from server.storage.postgres_connection import (
    connect,
    connection_options,
    redacted_url,
    require_durable_commits,
    store_errors,
)
from server.storage.postgres_experiments import PostgresExperimentTables
from server.storage.postgres_leader import PostgresLeaderLock
from server.storage.postgres_locks import CHANGES_LOCK
from server.storage.postgres_notify import CHANNEL, ChangeListener
from server.storage.store import (
    ArticleWrite,
    Change,
    ChangeKind,
    EmbeddingWrite,
    IndexRow,
    StaleLiveSet,
    StoredArticle,
    VersionRecord,
    VersionRole,
    missing_live_versions,
    utc_now,
)
from server.storage.vectors import blob_size, blob_vector, vector_blob

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

POOL_MAX_SIZE = 8
POOL_OPEN_TIMEOUT_S = 10.0  # the pool's first connection, at open
POOL_GET_TIMEOUT_S = 30.0  # waiting for a free connection

ARTICLE_COLUMNS = "a.account_id, a.article_id, a.title, a.body, a.locale, a.updated_at, a.revision"
# Articles lacking a (valid) vector of a version.
WITHOUT_EMBEDDING = (
    "NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.account_id = a.account_id"
    " AND e.article_id = a.article_id AND e.model_version = %(version)s AND e.dim = %(dim)s"
    " AND octet_length(e.vector) = %(size)s)"
)
INDEX_ROWS = (
    "SELECT a.account_id, a.article_id, a.title, a.locale, e.vector"
    " FROM articles a JOIN embeddings e USING (account_id, article_id)"
    " WHERE e.model_version = %(version)s AND e.dim = %(dim)s"
    " AND octet_length(e.vector) = %(size)s"
)
CHANGE_COLUMNS = "seq, kind, account_id, article_id, model_version, at"
# The change's seq becomes the article's revision: never given out before.
WRITE_ARTICLE = """
WITH old AS (
    SELECT 1 FROM articles WHERE account_id = %(account_id)s AND article_id = %(article_id)s
), change AS (
    INSERT INTO changes (kind, account_id, article_id, at)
    VALUES ('article', %(account_id)s, %(article_id)s, %(at)s)
    RETURNING seq
)
INSERT INTO articles (account_id, article_id, title, body, locale, updated_at, revision)
SELECT %(account_id)s, %(article_id)s, %(title)s, %(body)s, %(locale)s, %(updated_at)s, seq
FROM change
ON CONFLICT (account_id, article_id) DO UPDATE SET title = excluded.title,
    body = excluded.body, locale = excluded.locale, updated_at = excluded.updated_at,
    revision = excluded.revision
RETURNING NOT EXISTS (SELECT 1 FROM old)
"""
# Written only while the article is at the row's revision (when it names one).
WRITE_EMBEDDING = """
WITH written AS (
    INSERT INTO embeddings (account_id, article_id, model_version, dim, vector)
    SELECT account_id, article_id, %(version)s, %(dim)s, %(vector)s FROM articles
    WHERE account_id = %(account_id)s AND article_id = %(article_id)s
        AND (%(revision)s::bigint IS NULL OR revision = %(revision)s::bigint)
    ON CONFLICT (account_id, article_id, model_version)
        DO UPDATE SET dim = excluded.dim, vector = excluded.vector
    RETURNING account_id, article_id, model_version
)
INSERT INTO changes (kind, account_id, article_id, model_version, at)
SELECT 'embedding', account_id, article_id, model_version, %(at)s FROM written
RETURNING seq
"""
DELETE_ARTICLE = """
WITH gone AS (
    DELETE FROM articles WHERE account_id = %(account_id)s AND article_id = %(article_id)s
    RETURNING account_id, article_id
)
INSERT INTO changes (kind, account_id, article_id, at)
SELECT 'article', account_id, article_id, %(at)s FROM gone
RETURNING seq
"""
# Every article of the account not in the kept ids, with an `article` change each.
DELETE_ARTICLES_EXCEPT = """
WITH gone AS (
    DELETE FROM articles
    WHERE account_id = %(account_id)s AND NOT (article_id = ANY(%(keep)s::text[]))
    RETURNING account_id, article_id
)
INSERT INTO changes (kind, account_id, article_id, at)
SELECT 'article', account_id, article_id, %(at)s FROM gone ORDER BY article_id
RETURNING article_id
"""
APPEND_CHANGE = (
    "INSERT INTO changes (kind, account_id, article_id, model_version, at)"
    " VALUES (%s, %s, %s, %s, %s)"
)
# Keeps the newest change: it marks the highest seq given out.
PRUNE_CHANGES = "DELETE FROM changes WHERE seq <= %s AND seq < (SELECT max(seq) FROM changes)"


def stored_article(row: Sequence[Any]) -> StoredArticle:
    account_id, article_id, title, body, locale, updated_at, revision = row
    return StoredArticle(Article(account_id, article_id, title, body, locale), updated_at, revision)


def index_row(row: Sequence[Any]) -> IndexRow:
    account_id, article_id, title, locale, blob = row
    return IndexRow(account_id, article_id, title, locale, blob_vector(blob))


def change(row: Sequence[Any]) -> Change:
    seq, kind, account_id, article_id, model_version, at = row
    return Change(seq, ChangeKind(kind), account_id, article_id, model_version, at)


def vector_filter(model_version: int, dim: int) -> dict[str, int]:
    return {"version": model_version, "dim": dim, "size": blob_size(dim)}


class WriteTransaction:
    """A write in progress: its connection, when it started, whether it changed anything."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.at = utc_now()
        self.changed = False  # set when a change row was appended: NOTIFY at commit


class PostgresArticleStore(PostgresExperimentTables):
    def __init__(self, url: str, pool: AsyncConnectionPool) -> None:
        self.url = url
        self._where = redacted_url(url)
        self._pool = pool
        self._listener = ChangeListener(url)
        self._leader = PostgresLeaderLock(url)

    @classmethod
    async def open(cls, url: str) -> PostgresArticleStore:
        """Migrate the schema (on a connection of its own: a bad URL fails at once),
        then open the pool."""
        from psycopg_pool import AsyncConnectionPool

        where = redacted_url(url)
        async with store_errors(f"cannot open article store {where}"):
            async with await connect(url) as connection:
                await migrate_postgres(connection, where)
            pool = AsyncConnectionPool(
                url,
                min_size=1,
                max_size=POOL_MAX_SIZE,
                kwargs=connection_options(url),
                configure=require_durable_commits,
                check=AsyncConnectionPool.check_connection,
                timeout=POOL_GET_TIMEOUT_S,
                name="kbrec-store",
                open=False,
            )
            try:
                await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)
            except BaseException:
                await pool.close()
                raise
        return cls(url, pool)

    async def write_articles(
        self, writes: Sequence[ArticleWrite], live_versions: Collection[int] | None = None
    ) -> list[bool]:
        if not writes:
            return []
        async with self._writing() as tx:
            db = tx.connection
            if live_versions is not None:  # under CHANGES_LOCK: no role changes meanwhile
                cursor = await db.execute("SELECT version, role FROM model_versions")
                missing = missing_live_versions(await cursor.fetchall(), live_versions)
                if missing:
                    raise StaleLiveSet(missing)
            async with db.pipeline():  # one round trip for the batch, in order
                created = []
                for write in writes:
                    article = write.stored.article
                    key = {"account_id": article.account_id, "article_id": article.article_id}
                    cursor = db.cursor()
                    await cursor.execute(
                        WRITE_ARTICLE,
                        {
                            **key,
                            "title": article.title,
                            "body": article.body,
                            "locale": article.locale,
                            "updated_at": write.stored.updated_at,
                            "at": tx.at,
                        },
                    )
                    created.append(cursor)
                    # Vectors of the old text are stale in every version.
                    await db.execute(
                        "DELETE FROM embeddings"
                        " WHERE account_id = %(account_id)s AND article_id = %(article_id)s",
                        key,
                    )
                    if write.embeddings:
                        await db.cursor().executemany(
                            "INSERT INTO embeddings VALUES (%s, %s, %s, %s, %s)",
                            [
                                (*key.values(), version, vector.shape[0], vector_blob(vector))
                                for version, vector in write.embeddings.items()
                            ],
                        )
                flags = [await first_value(cursor) for cursor in created]
            tx.changed = True
        return [bool(flag) for flag in flags]

    async def get_article(self, account_id: str, article_id: str) -> StoredArticle | None:
        row = await self._fetch_one(
            f"SELECT {ARTICLE_COLUMNS} FROM articles a WHERE account_id = %s AND article_id = %s",
            (account_id, article_id),
        )
        return None if row is None else stored_article(row)

    async def delete_article(self, account_id: str, article_id: str) -> bool:
        async with self._writing() as tx:
            cursor = await tx.connection.execute(
                DELETE_ARTICLE, {"account_id": account_id, "article_id": article_id, "at": tx.at}
            )
            tx.changed = await cursor.fetchone() is not None
        return tx.changed

    async def delete_articles_except(self, account_id: str, keep: Collection[str]) -> list[str]:
        async with self._writing() as tx:
            cursor = await tx.connection.execute(
                DELETE_ARTICLES_EXCEPT,
                {"account_id": account_id, "keep": sorted(set(keep)), "at": tx.at},
            )
            gone = sorted(article_id for (article_id,) in await cursor.fetchall())
            tx.changed = bool(gone)
        return gone

    async def index_rows(self, model_version: int, dim: int) -> list[IndexRow]:
        rows = await self._fetch_all(INDEX_ROWS, vector_filter(model_version, dim), binary=True)
        return [index_row(row) for row in rows]

    async def index_rows_for(
        self, keys: Sequence[tuple[str, str]], model_version: int, dim: int
    ) -> list[IndexRow]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return []
        rows = await self._fetch_all(
            f"{INDEX_ROWS} AND (a.account_id, a.article_id) IN"
            " (SELECT * FROM unnest(%(accounts)s::text[], %(articles)s::text[]))",
            {
                **vector_filter(model_version, dim),
                "accounts": [account for account, _ in unique],
                "articles": [article for _, article in unique],
            },
            binary=True,
        )
        return [index_row(row) for row in rows]

    async def articles_without_embedding(self, model_version: int, dim: int) -> list[StoredArticle]:
        rows = await self._fetch_all(
            f"SELECT {ARTICLE_COLUMNS} FROM articles a WHERE {WITHOUT_EMBEDDING}",
            vector_filter(model_version, dim),
        )
        return [stored_article(row) for row in rows]

    async def count_without_embedding(self, model_version: int, dim: int) -> int:
        row = await self._fetch_one(
            f"SELECT count(*) FROM articles a WHERE {WITHOUT_EMBEDDING}",
            vector_filter(model_version, dim),
        )
        assert row is not None
        return row[0]

    async def write_embeddings(
        self, model_version: int, rows: Sequence[EmbeddingWrite]
    ) -> list[bool]:
        if not rows:
            return []
        async with self._writing() as tx:
            db = tx.connection
            async with db.pipeline():
                cursors = []
                for row in rows:
                    cursor = db.cursor()
                    await cursor.execute(
                        WRITE_EMBEDDING,
                        {
                            "version": model_version,
                            "dim": row.vector.shape[0],
                            "vector": vector_blob(row.vector),
                            "account_id": row.account_id,
                            "article_id": row.article_id,
                            "revision": row.revision,
                            "at": tx.at,
                        },
                    )
                    cursors.append(cursor)
                written = [await cursor.fetchone() is not None for cursor in cursors]
            tx.changed = any(written)
        return written

    async def embedding_versions(self) -> dict[int, int]:
        rows = await self._fetch_all(
            "SELECT model_version, count(*) FROM embeddings GROUP BY model_version"
        )
        return {version: count for version, count in rows}

    async def delete_embeddings(self, model_version: int) -> int:
        async with self._writing() as tx:
            cursor = await tx.connection.execute(
                "DELETE FROM embeddings WHERE model_version = %s", (model_version,)
            )
            deleted = cursor.rowcount
            if deleted > 0:
                kind = ChangeKind.EMBEDDINGS_DELETED
                await tx.connection.execute(
                    APPEND_CHANGE, (kind.value, None, None, model_version, tx.at)
                )
                tx.changed = True
        return deleted

    async def version_records(self) -> list[VersionRecord]:
        rows = await self._fetch_all(
            "SELECT version, role, model_sha256, error, updated_at FROM model_versions"
            " ORDER BY version"
        )
        return [
            VersionRecord(version, VersionRole(role), sha, error, updated_at)
            for version, role, sha, error, updated_at in rows
        ]

    async def save_version_records(self, records: Sequence[VersionRecord]) -> None:
        if not records:
            return
        async with self._writing() as tx:
            await tx.connection.cursor().executemany(
                "INSERT INTO model_versions VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (version) DO UPDATE SET role = excluded.role,"
                " model_sha256 = excluded.model_sha256, error = excluded.error,"
                " updated_at = excluded.updated_at",
                [(r.version, r.role.value, r.model_sha256, r.error, r.updated_at) for r in records],
            )
            kind = ChangeKind.VERSIONS
            await tx.connection.execute(APPEND_CHANGE, (kind.value, None, None, None, tx.at))
            tx.changed = True

    async def changes_since(self, after_seq: int, limit: int = 1000) -> list[Change]:
        rows = await self._fetch_all(
            f"SELECT {CHANGE_COLUMNS} FROM changes WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [change(row) for row in rows]

    async def last_change_seq(self) -> int:
        row = await self._fetch_one("SELECT coalesce(max(seq), 0) FROM changes")
        assert row is not None
        return row[0]

    async def first_change_seq(self) -> int:
        row = await self._fetch_one("SELECT coalesce(min(seq), 0) FROM changes")
        assert row is not None
        return row[0]

    async def prune_changes(self, keep_after_seq: int) -> int:
        async with store_errors("article store"), self._pool.connection() as db:
            cursor = await db.execute(PRUNE_CHANGES, (keep_after_seq,))
            return cursor.rowcount

    async def wait_for_change(self, after_seq: int, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(loop.time() + timeout_s):
                while True:
                    # Listening before looking: a commit after the look notifies.
                    async with store_errors("article store: listening for changes"):
                        await self._listener.start()
                    wakeup = self._listener.wakeup
                    if self._listener.latest > after_seq:
                        return
                    if await self.last_change_seq() > after_seq:
                        return
                    await wakeup.wait()

    async def try_lead(self) -> bool:
        async with store_errors("article store: taking leadership"):
            return await self._leader.try_acquire()

    def leads(self) -> bool:
        return self._leader.held

    async def still_leading(self) -> bool:
        return await self._leader.still_held()

    async def resign(self) -> None:
        await self._leader.release()

    async def close(self) -> None:
        try:
            await self._listener.close()
            await self._leader.release()
        finally:
            await self._pool.close()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[WriteTransaction]:
        """A write transaction: the changes lock first (see the module's doc), NOTIFY
        of its last seq if it appended changes (delivered at its commit)."""
        async with (
            store_errors("article store"),
            self._pool.connection() as db,
            db.transaction(),
        ):
            await db.execute("SELECT pg_advisory_xact_lock(%s, %s)", CHANGES_LOCK)
            tx = WriteTransaction(db)
            yield tx
            if tx.changed:
                # Under the lock, max(seq) is this transaction's last change.
                await db.execute(
                    "SELECT pg_notify(%s, (SELECT max(seq) FROM changes)::text)", (CHANNEL,)
                )

    async def _fetch_all(
        self, sql: str, parameters: Any = None, *, binary: bool = False
    ) -> list[tuple[Any, ...]]:
        async with store_errors("article store"), self._pool.connection() as db:
            cursor = await db.execute(sql, parameters, binary=binary)  # type: ignore[arg-type]
            return await cursor.fetchall()

    async def _fetch_one(self, sql: str, parameters: Any = None) -> tuple[Any, ...] | None:
        async with store_errors("article store"), self._pool.connection() as db:
            cursor = await db.execute(sql, parameters)  # type: ignore[arg-type]
            return await cursor.fetchone()

    # --- accounts and API keys ----------------------------------------------------
    # Not in the change log, so no CHANGES_LOCK: a plain transaction each.

    async def create_accounts(self, accounts: Sequence[Account]) -> list[bool]:
        async with self._transaction() as db:
            return [await insert_account(db, account) for account in accounts]

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._fetch_one(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = %s", (account_id,)
        )
        return None if row is None else account_of(row)

    async def count_articles(self, account_id: str, among: Collection[str] | None = None) -> int:
        if among is None:
            row = await self._fetch_one(
                "SELECT count(*) FROM articles WHERE account_id = %s", (account_id,)
            )
        else:
            row = await self._fetch_one(
                "SELECT count(*) FROM articles"
                " WHERE account_id = %s AND article_id = ANY(%s::text[])",
                (account_id, sorted(set(among))),
            )
        assert row is not None
        return row[0]

    async def create_api_key(self, key: ApiKey, key_sha256: str, account: Account) -> bool:
        async with self._transaction() as db:
            created = await insert_account(db, account)
            await db.execute(
                "INSERT INTO api_keys (key_id, account_id, key_sha256, label, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (key.key_id, key.account_id, key_sha256, key.label, key.created_at),
            )
        return created

    async def api_keys(self, account_id: str | None = None) -> list[ApiKey]:
        where = "" if account_id is None else " WHERE account_id = %s"
        rows = await self._fetch_all(
            f"SELECT {KEY_COLUMNS} FROM api_keys{where} ORDER BY created_at, key_id",
            None if account_id is None else (account_id,),
        )
        return [api_key_of(row) for row in rows]

    async def valid_api_keys(self) -> dict[str, ApiKey]:
        rows = await self._fetch_all(
            f"SELECT key_sha256, {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL"
        )
        return {row[0]: api_key_of(row[1:]) for row in rows}

    async def revoke_api_key(self, key_id: str, at: str) -> ApiKey | None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                (at, key_id),
            )
            cursor = await db.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,)
            )
            row = await cursor.fetchone()
        return None if row is None else api_key_of(row)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with (
            store_errors("article store"),
            self._pool.connection() as db,
            db.transaction(),
        ):
            yield db


async def insert_account(db: AsyncConnection, account: Account) -> bool:
    """Insert the account unless it exists; True if inserted."""
    cursor = await db.execute(
        f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (account_id) DO NOTHING",
        (account.account_id, account.created_at, account.max_articles, account.max_article_bytes),
    )
    return cursor.rowcount > 0


async def first_value(cursor: Any) -> Any:
    row = await cursor.fetchone()
    return None if row is None else row[0]
