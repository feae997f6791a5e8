"""A sync import's deletions leave every live index: this process's (under the commit
lock) and, through the change feed, another process's on the same SQLite file."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from serving_helpers import DIM, FakeProvider, publish_bag_of_words_version

from kbrec.records import Article
from server.inference.batching import BatchingConfig
from server.inference.compute_gate import ComputeGate
from server.inference.serving_model import ModelLoader, ServingModel
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import ArticleWrite, StoredArticle, utc_now
from server.versions.feed import ChangeFeed
from server.versions.live_set import LiveVersions
from server.versions.verification import scan_repository


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def article_write(account: str, article_id: str) -> ArticleWrite:
    article = Article(account, article_id, f"title {article_id}", "body", None)
    return ArticleWrite(StoredArticle(article, utc_now()), {1: unit(len(article_id))})


async def no_version_changes() -> None:
    return None


def indexed(model: ServingModel, account_id: str) -> set[str]:
    account = model.index.account(account_id)
    return set() if account is None else {e.article_id for e in account.entries}


def test_sync_deletes_leave_this_and_other_processes_indexes(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    publish_bag_of_words_version(repository)
    (status,) = scan_repository(repository).statuses
    assert status.version is not None

    async def test() -> None:
        db = tmp_path / "kbrec.sqlite"
        here, there = await SqliteArticleStore.open(db), await SqliteArticleStore.open(db)
        with ThreadPoolExecutor(1) as executor:
            loader = ModelLoader(FakeProvider(), BatchingConfig(), executor, ComputeGate())
            writer, reader = LiveVersions(here), LiveVersions(there)
            models = [await loader.open(status.version), await loader.open(status.version)]
            await writer.serve(models[0])
            await reader.serve(models[1])
            feed = ChangeFeed(there, reader, no_version_changes, wait_s=0.05)
            await feed.mark_start()

            await here.write_articles(
                [article_write("acme", i) for i in ("a", "b", "c", "d")]
                + [article_write("other", "a")]
            )
            await writer.load_stored(models[0])
            await feed.catch_up()
            assert indexed(models[0], "acme") == indexed(models[1], "acme") == set("abcd")

            assert await writer.delete_articles_except("acme", {"b", "d", "x"}) == 2

            assert indexed(models[0], "acme") == {"b", "d"}  # at once, in this process
            await feed.catch_up()
            assert indexed(models[1], "acme") == {"b", "d"}  # through the change feed
            for model in models:
                assert indexed(model, "other") == {"a"}
            assert await writer.delete_articles_except("acme", set()) == 2
            await feed.catch_up()
            for model in models:
                assert model.index.account("acme") is None  # no article: no account
                await model.close()
        await here.close()
        await there.close()

    asyncio.run(test())
