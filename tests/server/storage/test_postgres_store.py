"""What only the PostgreSQL store has: concurrent writers on many connections, the
schema_version table, connection loss, the server's settings."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest
from store_helpers import run, vec, write

from server.storage.migrate import latest_version
from server.storage.postgres import PostgresArticleStore
from server.storage.store import EmbeddingWrite, StoreError


def sessions_of(url: str, application_query: str) -> list[int]:
    """Backend pids of the database's other sessions whose current query matches."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND query ILIKE %s",
            (f"%{application_query}%",),
        ).fetchall()
    return [pid for (pid,) in rows]


def terminate(url: str, pids: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_a_follower_never_misses_a_change_of_concurrent_writers(postgres_url: str) -> None:
    """Writers on several connections commit in any order; a follower that reads
    `changes_since(its last seq)` while they write must still see every change (an
    identity alone would let seq 11 commit after 12, which the follower then skips)."""
    writers_per_store, writes_each = 4, 25

    async def test() -> None:
        stores = [await PostgresArticleStore.open(postgres_url) for _ in range(3)]
        follower = await PostgresArticleStore.open(postgres_url)
        done = asyncio.Event()

        async def writer(store: PostgresArticleStore, name: str) -> None:
            for i in range(writes_each):
                if random.random() < 0.5:
                    await store.write_articles([write(f"{name}-{i}", "text", {1: vec(1, 0)})])
                else:
                    await store.write_articles([write(f"{name}-{i}", "text")])
                    row = EmbeddingWrite("acme", f"{name}-{i}", vec(0, 1))
                    await store.write_embeddings(1, [row])

        async def follow() -> list[int]:
            seen: list[int] = []
            while True:
                finished = done.is_set()  # read before the last look: nothing comes after
                page = await follower.changes_since(seen[-1] if seen else 0)
                seen.extend(c.seq for c in page)
                if finished and not page:
                    return seen
                await follower.wait_for_change(seen[-1] if seen else 0, timeout_s=0.05)

        following = asyncio.create_task(follow())
        await asyncio.gather(
            *(
                writer(store, f"w{s}-{w}")
                for s, store in enumerate(stores)
                for w in range(writers_per_store)
            )
        )
        done.set()
        seen = await following
        everything = [c.seq for c in await follower.changes_since(0, limit=100_000)]
        assert seen == everything
        assert len(everything) >= len(stores) * writers_per_store * writes_each
        for store in [*stores, follower]:
            await store.close()

    run(test)


def test_the_schema_version_is_recorded_and_a_newer_one_refused(postgres_url: str) -> None:
    async def test() -> None:
        store = await PostgresArticleStore.open(postgres_url)
        await store.close()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            versions = admin.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
            assert [v for (v,) in versions] == list(range(1, latest_version("postgres") + 1))
            admin.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
        with pytest.raises(StoreError, match="schema 99"):
            await PostgresArticleStore.open(postgres_url)

    run(test)


def test_stores_opening_a_new_database_together_migrate_it_once(postgres_url: str) -> None:
    async def test() -> None:
        stores = await asyncio.gather(*(PostgresArticleStore.open(postgres_url) for _ in range(4)))
        await stores[0].write_articles([write("1", "one")])
        for store in stores:
            await store.close()

    run(test)


def test_an_unreachable_server_is_a_store_error_without_the_password(tmp_path) -> None:
    url = f"postgresql://kbrec:s3cret@/kbrec?host={tmp_path}&port=1"  # no socket there

    async def test() -> None:
        with pytest.raises(StoreError) as raised:
            await PostgresArticleStore.open(url)
        assert "s3cret" not in str(raised.value)
        assert "kbrec:***@" in str(raised.value)

    run(test)


def test_commits_are_durable_even_where_the_default_is_not(postgres_url: str) -> None:
    """A database whose default is synchronous_commit=off would acknowledge commits
    not yet on disk: the store's sessions turn it back on."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        database = admin.execute("SELECT current_database()").fetchone()
        assert database is not None
        admin.execute(f"ALTER DATABASE {database[0]} SET synchronous_commit = off")

    async def test() -> None:
        store = await PostgresArticleStore.open(postgres_url)
        async with store._pool.connection() as connection:
            cursor = await connection.execute("SHOW synchronous_commit")
            assert await cursor.fetchone() == ("on",)
        await store.close()

    run(test)


def test_a_leader_whose_session_is_cut_notices_and_someone_else_leads(postgres_url: str) -> None:
    async def test() -> None:
        leader = await PostgresArticleStore.open(postgres_url)
        other = await PostgresArticleStore.open(postgres_url)
        assert await leader.try_lead()
        assert not await other.try_lead()
        (pid,) = sessions_of(postgres_url, "pg_try_advisory_lock")
        await asyncio.to_thread(terminate, postgres_url, [pid])
        assert await other.try_lead()
        assert not await leader.still_leading()
        assert not leader.leads()
        assert not await leader.try_lead()
        await other.close()
        await leader.close()

    run(test)


def test_waiting_survives_a_lost_listen_connection(postgres_url: str) -> None:
    async def test() -> None:
        waiter = await PostgresArticleStore.open(postgres_url)
        writer = await PostgresArticleStore.open(postgres_url)
        await waiter.wait_for_change(0, timeout_s=0.05)  # starts listening
        pids = sessions_of(postgres_url, "LISTEN")
        assert len(pids) == 1
        await asyncio.to_thread(terminate, postgres_url, pids)

        waiting = asyncio.create_task(waiter.wait_for_change(0, timeout_s=30))
        await writer.write_articles([write("1", "one")])
        await asyncio.wait_for(waiting, timeout=10)
        # Listening again, on a new connection: the next change still wakes it.
        waiting = asyncio.create_task(waiter.wait_for_change(1, timeout_s=30))
        await writer.write_articles([write("2", "two")])
        await asyncio.wait_for(waiting, timeout=10)
        await writer.close()
        await waiter.close()

    run(test)
