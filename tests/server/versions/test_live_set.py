"""The live set against version records written by another process (the leader): a
write that lacks a vector of a recorded live version is refused by the store, the
process catches up (loads the version) and writes again with its vector too."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serving_helpers import FakeProvider, publish_bag_of_words_version

from kbrec.records import Article
from server.inference.batching import BatchingConfig
from server.inference.compute_gate import ComputeGate
from server.inference.serving_model import ModelLoader
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import StoredArticle, VersionRecord, VersionRole, utc_now
from server.versions.live_set import LiveVersions, Standby
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
