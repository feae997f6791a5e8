"""The change feed: every process follows the store's change log into its own indexes.

Several processes (workers on a host, replicas on other hosts) share one store. A
process applies its own writes to its indexes before it answers (`LiveVersions`);
everyone else's reach it here: `ChangeFeed` reads the log from the last seq it
applied, wakes on a new change (PostgreSQL LISTEN/NOTIFY; SQLite polls), and for each
changed article re-reads the current row and vectors of every live version and puts
exactly that into the index (a change names what changed, not how, so applying one
twice, or one this process made itself, does no harm). The read and the index update
happen under the commit lock, so a local write cannot land between them and be
overwritten by an older read.

Version records (roles) are the lifecycle's business: a `VERSIONS` change is handed
to `on_versions`, which makes a follower load, switch or drop versions as the leader
recorded (`ModelLifecycle.follow`). `EXPERIMENTS` and `ACCOUNT_SETTINGS` changes go to
`on_experiments`, after the changes before them are applied: an experiment the leader
marked running here finds its trial's vectors in the index (`server.experiments`).

A process that fell behind the log's retention (pruned changes it never saw) reloads
every live index from the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.storage.store import ArticleStore, Change, ChangeKind, StoreError
from server.versions.live_set import LiveVersions

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a store error
# The leader keeps this many changes in the log (a process further behind reloads its
# indexes) and prunes the rest every PRUNE_EVERY_S.
KEEP_CHANGES = 100_000
PRUNE_EVERY_S = 60.0


class FeedObserver(Protocol):
    """Told how long each change took from its commit to this process (`Metrics`)."""

    def observe_feed_delay(self, seconds: float) -> None: ...


@dataclass
class FeedStats:
    applied_seq: int = 0
    applied_changes: int = 0
    rebuilds: int = 0


class ChangeFeed:
    def __init__(
        self,
        store: ArticleStore,
        live: LiveVersions,
        on_versions: Callable[[], Awaitable[None]],
        *,
        on_experiments: Callable[[], Awaitable[None]] | None = None,
        wait_s: float = 1.0,
        batch: int = 1000,
        observer: FeedObserver | None = None,
    ) -> None:
        self._store = store
        self._live = live
        self._on_versions = on_versions
        self._on_experiments = on_experiments
        self._wait_s = wait_s
        self._batch = batch
        self._observer = observer
        self.stats = FeedStats()
        self._task: asyncio.Task[None] | None = None
        self._catching_up = asyncio.Lock()

    @property
    def applied_seq(self) -> int:
        return self.stats.applied_seq

    async def mark_start(self) -> None:
        """Take the log position before the indexes are loaded from the store: changes
        after it are applied again (harmless), none before it is missed."""
        self.stats.applied_seq = await self._store.last_change_seq()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="change-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def catch_up(self) -> int:
        """Apply every change committed so far; returns how many were applied.

        One caller at a time (the feed's task, a follower waiting to be ready): two
        would read and apply the same changes, and the slower could set `applied_seq`
        back."""
        async with self._catching_up:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        applied = 0
        while True:
            changes = await self._store.changes_since(self.stats.applied_seq, self._batch)
            if not changes:
                return applied
            if await self._fell_behind(changes[0].seq):
                await self._rebuild()
            else:
                await self._apply(changes)
            applied += len(changes)
            self.stats.applied_seq = changes[-1].seq
            self.stats.applied_changes += len(changes)

    async def prune(self) -> int:
        """Delete all but the newest KEEP_CHANGES changes (the leader's job)."""
        return await self._store.prune_changes(await self._store.last_change_seq() - KEEP_CHANGES)

    async def _follow(self) -> None:
        while True:
            try:
                await self._store.wait_for_change(self.stats.applied_seq, self._wait_s)
                await self.catch_up()
            except StoreError as exc:
                log.warning("change feed: %s; retrying", exc)
                await asyncio.sleep(RETRY_S)

    async def _fell_behind(self, first_seen: int) -> bool:
        if first_seen <= self.stats.applied_seq + 1:
            return False
        # A gap: a rolled-back transaction's seq, or changes pruned before we saw them.
        return await self._store.first_change_seq() > self.stats.applied_seq + 1

    async def _rebuild(self) -> None:
        log.warning(
            "change feed: changes after seq %d were pruned before this process saw them; "
            "reloading the indexes from the store",
            self.stats.applied_seq,
        )
        self.stats.rebuilds += 1
        await self._live.reload_indexes()
        await self._on_versions()
        if self._on_experiments is not None:
            await self._on_experiments()

    async def _apply(self, changes: Sequence[Change]) -> None:
        keys = list(
            dict.fromkeys(
                (c.account_id, c.article_id)
                for c in changes
                if c.kind in (ChangeKind.ARTICLE, ChangeKind.EMBEDDING)
                and c.account_id is not None
                and c.article_id is not None
            )
        )
        if keys:
            await self._live.refresh_articles(keys)
        if any(c.kind in (ChangeKind.VERSIONS, ChangeKind.EMBEDDINGS_DELETED) for c in changes):
            await self._on_versions()
        if self._on_experiments is not None and any(
            c.kind in (ChangeKind.EXPERIMENTS, ChangeKind.ACCOUNT_SETTINGS) for c in changes
        ):
            await self._on_experiments()
        if self._observer is not None:
            now = time.time()  # `at` is wall-clock time (of the host that wrote it)
            for change in changes:
                committed = parse_time(change.at)
                if committed is not None:
                    self._observer.observe_feed_delay(max(now - committed, 0.0))


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
