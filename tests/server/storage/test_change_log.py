"""The change log on both backends: what each write appends, reading and pruning it,
`index_rows_for` (applying changes), `wait_for_change` (waking a follower)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from store_helpers import NOW, run, vec, write

from server.storage.opening import open_store
from server.storage.store import (
    Change,
    ChangeKind,
    EmbeddingWrite,
    VersionRecord,
    VersionRole,
)

# What a change names, without its seq and time.
Named = tuple[ChangeKind, str | None, str | None, int | None]


def named(changes: list[Change]) -> list[Named]:
    return [(c.kind, c.account_id, c.article_id, c.model_version) for c in changes]


def test_every_write_appends_what_it_changed(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        assert await store.last_change_seq() == 0
        assert await store.first_change_seq() == 0
        await store.write_articles([write("1", "one", {1: vec(1, 0)}), write("2", "two")])
        await store.write_embeddings(
            1, [EmbeddingWrite("acme", "2", vec(0, 1)), EmbeddingWrite("acme", "gone", vec(1, 1))]
        )
        await store.delete_article("acme", "1")
        await store.delete_article("acme", "1")  # nothing deleted: nothing changed
        await store.delete_embeddings(1)
        await store.delete_embeddings(1)  # nothing left to delete
        record = VersionRecord(1, VersionRole.ACTIVE, "a" * 64, None, NOW)
        await store.save_version_records([record])
        await store.save_version_records([])

        changes = await store.changes_since(0)
        assert named(changes) == [
            (ChangeKind.ARTICLE, "acme", "1", None),
            (ChangeKind.ARTICLE, "acme", "2", None),
            (ChangeKind.EMBEDDING, "acme", "2", 1),
            (ChangeKind.ARTICLE, "acme", "1", None),
            (ChangeKind.EMBEDDINGS_DELETED, None, None, 1),
            (ChangeKind.VERSIONS, None, None, None),
        ]
        seqs = [c.seq for c in changes]
        assert seqs == sorted(set(seqs))
        assert all(c.at for c in changes)
        assert await store.last_change_seq() == seqs[-1]
        assert await store.first_change_seq() == seqs[0]
        await store.close()

    run(test)


def test_changes_are_read_in_pages_in_seq_order(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        for i in range(7):
            await store.write_articles([write(str(i), f"title {i}")])
        seen: list[Change] = []
        after = 0
        while page := await store.changes_since(after, limit=3):
            assert len(page) <= 3
            seen.extend(page)
            after = page[-1].seq
        assert [c.article_id for c in seen] == [str(i) for i in range(7)]
        assert await store.changes_since(after) == []
        await store.close()

    run(test)


def test_pruning_keeps_the_newest_change_to_mark_the_highest_seq(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        for i in range(5):
            await store.write_articles([write(str(i), f"title {i}")])
        seqs = [c.seq for c in await store.changes_since(0)]
        assert await store.prune_changes(seqs[1]) == 2
        assert await store.first_change_seq() == seqs[2]
        assert [c.seq for c in await store.changes_since(0)] == seqs[2:]
        # Pruning everything keeps the last one: last_change_seq does not go back.
        assert await store.prune_changes(seqs[-1]) == 2
        assert await store.last_change_seq() == seqs[-1]
        assert await store.first_change_seq() == seqs[-1]
        # A seq is never given out again, even after pruning.
        await store.write_articles([write("0", "again")])
        assert await store.last_change_seq() > seqs[-1]
        await store.close()

    run(test)


def test_index_rows_for_reads_only_the_named_articles(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles(
            [
                write("1", "one", {1: vec(1, 0)}),
                write("2", "two", {1: vec(0, 1)}),
                write("3", "three", {2: vec(1, 1)}),
                write("1", "other's", {1: vec(1, 1)}, account="other"),
            ]
        )
        keys = [("acme", "1"), ("acme", "3"), ("acme", "missing"), ("other", "1"), ("acme", "1")]
        rows = await store.index_rows_for(keys, 1, 2)
        assert sorted((r.account_id, r.article_id, r.title) for r in rows) == [
            ("acme", "1", "one"),
            ("other", "1", "other's"),
        ]
        assert await store.index_rows_for([], 1, 2) == []
        assert await store.index_rows_for([("acme", "1")], 1, 3) == []  # another dimension
        many = [("acme", str(i)) for i in range(1000)]  # more than one query's worth
        assert sorted(r.article_id for r in await store.index_rows_for(many, 1, 2)) == ["1", "2"]
        await store.close()

    run(test)


def test_applying_the_changes_follows_the_store(location: str | Path) -> None:
    """A follower that applies changes (re-reading what they name) ends up with the
    same index as a rebuild: the change log is enough to follow another process."""

    async def test() -> None:
        writer, follower = await open_store(location), await open_store(location)
        await writer.write_articles([write("1", "one", {1: vec(1, 0)}), write("2", "two")])
        cursor = await follower.last_change_seq()
        index = {(r.account_id, r.article_id): r for r in await follower.index_rows(1, 2)}

        await writer.write_embeddings(1, [EmbeddingWrite("acme", "2", vec(0, 1))])
        await writer.write_articles(
            [write("1", "one, edited"), write("3", "three", {1: vec(1, 1)})]
        )
        await writer.delete_article("acme", "2")

        changes = await follower.changes_since(cursor)
        keys = list({(c.account_id, c.article_id) for c in changes if c.account_id})
        for key in keys:
            index.pop(key, None)  # gone unless re-read below (deleted or without a vector)
        for row in await follower.index_rows_for(keys, 1, 2):
            index[(row.account_id, row.article_id)] = row
        rebuilt = {(r.account_id, r.article_id) for r in await follower.index_rows(1, 2)}
        assert set(index) == rebuilt == {("acme", "3")}
        await writer.close()
        await follower.close()

    run(test)


def test_wait_for_change_returns_at_once_for_a_change_already_there(
    location: str | Path,
) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one")])
        started = time.monotonic()
        await store.wait_for_change(0, timeout_s=30)
        assert time.monotonic() - started < 5
        await store.close()

    run(test)


def test_wait_for_change_wakes_on_another_store_objects_write(location: str | Path) -> None:
    """PostgreSQL: a NOTIFY from another connection; SQLite: the poll sees the commit."""

    async def test() -> None:
        waiter, writer = await open_store(location), await open_store(location)
        await writer.write_articles([write("1", "one")])
        after = await waiter.last_change_seq()
        started = time.monotonic()
        waiting = asyncio.create_task(waiter.wait_for_change(after, timeout_s=30))
        # Not waiting for anything: gives the waiter time to return early if it would.
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await writer.write_articles([write("2", "two")])
        await asyncio.wait_for(waiting, timeout=10)
        assert time.monotonic() - started < 10
        assert await waiter.last_change_seq() > after
        await waiter.close()
        await writer.close()

    run(test)


def test_wait_for_change_times_out_quietly(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one")])
        last = await store.last_change_seq()
        started = time.monotonic()
        await store.wait_for_change(last, timeout_s=0.3)
        assert 0.29 <= time.monotonic() - started < 5
        await store.close()

    run(test)


def test_a_cancelled_wait_leaves_the_store_usable(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        waiting = asyncio.create_task(store.wait_for_change(0, timeout_s=30))
        await asyncio.sleep(0.1)  # let it start waiting (listening, polling) before the cancel
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await store.write_articles([write("1", "one")])
        await store.wait_for_change(0, timeout_s=5)
        assert await store.last_change_seq() == 1
        await store.close()

    run(test)
