"""PostgreSQL connections of the store: options, errors as `StoreError`, URLs without
their password (for messages).

psycopg is imported inside the functions: a SQLite user never loads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from server.storage.store import StoreError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

# Seconds to wait for a connection when the URL does not say (libpq waits forever).
CONNECT_TIMEOUT_S = 10


def connection_options(url: str) -> dict[str, Any]:
    """Keyword arguments of every connection: autocommit (a write opens its own
    transaction; a read is one statement, never an idle open transaction)."""
    from psycopg.conninfo import conninfo_to_dict

    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in conninfo_to_dict(url):
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    return options


async def connect(url: str) -> AsyncConnection:
    """A connection outside the pool (migrations, LISTEN, the leader's session)."""
    import psycopg

    return await psycopg.AsyncConnection.connect(url, **connection_options(url))


async def require_durable_commits(connection: AsyncConnection) -> None:
    """A returned write must be on disk: turn `synchronous_commit = off` (a server or
    role default) back on for the store's sessions; stricter settings are kept."""
    cursor = await connection.execute("SHOW synchronous_commit")
    row = await cursor.fetchone()
    if row is not None and row[0] == "off":
        await connection.execute("SET synchronous_commit TO on")


@asynccontextmanager
async def store_errors(what: str) -> AsyncIterator[None]:
    """psycopg's errors (pool timeouts included) as `StoreError`, like SQLite's."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"{what}: {exc}") from exc


def redacted_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
