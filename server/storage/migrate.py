"""Schema migrations: numbered SQL files per backend (`migrations/<backend>/NNNN_*.sql`,
package data), the pending ones applied in order in one transaction.

The applied version is recorded in the same transaction: SQLite in `PRAGMA
user_version` (files of older kbrec releases are at 1 or 2), PostgreSQL in a
`schema_version` table. A database newer than the code is refused (`StoreError`):
this kbrec would not know what the newer columns mean.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Literal

from server.storage.postgres_locks import MIGRATIONS_LOCK
from server.storage.store import StoreError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

Backend = Literal["sqlite", "postgres"]
FILE_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class Migration:
    version: int  # the schema version this file brings a database to
    name: str
    sql: str


@cache
def migrations(backend: Backend) -> tuple[Migration, ...]:
    """Every migration of the backend, numbered 1..N without a gap."""
    folder = resources.files("server.storage").joinpath("migrations", backend)
    found = sorted(
        (int(match[1]), entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if (match := FILE_NAME.fullmatch(entry.name))
    )
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations must be numbered 1..N, found {numbers}")
    return tuple(Migration(*entry) for entry in found)


def latest_version(backend: Backend) -> int:
    return len(migrations(backend))


def pending(backend: Backend, found: int, where: str) -> tuple[Migration, ...]:
    """What brings a database at schema `found` up to date; refuses a newer one."""
    latest = latest_version(backend)
    if found > latest:
        raise StoreError(f"{where} has schema {found}, newer than this kbrec ({latest})")
    return migrations(backend)[found:]


def sqlite_statements(sql: str) -> Iterator[str]:
    """The statements of a script, one by one: `executescript` would commit first."""
    statement = ""
    for line in sql.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""
    if statement.strip() and not statement.strip().startswith("--"):
        raise RuntimeError(f"unterminated SQL statement: {statement.strip()[:80]}")


def migrate_sqlite(connection: sqlite3.Connection, where: str) -> int:
    """Bring the file up to date in one transaction (BEGIN IMMEDIATE: two processes
    opening an old file together migrate it once); returns the schema version."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        (found,) = connection.execute("PRAGMA user_version").fetchone()
        todo = pending("sqlite", found, where)
        for migration in todo:
            for statement in sqlite_statements(migration.sql):
                connection.execute(statement)
        if todo:
            connection.execute(f"PRAGMA user_version={todo[-1].version}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return latest_version("sqlite")


SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate_postgres(connection: AsyncConnection, where: str) -> int:
    """Bring the database up to date in one transaction; returns the schema version.

    An advisory lock makes processes that start together migrate one after the other
    (the later ones find nothing to do); PostgreSQL's DDL is transactional, so a failed
    migration leaves the database as it was.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATIONS_LOCK)
        await connection.execute(SCHEMA_VERSION_TABLE)
        cursor = await connection.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        row = await cursor.fetchone()
        assert row is not None
        for migration in pending("postgres", row[0], where):
            await connection.execute(migration.sql)  # type: ignore[arg-type]  # a file
            await connection.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
    return latest_version("postgres")
