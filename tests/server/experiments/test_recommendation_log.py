"""The recommendation log's writer on a real SQLite store: batches in order, written by the
background task within its interval, the rest at close; a slow store makes it drop (and
count) instead of wait, a failing one gets the batch again at the next flush."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from server.experiments.recommendation_log import BATCH_ROWS, RecommendationLog
from server.storage.experiment_tables import LoggedRecommendation
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import StoreError

AT = "2026-11-27T12:00:00.000+00:00"


def row(i: int) -> LoggedRecommendation:
    return LoggedRecommendation(f"{i:032x}", "acme", 1, ("a1",), (0.5,), AT)


class GatedStore:
    """The real store, with `log_recommendations` held by a gate or failing on demand."""

    def __init__(self, store: SqliteArticleStore) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False
        self.batches: list[int] = []

    async def log_recommendations(self, rows: list[LoggedRecommendation]) -> int:
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise StoreError("disk full")
        self.batches.append(len(rows))
        return await self.store.log_recommendations(rows)


async def logged_ids(store: SqliteArticleStore) -> list[str]:
    return [o.recommendation.request_id for o in await store.logged_outcomes(account_id="acme")]


def run(test) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(test())


def test_batches_in_order_by_the_background_writer_and_at_close(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        gated = GatedStore(store)
        log = RecommendationLog(gated, flush_s=0.05, max_queue=10_000)  # type: ignore[arg-type]
        log.start()
        for i in range(BATCH_ROWS * 2 + 10):
            log.record(row(i))
        deadline = time.monotonic() + 10
        while log.stats.written < BATCH_ROWS * 2 + 10:  # the writer's own flushes
            assert time.monotonic() < deadline, log.stats
            await asyncio.sleep(0.01)
        assert max(gated.batches) == BATCH_ROWS
        log.record(row(99_999))  # queued when the writer stops: written by close
        await log.close()
        ids = await logged_ids(store)
        assert ids == sorted(ids) and len(ids) == BATCH_ROWS * 2 + 11
        assert (log.stats.dropped, log.pending) == (0, 0)
        await store.close()

    run(test)


def test_a_slow_store_makes_it_drop_not_wait(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        gated = GatedStore(store)
        gated.gate.clear()  # the store does not answer
        log = RecommendationLog(gated, flush_s=0.01, max_queue=100)  # type: ignore[arg-type]
        log.start()
        log.record(row(0))
        while log.pending != 0:  # the writer took it and waits on the store
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        for i in range(1, 301):
            log.record(row(i))  # never waits
        assert time.perf_counter() - started < 0.05
        assert (log.pending, log.stats.dropped) == (100, 200)
        gated.gate.set()
        await log.close()
        assert len(await logged_ids(store)) == 101  # the first, and the 100 that fit
        await store.close()

    run(test)


def test_a_failed_batch_is_written_at_the_next_flush(tmp_path: Path) -> None:
    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        gated = GatedStore(store)
        gated.fail_next = True
        log = RecommendationLog(gated, flush_s=60, max_queue=1000)  # type: ignore[arg-type]
        for i in range(10):
            log.record(row(i))
        await log.flush()  # fails: kept
        assert (log.pending, log.stats.failed_writes, log.stats.written) == (10, 1, 0)
        await log.flush()
        assert (log.pending, log.stats.written, log.stats.dropped) == (0, 10, 0)
        assert len(await logged_ids(store)) == 10
        await store.close()

    run(test)


def test_the_retention_prunes_old_requests_only(tmp_path: Path) -> None:
    from server.experiments.coordinator import Experiments, LogPolicy
    from server.experiments.min_scores import MinScores
    from server.storage.store import utc_now

    def policy(days: float) -> LogPolicy:
        return LogPolicy(True, False, days, flush_s=1, max_queue=10)

    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        old = LoggedRecommendation(
            "0" * 32, "acme", 1, ("a1",), (0.5,), "2020-01-01T00:00:00.000+00:00"
        )
        new = LoggedRecommendation("1" * 32, "acme", 1, ("a1",), (0.5,), utc_now())
        await store.log_recommendations([old, new])
        # The pruning needs no lifecycle.
        keep_all = Experiments(store, None, policy(0), MinScores())  # type: ignore[arg-type]
        assert await keep_all.prune_log() == 0
        month = Experiments(store, None, policy(30), MinScores())  # type: ignore[arg-type]
        assert await month.prune_log() == 1
        assert await logged_ids(store) == ["1" * 32]
        await store.close()

    run(test)
