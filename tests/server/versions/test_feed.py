"""The change feed on a real SQLite file written by another store object (another
process's view): article writes, deletes and vectors reach this process's index,
version records reach the lifecycle, and a reader behind the pruned log reloads."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from serving_helpers import DIM, FakeProvider, publish_bag_of_words_version

from kbrec.records import Article
from server.inference.batching import BatchingConfig
from server.inference.compute_gate import ComputeGate
from server.inference.serving_model import ModelLoader
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import (
    ArticleWrite,
    EmbeddingWrite,
    StoredArticle,
    VersionRecord,
    VersionRole,
    utc_now,
)
from server.versions.feed import ChangeFeed
from server.versions.live_set import LiveVersions
from server.versions.verification import scan_repository


def article_write(article_id: str, vector: np.ndarray | None) -> ArticleWrite:
    article = Article("acme", article_id, f"title {article_id}", "body", None)
    return ArticleWrite(StoredArticle(article, utc_now()), {} if vector is None else {1: vector})


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_the_feed_applies_other_processes_writes(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    publish_bag_of_words_version(repository)
    (status,) = scan_repository(repository).statuses
    assert status.version is not None

    async def test() -> None:
        db = tmp_path / "kbrec.sqlite"
        writer, reader = await SqliteArticleStore.open(db), await SqliteArticleStore.open(db)
        with ThreadPoolExecutor(1) as executor:
            loader = ModelLoader(FakeProvider(), BatchingConfig(), executor, ComputeGate())
            live = LiveVersions(reader)
            model = await loader.open(status.version)
            await live.serve(model)
            versions_seen: list[int] = []

            async def on_versions() -> None:
                versions_seen.append(1)

            feed = ChangeFeed(reader, live, on_versions)
            await feed.mark_start()

            def indexed() -> set[str]:
                account = model.index.account("acme")
                return set() if account is None else {e.article_id for e in account.entries}

            await writer.write_articles([article_write("1", unit(1)), article_write("2", None)])
            assert await feed.catch_up() == 2
            assert indexed() == {"1"}  # "2" has no vector of version 1 yet
            stored = await writer.get_article("acme", "2")
            assert stored is not None
            await writer.write_embeddings(
                1, [EmbeddingWrite("acme", "2", unit(2), stored.revision)]
            )
            await feed.catch_up()
            assert indexed() == {"1", "2"}
            account = model.index.account("acme")
            assert account is not None
            np.testing.assert_allclose(
                account.matrix[
                    account.entries.index(next(e for e in account.entries if e.article_id == "2"))
                ],
                unit(2),
            )
            await writer.delete_article("acme", "1")
            await feed.catch_up()
            assert indexed() == {"2"}
            assert versions_seen == []
            await writer.save_version_records(
                [VersionRecord(1, VersionRole.ACTIVE, status.version.model_sha256, None, "")]
            )
            await feed.catch_up()
            assert versions_seen == [1]

            # Behind the retention: changes it never saw were pruned → reload everything.
            await writer.write_articles([article_write(str(i), unit(i)) for i in range(3, 8)])
            await writer.prune_changes(await writer.last_change_seq() - 1)
            await feed.catch_up()
            assert feed.stats.rebuilds == 1
            assert indexed() == {"2", "3", "4", "5", "6", "7"}
            await model.close()
        await writer.close()
        await reader.close()

    asyncio.run(test())
