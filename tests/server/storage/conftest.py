"""`location`: where a store test opens its store, once per backend (SQLite, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """A new store's location: a SQLite file, or a fresh PostgreSQL database's URL
    (the server starts only for the tests that ask for it)."""
    if request.param == "sqlite":
        return tmp_path / "sub" / "kbrec.sqlite"
    return request.getfixturevalue("postgres_url")
