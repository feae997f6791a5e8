"""Every `ArticleStore` behaviour, on both backends (`location`: SQLite, PostgreSQL):
durable writes, vectors per model version, revisions, version records, reopening."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from store_helpers import NOW, run, vec, write

from kbrec.records import Article
from server.storage.opening import open_store
from server.storage.store import EmbeddingWrite, StaleLiveSet, VersionRecord, VersionRole


def test_writes_reads_and_replaces(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        assert await store.write_articles([write("1", "first", {1: vec(1, 0)})]) == [True]
        assert await store.write_articles([write("1", "second", {1: vec(0, 1)})]) == [False]
        stored = await store.get_article("acme", "1")
        assert stored is not None
        assert stored.article == Article("acme", "1", "second", "body of second", "en-us")
        assert stored.updated_at == NOW
        (row,) = await store.index_rows(1, 2)
        assert (row.account_id, row.article_id, row.title, row.locale) == (
            "acme",
            "1",
            "second",
            "en-us",
        )
        np.testing.assert_array_equal(row.vector, vec(0, 1))
        assert await store.get_article("acme", "2") is None
        assert await store.get_article("other", "1") is None
        await store.close()

    run(test)


def test_one_batch_may_write_an_article_twice(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        writes = [write("1", "first", {1: vec(1, 0)}), write("1", "second", {2: vec(0, 1)})]
        assert await store.write_articles(writes) == [True, False]
        stored = await store.get_article("acme", "1")
        assert stored is not None and stored.article.title == "second"
        assert await store.embedding_versions() == {2: 1}  # the later text's vectors only
        assert await store.write_articles([]) == []
        await store.close()

    run(test)


def test_a_rewrite_drops_vectors_of_the_old_text_in_every_version(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "old", {1: vec(1, 0), 2: vec(1, 0, 0)})])
        await store.write_articles([write("1", "new", {2: vec(0, 1, 0)})])
        assert await store.index_rows(1, 2) == []
        assert [a.article.title for a in await store.articles_without_embedding(1, 2)] == ["new"]
        (row,) = await store.index_rows(2, 3)
        np.testing.assert_array_equal(row.vector, vec(0, 1, 0))
        await store.close()

    run(test)


def test_vectors_of_another_dimension_count_as_missing(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one", {1: vec(1, 0)})])
        assert await store.index_rows(1, 3) == []
        assert len(await store.articles_without_embedding(1, 3)) == 1
        await store.close()

    run(test)


def test_embeddings_are_added_per_version_and_skip_deleted_articles(
    location: str | Path,
) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one"), write("2", "two")])
        missing = await store.articles_without_embedding(1, 2)
        assert sorted(a.article.article_id for a in missing) == ["1", "2"]
        written = await store.write_embeddings(
            1,
            [
                EmbeddingWrite("acme", "1", vec(1, 0)),
                EmbeddingWrite("acme", "gone", vec(0, 1)),
            ],
        )
        assert written == [True, False]
        assert [a.article.article_id for a in await store.articles_without_embedding(1, 2)] == ["2"]
        assert [r.article_id for r in await store.index_rows(1, 2)] == ["1"]
        assert await store.write_embeddings(1, []) == []
        await store.close()

    run(test)


def test_delete_removes_the_article_and_its_vectors(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one", {1: vec(1, 0)}), write("2", "two")])
        assert await store.delete_article("acme", "1")
        assert not await store.delete_article("acme", "1")
        assert await store.get_article("acme", "1") is None
        assert await store.index_rows(1, 2) == []
        await store.close()

    run(test)


def test_everything_survives_a_reopen(location: str | Path) -> None:
    async def first() -> None:
        store = await open_store(location)
        writes = [write(str(i), f"title {i}", {1: vec(i, 1)}) for i in range(50)]
        assert all(await store.write_articles(writes))
        await store.close()

    async def second() -> None:
        store = await open_store(location)
        rows = await store.index_rows(1, 2)
        assert len(rows) == 50
        assert {r.article_id: float(r.vector[0]) for r in rows}["7"] == 7.0
        assert await store.last_change_seq() == 50
        await store.close()

    run(first)
    run(second)


def test_a_vector_of_an_older_revision_is_not_stored(location: str | Path) -> None:
    """A background re-embedding must not store the old text's vector over a newer text."""

    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "old")])
        (snapshot,) = await store.articles_without_embedding(2, 2)
        await store.write_articles([write("1", "new")])  # rewritten meanwhile
        stale = EmbeddingWrite("acme", "1", vec(1, 0), revision=snapshot.revision)
        assert await store.write_embeddings(2, [stale]) == [False]
        (current,) = await store.articles_without_embedding(2, 2)
        assert current.revision > snapshot.revision
        fresh = EmbeddingWrite("acme", "1", vec(0, 1), revision=current.revision)
        assert await store.write_embeddings(2, [fresh]) == [True]
        assert await store.count_without_embedding(2, 2) == 0
        await store.close()

    run(test)


def test_a_revision_is_never_given_out_again_after_a_delete(location: str | Path) -> None:
    """Write (revision r), delete, write again: a vector of the first text is refused,
    although the article is back with the same id (revisions used to restart at 0)."""

    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "first text")])
        first = await store.get_article("acme", "1")
        assert first is not None
        assert await store.delete_article("acme", "1")
        await store.write_articles([write("1", "second text")])
        second = await store.get_article("acme", "1")
        assert second is not None and second.revision != first.revision
        stale = EmbeddingWrite("acme", "1", vec(1, 0), revision=first.revision)
        assert await store.write_embeddings(1, [stale]) == [False]
        assert await store.index_rows(1, 2) == []
        fresh = EmbeddingWrite("acme", "1", vec(0, 1), revision=second.revision)
        assert await store.write_embeddings(1, [fresh]) == [True]
        await store.close()

    run(test)


def test_revisions_are_the_seqs_of_the_changes_that_wrote_the_text(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one"), write("2", "two")])
        changes = await store.changes_since(0)
        revisions = {}
        for article_id in ("1", "2"):
            stored = await store.get_article("acme", article_id)
            assert stored is not None
            revisions[article_id] = stored.revision
        assert revisions == {c.article_id: c.seq for c in changes}
        await store.close()

    run(test)


def test_vectors_per_version_are_counted_and_deleted(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles(
            [write("1", "one", {1: vec(1, 0), 2: vec(0, 1)}), write("2", "two", {1: vec(1, 0)})]
        )
        assert await store.embedding_versions() == {1: 2, 2: 1}
        assert await store.delete_embeddings(1) == 2
        assert await store.embedding_versions() == {2: 1}
        assert await store.count_without_embedding(1, 2) == 2
        assert await store.delete_embeddings(1) == 0
        await store.close()

    run(test)


def test_version_records_persist(location: str | Path) -> None:
    records = [
        VersionRecord(1, VersionRole.PREVIOUS, "a" * 64, None, NOW),
        VersionRecord(2, VersionRole.ACTIVE, "b" * 64, None, NOW),
        VersionRecord(3, VersionRole.FAILED, "c" * 64, "model.onnx: sha256 mismatch", NOW),
    ]

    async def first() -> None:
        store = await open_store(location)
        await store.save_version_records(records)
        await store.save_version_records([VersionRecord(1, VersionRole.RETIRED, "a" * 64)])
        await store.close()

    async def second() -> None:
        store = await open_store(location)
        found = await store.version_records()
        assert [(r.version, r.role) for r in found] == [
            (1, VersionRole.RETIRED),
            (2, VersionRole.ACTIVE),
            (3, VersionRole.FAILED),
        ]
        assert found[2] == records[2]
        await store.close()

    run(first)
    run(second)


def test_two_store_objects_see_each_others_writes(location: str | Path) -> None:
    """Several processes share one store: what one commits, the other reads at once."""

    async def test() -> None:
        writer, reader = await open_store(location), await open_store(location)
        await writer.write_articles([write("1", "one", {1: vec(1, 0)})])
        assert [r.article_id for r in await reader.index_rows(1, 2)] == ["1"]
        assert await reader.delete_article("acme", "1")
        assert await writer.get_article("acme", "1") is None
        await writer.close()
        await reader.close()

    run(test)


def test_a_write_without_a_vector_of_a_live_version_is_refused(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        at = NOW
        await store.save_version_records(
            [
                VersionRecord(1, VersionRole.ACTIVE, "a" * 64, None, at),
                VersionRecord(2, VersionRole.CANDIDATE, "b" * 64, None, at),
                VersionRecord(3, VersionRole.RETIRED, "c" * 64, None, at),
            ]
        )
        seq = await store.last_change_seq()
        with pytest.raises(StaleLiveSet) as refused:
            await store.write_articles([write("1", "one", {1: vec(1, 0)})], live_versions=[1])
        assert refused.value.missing == {2}
        assert await store.get_article("acme", "1") is None  # nothing written, nothing logged
        assert await store.last_change_seq() == seq
        both = {1: vec(1, 0), 2: vec(0, 1)}
        assert await store.write_articles([write("1", "one", both)], live_versions=[1, 2]) == [True]
        # No check without live_versions (`kbrec store import` writes text only).
        assert await store.write_articles([write("2", "two")]) == [True]
        await store.close()

    run(test)
