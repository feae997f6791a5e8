"""Accounts and API keys in the store, on both backends (`location`): created once,
keys kept as digests only, revocation, article counts for quotas, the migration that
makes accounts of the articles already stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from store_helpers import NOW, run, write

from server.storage.accounts import (
    Account,
    ApiKey,
    is_key_shaped,
    issue_key,
    key_digest,
    new_key,
)
from server.storage.opening import open_store

LATER = "2026-11-28T09:30:00.000+00:00"


def test_an_account_is_created_once(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        assert await store.get_account("acme") is None
        acme = Account("acme", NOW, max_articles=10, max_article_bytes=2048)
        assert await store.create_accounts([acme, Account("beta", NOW)]) == [True, True]
        assert await store.get_account("acme") == acme
        assert await store.get_account("beta") == Account("beta", NOW, None, None)
        # An existing account is left as it is, quotas included.
        assert await store.create_accounts([Account("acme", LATER, 99, 99)]) == [False]
        assert await store.get_account("acme") == acme
        assert await store.create_accounts([]) == []
        await store.close()

    run(test)


def test_a_key_is_stored_as_its_digest_only(location: str | Path, tmp_path: Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        issued = await issue_key(store, "acme", label="zendesk sync")
        assert issued.account_created
        assert is_key_shaped(issued.key) and issued.record.key_id in issued.key
        assert await store.get_account("acme") is not None
        valid = await store.valid_api_keys()
        assert valid == {key_digest(issued.key): issued.record}
        assert issued.record.label == "zendesk sync" and issued.record.revoked_at is None
        second = await issue_key(store, "acme")
        assert not second.account_created
        assert second.key != issued.key and second.record.key_id != issued.record.key_id
        await store.close()
        if isinstance(location, Path):  # the whole file, WAL included: no key in it
            for path in location.parent.iterdir():
                data = path.read_bytes()
                assert issued.key.encode() not in data
                assert issued.key.split(".")[1].encode() not in data

    run(test)


def test_keys_are_listed_by_account_and_revoked(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        first = (await issue_key(store, "acme")).record
        other = (await issue_key(store, "beta")).record
        second = (await issue_key(store, "acme")).record
        assert {k.key_id for k in await store.api_keys("acme")} == {first.key_id, second.key_id}
        assert len(await store.api_keys()) == 3
        assert await store.api_keys("nobody") == []
        revoked = await store.revoke_api_key(first.key_id, LATER)
        assert revoked is not None and revoked.revoked_at == LATER
        # Revoking again keeps the first revocation's time.
        again = await store.revoke_api_key(first.key_id, "2030-01-01T00:00:00.000+00:00")
        assert again == revoked
        assert await store.revoke_api_key("0" * 16, LATER) is None
        valid = await store.valid_api_keys()
        assert {k.key_id for k in valid.values()} == {second.key_id, other.key_id}
        listed = {k.key_id: k for k in await store.api_keys("acme")}
        assert listed[first.key_id].revoked_at == LATER
        assert listed[second.key_id].revoked_at is None
        await store.close()

    run(test)


def test_a_key_of_a_new_account_creates_it_with_its_quotas(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        key_id, key = new_key()
        record = ApiKey(key_id, "acme", NOW)
        account = Account("acme", NOW, max_articles=5)
        assert await store.create_api_key(record, key_digest(key), account)
        assert await store.get_account("acme") == account
        await store.close()

    run(test)


def test_article_counts_for_quotas(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write(str(i), f"t{i}") for i in range(5)])
        await store.write_articles([write("x", "other account", account="beta")])
        assert await store.count_articles("acme") == 5
        assert await store.count_articles("beta") == 1
        assert await store.count_articles("nobody") == 0
        assert await store.count_articles("acme", ["0", "3", "new", "x"]) == 2
        assert await store.count_articles("acme", []) == 0
        many = [str(i) for i in range(2000)]  # more than one query's parameters
        assert await store.count_articles("acme", many) == 5
        await store.close()

    run(test)


def test_seeding_creates_the_corpus_accounts(location: str | Path) -> None:
    from kbrec.records import Article
    from server.storage.seed import seed_store

    async def test() -> None:
        articles = [Article("acme", "1", "t", "b"), Article("beta", "1", "t", "b")]
        await seed_store(location, articles)
        store = await open_store(location)
        assert await store.get_account("acme") is not None
        assert await store.get_account("beta") is not None
        await store.close()

    run(test)


def test_the_migration_makes_accounts_of_stored_articles(tmp_path: Path) -> None:
    """A schema 3 file with articles: after the migration their accounts exist."""
    from server.storage.migrate import migrations

    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    for migration in migrations("sqlite")[:3]:
        connection.executescript(migration.sql)
    connection.execute(
        "INSERT INTO articles VALUES ('acme', '1', 't', 'b', NULL, ?, 1),"
        " ('acme', '2', 't', 'b', NULL, ?, 2), ('beta', '1', 't', 'b', NULL, ?, 3)",
        (NOW, NOW, NOW),
    )
    connection.execute("PRAGMA user_version=3")
    connection.close()

    async def test() -> None:
        store = await open_store(path)
        for account_id in ("acme", "beta"):
            account = await store.get_account(account_id)
            assert account is not None and account.max_articles is None
            assert account.created_at.endswith("+00:00")
        assert await store.get_account("gamma") is None
        await store.close()

    run(test)


@pytest.mark.parametrize(
    "token",
    ["", "kb_", "kb_0123456789abcdef", "kb_0123456789abcdeg." + "a" * 43, "kb_short." + "a" * 43],
)
def test_what_is_not_key_shaped(token: str) -> None:
    assert not is_key_shaped(token)


def test_the_postgres_migration_makes_accounts_of_stored_articles(postgres_url: str) -> None:
    import psycopg

    from server.storage.migrate import migrations

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        first = migrations("postgres")[0]
        admin.execute(first.sql)  # type: ignore[arg-type]  # a file
        admin.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        admin.execute("INSERT INTO schema_version (version, name) VALUES (1, %s)", (first.name,))
        admin.execute(
            "INSERT INTO articles VALUES ('acme', '1', 't', 'b', NULL, %s, 1),"
            " ('beta', '1', 't', 'b', NULL, %s, 2)",
            (NOW, NOW),
        )

    async def test() -> None:
        store = await open_store(postgres_url)
        assert (await store.get_account("acme")) is not None
        assert (await store.get_account("beta")) is not None
        assert await store.get_account("gamma") is None
        await store.close()

    run(test)
