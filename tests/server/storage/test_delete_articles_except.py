"""`delete_articles_except` (the end of a sync import) on both backends: only the
account's articles outside the kept ids go, with their vectors, in one transaction that
appends an `article` change for each; other accounts are untouched."""

from __future__ import annotations

from pathlib import Path

from store_helpers import run, vec, write

from server.storage.opening import open_store
from server.storage.store import ChangeKind


def test_deletes_the_accounts_articles_outside_the_kept_ids(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles(
            [
                write("1", "one", {1: vec(1, 0), 2: vec(0, 1)}),
                write("2", "two", {1: vec(0, 1)}),
                write("3", "three", {1: vec(1, 1)}),
                write("1", "other one", {1: vec(1, 0)}, account="other"),
                write("9", "other nine", {1: vec(1, 0)}, account="other"),
            ]
        )
        before = await store.last_change_seq()

        gone = await store.delete_articles_except("acme", {"2", "not-stored"})

        assert gone == ["1", "3"]
        assert await store.get_article("acme", "1") is None
        assert await store.get_article("acme", "3") is None
        assert await store.get_article("acme", "2") is not None
        # The other account's "1" shares an article id and stays.
        assert await store.get_article("other", "1") is not None
        assert await store.get_article("other", "9") is not None
        rows = await store.index_rows(1, 2)
        assert sorted((r.account_id, r.article_id) for r in rows) == [
            ("acme", "2"),
            ("other", "1"),
            ("other", "9"),
        ]
        assert await store.index_rows(2, 2) == []  # vectors of every version went with them
        changes = await store.changes_since(before)
        assert [(c.kind, c.account_id, c.article_id) for c in changes] == [
            (ChangeKind.ARTICLE, "acme", "1"),
            (ChangeKind.ARTICLE, "acme", "3"),
        ]
        await store.close()

    run(test)


def test_nothing_to_delete_appends_no_change(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one"), write("2", "two")])
        before = await store.last_change_seq()
        assert await store.delete_articles_except("acme", {"1", "2"}) == []
        assert await store.delete_articles_except("nobody", set()) == []
        assert await store.last_change_seq() == before
        await store.close()

    run(test)


def test_an_empty_keep_set_empties_the_account_and_a_large_one_works(
    location: str | Path,
) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write(str(i), f"title {i}") for i in range(30)])
        # More ids than SQLite takes as query parameters (32,766).
        keep = {str(i) for i in range(0, 40_000, 2)}
        gone = await store.delete_articles_except("acme", keep)
        assert gone == sorted(str(i) for i in range(1, 30, 2))
        assert sorted(await store.delete_articles_except("acme", [])) == sorted(
            str(i) for i in range(0, 30, 2)
        )
        assert await store.count_without_embedding(1, 2) == 0  # no article left
        await store.close()

    run(test)


def test_a_deleted_and_rewritten_article_gets_a_new_revision(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        await store.write_articles([write("1", "one")])
        first = await store.get_article("acme", "1")
        assert first is not None
        await store.delete_articles_except("acme", set())
        await store.write_articles([write("1", "one")])
        again = await store.get_article("acme", "1")
        assert again is not None and again.revision > first.revision
        await store.close()

    run(test)
