"""SQLite write transactions and the change rows appended inside them (shared by the
store's modules: `sqlite`, `sqlite_experiments`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from server.storage.store import ChangeKind


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


def append_change(
    db: sqlite3.Connection,
    kind: ChangeKind,
    at: str,
    account_id: str | None = None,
    article_id: str | None = None,
    model_version: int | None = None,
) -> int:
    """Add a change row inside the caller's transaction; returns its seq."""
    cursor = db.execute(
        "INSERT INTO changes (kind, account_id, article_id, model_version, at)"
        " VALUES (?, ?, ?, ?, ?)",
        (kind.value, account_id, article_id, model_version, at),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid
