"""The migration runner: numbered SQL files as package data, applied in order."""

from __future__ import annotations

import re
import sqlite3
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from server.storage import migrate
from server.storage.migrate import (
    latest_version,
    migrate_sqlite,
    migrations,
    pending,
    sqlite_statements,
)
from server.storage.store import StoreError

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_are_package_data_numbered_from_one(backend: migrate.Backend) -> None:
    found = migrations(backend)
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert all(m.sql.strip() for m in found)
    folder = resources.files("server.storage").joinpath("migrations", backend)
    assert sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql")) == [
        m.name for m in found
    ]


def test_the_sql_files_are_installed_with_the_package() -> None:
    """A wheel carries them only if pyproject.toml names them as package data."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["server.storage"]
    root = REPO_ROOT / "server" / "storage"
    packaged = {p for pattern in patterns for p in root.glob(pattern)}
    assert packaged == set(root.glob("migrations/*/*.sql"))
    assert packaged


def test_sqlite_and_postgres_end_with_the_same_tables() -> None:
    def tables(sql: str) -> set[str]:
        return {name.lower() for name in re.findall(r"CREATE TABLE (\w+)", sql)}

    sqlite_tables = set().union(*(tables(m.sql) for m in migrations("sqlite")))
    postgres_tables = set().union(*(tables(m.sql) for m in migrations("postgres")))
    assert sqlite_tables == postgres_tables


def test_pending_is_what_a_database_lacks_and_a_newer_one_is_refused() -> None:
    latest = latest_version("sqlite")
    assert [m.version for m in pending("sqlite", 0, "x")] == list(range(1, latest + 1))
    assert [m.version for m in pending("sqlite", latest - 1, "x")] == [latest]
    assert pending("sqlite", latest, "x") == ()
    with pytest.raises(StoreError, match=f"the.db has schema {latest + 1}, newer"):
        pending("sqlite", latest + 1, "the.db")


def test_a_script_is_split_into_whole_statements() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        INSERT INTO a VALUES ('c');
    END;
    -- trailing comment
    """
    statements = list(sqlite_statements(script))
    assert len(statements) == 2
    assert "DEFAULT 'a;b'" in statements[0]
    assert statements[1].strip().endswith("END;")
    with pytest.raises(RuntimeError, match="unterminated"):
        list(sqlite_statements("CREATE TABLE b (x TEXT)"))


def test_sqlite_migrates_a_new_file_to_the_latest_schema(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "new.sqlite", isolation_level=None)
    try:
        assert migrate_sqlite(connection, "new.sqlite") == latest_version("sqlite")
        assert connection.execute("PRAGMA user_version").fetchone() == (latest_version("sqlite"),)
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert {"articles", "embeddings", "model_versions", "changes"} <= names
        # Again: nothing to do.
        assert migrate_sqlite(connection, "new.sqlite") == latest_version("sqlite")
    finally:
        connection.close()
