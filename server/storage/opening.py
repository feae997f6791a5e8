"""Open the article store a location names: a `postgresql://` (or `postgres://`) URL is
PostgreSQL, anything else a SQLite file.

Both backends are imported here, lazily: a SQLite user never imports psycopg.
"""

from __future__ import annotations

from pathlib import Path

from server.storage.store import ArticleStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.lower().startswith(POSTGRES_SCHEMES)


def store_location(text: str | Path) -> str | Path:
    """A URL stays text (a Path would fold its `//`); anything else is a SQLite path."""
    return text if is_postgres_url(text) else Path(text)


def describe(location: str | Path) -> str:
    """The location for messages: a URL without its password."""
    if is_postgres_url(location):
        from server.storage.postgres_connection import redacted_url

        return redacted_url(str(location))
    return str(location)


async def open_store(location: str | Path) -> ArticleStore:
    if is_postgres_url(location):
        from server.storage.postgres import PostgresArticleStore

        return await PostgresArticleStore.open(str(location))
    from server.storage.sqlite import SqliteArticleStore

    return await SqliteArticleStore.open(Path(location))
