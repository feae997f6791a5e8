"""The live set against version records written by another process (the leader): a
write that lacks a vector of a recorded live version is refused by the store, the
process catches up (loads the version) and writes again with its vector too. And the
bulk load of a version's stored vectors (`load_index`) against an upsert per row."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import FakeProvider, publish_bag_of_words_version

from kbrec.records import Article
from server.inference.batching import BatchingConfig
from server.inference.compute_gate import ComputeGate
from server.inference.device_index import DeviceIndex
from server.inference.device_ranking import rank_on_device
from server.inference.index import ArticleIndex, IndexEntry, VersionIndex
from server.inference.ranking import RankRequest, ScoredArticle, rank_batch
from server.inference.serving_model import ModelLoader
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import IndexRow, StoredArticle, VersionRecord, VersionRole, utc_now
from server.versions.live_set import LiveVersions, Standby, fill_index, load_index
from server.versions.progress import BackfillProgress
from server.versions.verification import scan_repository


def test_a_write_catches_up_with_a_version_recorded_elsewhere(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    publish_bag_of_words_version(repository, seed=0)
    publish_bag_of_words_version(repository, seed=1)
    one, two = (status.version for status in scan_repository(repository).statuses)
    assert one is not None and two is not None

    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        with ThreadPoolExecutor(1) as executor:
            loader = ModelLoader(FakeProvider(), BatchingConfig(), executor, ComputeGate())
            live = LiveVersions(store)
            await live.serve(await loader.open(one))
            # The leader, elsewhere, made version 2 a candidate.
            now = utc_now()
            await store.save_version_records(
                [
                    VersionRecord(1, VersionRole.ACTIVE, one.model_sha256, None, now),
                    VersionRecord(2, VersionRole.CANDIDATE, two.model_sha256, None, now),
                ]
            )
            caught_up: list[int] = []

            async def follow() -> None:  # what ModelLifecycle.follow does, in short
                model = await loader.open(two)
                await live.join(Standby(model, VersionRole.CANDIDATE, BackfillProgress(2)))
                caught_up.append(2)

            live.on_stale_live_set = follow
            article = Article("acme", "1", "printer", "prints blank pages", None)
            assert await live.write_articles([StoredArticle(article, now)], bulk=False) == [True]
            assert caught_up == [2]
            assert await store.embedding_versions() == {1: 1, 2: 1}
            for model in live.models():
                account = model.index.account("acme")
                assert account is not None and "1" in account
                await model.close()
        await store.close()

    asyncio.run(test())


# --- the bulk load of stored vectors --------------------------------------------------

LOCALES = (None, "en-us", "de", "pt-br")
DIM = 16


def dyadic(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Multiples of 1/16: exact in float16, and so are their dot products (sharp ties)."""
    return (rng.integers(-32, 33, size=shape) / 16).astype(np.float32)


def stored_rows(rng: np.random.Generator) -> list[IndexRow]:
    """A store's rows in no particular order: every account in several chunks, tied
    vectors, locales, and some articles given twice with another title and vector."""
    sizes = {"one": 1, "two": 2, "big": 700} | {
        f"acct{i}": int(rng.integers(1, 60)) for i in range(25)
    }
    rows: list[IndexRow] = []
    for account, size in sizes.items():
        vectors = dyadic(rng, size, DIM)
        vectors[1::3] = vectors[0]  # exact ties, broken by article_id
        for i, vector in enumerate(vectors):
            locale = LOCALES[rng.integers(len(LOCALES))]
            rows.append(
                IndexRow(account, f"{rng.integers(10**6):06d}-{i}", f"t{i}", locale, vector)
            )
    for row in [rows[i] for i in rng.choice(len(rows), 60, replace=False)]:  # last one wins
        locale = LOCALES[rng.integers(len(LOCALES))]
        rows.append(IndexRow(row.account_id, row.article_id, "again", locale, dyadic(rng, DIM)))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def ranking(
    index: ArticleIndex, vectors: np.ndarray, requests: list[RankRequest]
) -> list[list[ScoredArticle]]:
    if isinstance(index, DeviceIndex):
        return rank_on_device(index, vectors, requests)
    assert isinstance(index, VersionIndex)
    return rank_batch(index, vectors, requests)


INDEX_KINDS: dict[str, Callable[[], ArticleIndex]] = {
    "host": lambda: VersionIndex(1, DIM),
    "device-float32": lambda: DeviceIndex(1, DIM, dtype="float32", min_rows=16),
    "device-float16": lambda: DeviceIndex(1, DIM, dtype="float16", min_rows=16),
}


