"""Opening a store by location: a postgresql:// URL or a SQLite path, in settings too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import run

from server.settings import Settings, settings_from
from server.storage.opening import describe, is_postgres_url, open_store, store_location
from server.storage.postgres import PostgresArticleStore
from server.storage.sqlite import SqliteArticleStore

REPO_ROOT = Path(__file__).resolve().parents[3]
URL = "postgresql://kbrec:s3cret@db.internal:5432/kbrec?sslmode=require"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL, URL),
        ("postgres://db/kbrec", "postgres://db/kbrec"),
        ("POSTGRESQL://db/kbrec", "POSTGRESQL://db/kbrec"),
        ("data/kbrec.sqlite", Path("data/kbrec.sqlite")),
        ("/var/lib/kbrec/postgresql.sqlite", Path("/var/lib/kbrec/postgresql.sqlite")),
    ],
)
def test_a_url_stays_text_and_anything_else_is_a_path(text: str, expected: str | Path) -> None:
    assert store_location(text) == expected
    assert is_postgres_url(store_location(text)) is isinstance(expected, str)


def test_messages_hide_the_password() -> None:
    assert describe(URL) == "postgresql://kbrec:***@db.internal:5432/kbrec?sslmode=require"
    assert describe("postgresql://db/kbrec") == "postgresql://db/kbrec"
    assert describe(Path("data/kbrec.sqlite")) == "data/kbrec.sqlite"


def test_settings_take_either(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from({"KBREC_DB": URL}).db == URL  # not folded into a Path
    assert settings_from({"KBREC_DB": "/tmp/x.sqlite"}).db == Path("/tmp/x.sqlite")
    assert settings_from({}, {"db": store_location(URL)}).db == URL
    assert Settings(db="data/other.sqlite").db == Path("data/other.sqlite")


def test_open_store_picks_the_backend(tmp_path: Path, postgres_url: str) -> None:
    async def test() -> None:
        sqlite = await open_store(tmp_path / "kbrec.sqlite")
        assert isinstance(sqlite, SqliteArticleStore)
        await sqlite.close()
        sqlite = await open_store(str(tmp_path / "text.sqlite"))
        assert isinstance(sqlite, SqliteArticleStore)
        await sqlite.close()
        postgres = await open_store(postgres_url)
        assert isinstance(postgres, PostgresArticleStore)
        await postgres.close()

    run(test)


def test_a_sqlite_user_never_imports_psycopg(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from server.app import create_app\n"
        "from server.storage.opening import open_store\n"
        "async def main():\n"
        f"    store = await open_store({str(tmp_path / 'kbrec.sqlite')!r})\n"
        "    await store.try_lead()\n"
        "    await store.wait_for_change(0, 0.01)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