def assert_same_index(
    bulk: ArticleIndex, upserted: ArticleIndex, seed: int
) -> list[list[ScoredArticle]]:
    """Same accounts in the same order, same entries and vectors row by row, same
    ranking (ids, order, scores, ties) for random requests; returns that ranking."""
    assert list(bulk.article_counts()) == list(upserted.article_counts())
    for account_id, _ in upserted.article_counts():
        assert bulk.account_entries(account_id) == upserted.account_entries(account_id)
        np.testing.assert_array_equal(
            bulk.account_matrix(account_id), upserted.account_matrix(account_id)
        )
    rng = np.random.default_rng(seed)
    names = [account_id for account_id, _ in upserted.article_counts()] + ["nobody"]
    requests = [
        RankRequest(
            names[rng.integers(len(names))],
            int(rng.choice([1, 3, 10, 100])),
            [*LOCALES, "fr"][rng.integers(5)] if rng.random() < 0.4 else None,
        )
        for _ in range(200)
    ]
    queries = dyadic(rng, len(requests), DIM)
    got = ranking(bulk, queries, requests)
    assert got == ranking(upserted, queries, requests)
    return got


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_the_bulk_load_gives_what_an_upsert_per_row_gives(kind: str) -> None:
    rows = stored_rows(np.random.default_rng(21))
    bulk, upserted = INDEX_KINDS[kind](), INDEX_KINDS[kind]()
    load_index(bulk, rows)
    fill_index(upserted, rows)
    got = assert_same_index(bulk, upserted, seed=1)
    host = VersionIndex(1, DIM)
    fill_index(host, rows)
    assert got == assert_same_index(host, host, seed=1)  # the device ranks as the host
    # Writes after the load: a new article (a device segment moves), an update, a delete.
    for index in (bulk, upserted):
        index.upsert("two", IndexEntry("new", "", "de"), np.ones(DIM, dtype=np.float32))
        index.upsert("big", upserted.account_entries("big")[5], np.zeros(DIM, "f4"))
        assert index.remove("one", upserted.account_entries("one")[0].article_id)
    assert_same_index(bulk, upserted, seed=2)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_the_bulk_load_keeps_what_the_index_holds_as_upserts_would(kind: str) -> None:
    """A start's load may find articles the feed applied first: they keep their places,
    the store's rows overwrite them, the others follow."""
    rng = np.random.default_rng(22)
    rows = stored_rows(rng)
    bulk, upserted = INDEX_KINDS[kind](), INDEX_KINDS[kind]()
    held = [IndexRow(r.account_id, r.article_id, "held", None, dyadic(rng, DIM)) for r in rows[:40]]
    held.append(IndexRow("only-held", "x", "", None, dyadic(rng, DIM)))
    for index in (bulk, upserted):
        fill_index(index, held)
    load_index(bulk, rows)
    fill_index(upserted, rows)
    assert_same_index(bulk, upserted, seed=3)
    assert bulk.account("only-held") is not None


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_the_bulk_load_of_nothing(kind: str) -> None:
    index = INDEX_KINDS[kind]()
    load_index(index, [])
    assert len(index) == 0
    assert ranking(index, np.ones((1, DIM), "f4"), [RankRequest("acme", 5)]) == [[]]


def test_a_reload_puts_the_store_in_the_index_in_one_bulk_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reload_indexes` (and a start's `load_stored`) loads through `load_accounts`, never
    an upsert per row; what the index held but the store lost goes."""
    repository = tmp_path / "repository"
    publish_bag_of_words_version(repository, seed=0)
    (status,) = scan_repository(repository).statuses
    assert status.version is not None
    version = status.version

    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        with ThreadPoolExecutor(1) as executor:
            loader = ModelLoader(FakeProvider(), BatchingConfig(), executor, ComputeGate())
            live = LiveVersions(store)
            model = await loader.open(version)
            await live.serve(model)
            now = utc_now()
            articles = [Article("acme", str(i), f"printer {i}", "prints", None) for i in range(5)]
            await live.write_articles([StoredArticle(a, now) for a in articles], bulk=False)
            model.index.upsert("acme", IndexEntry("stray", "", None), np.ones(model.index.dim))
            calls: list[str] = []
            index = model.index
            load_accounts, upsert = index.load_accounts, index.upsert

            def counted_load(accounts: list, vectors: np.ndarray) -> None:
                calls.append(f"load_accounts {len(vectors)}")
                load_accounts(accounts, vectors)

            def counted_upsert(account_id: str, entry: IndexEntry, vector: np.ndarray) -> None:
                calls.append("upsert")
                upsert(account_id, entry, vector)

            monkeypatch.setattr(index, "load_accounts", counted_load)
            monkeypatch.setattr(index, "upsert", counted_upsert)
            await live.reload_indexes()
            assert calls == ["load_accounts 5"]
            expected = [IndexEntry(a.article_id, a.title, None) for a in articles]
            assert sorted(index.account_entries("acme"), key=str) == sorted(expected, key=str)
            assert await live.load_stored(model) == 5
            assert calls == ["load_accounts 5", "load_accounts 5"]
            await model.close()
        await store.close()

    asyncio.run(test())
