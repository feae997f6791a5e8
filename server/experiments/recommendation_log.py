"""The recommendation log's writer: answered requests go to the store in batches, off
the request path.

`record` only appends to a bounded in-memory queue (no await, no lock): a request
pays for one record and a deque append. A background task writes what is
queued every `flush_s`, or sooner once a batch is full, one store transaction per
batch. When the store is slower than the requests (or failing), the queue fills and
further rows are dropped and counted (`stats.dropped`), never waited for: the log is
for learning, the answer is what the customer waits for. A failed batch goes back to
the front of the queue and is tried again at the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from server.storage.experiment_tables import LoggedRecommendation
from server.storage.store import ArticleStore, StoreError

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per store transaction


@dataclass
class LogStats:
    written: int = 0
    dropped: int = 0
    failed_writes: int = 0


class RecommendationLog:
    def __init__(self, store: ArticleStore, *, flush_s: float, max_queue: int) -> None:
        self._store = store
        self._flush_s = flush_s
        self._max_queue = max_queue
        self._queue: deque[LoggedRecommendation] = deque()
        self._batch_full = asyncio.Event()
        self._writing = asyncio.Lock()  # one batch at a time: the loop's or a `flush`
        self._task: asyncio.Task[None] | None = None
        self.stats = LogStats()

    @property
    def flush_s(self) -> float:
        return self._flush_s

    @property
    def pending(self) -> int:
        return len(self._queue)

    def record(self, row: LoggedRecommendation) -> None:
        """Queue a row for the next batch; drop it (counted) if the queue is full."""
        if len(self._queue) >= self._max_queue:
            self.stats.dropped += 1
            return
        self._queue.append(row)
        if len(self._queue) >= BATCH_ROWS:
            self._batch_full.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recommendation-log")

    async def flush(self) -> None:
        """Write everything queued so far (and wait for a batch in flight)."""
        async with self._writing:
            while self._queue:
                if not await self._write_batch():
                    return

    async def close(self) -> None:
        """Stop the writer and write what is left (at the service's stop)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(StoreError):
            await self.flush()
        if self._queue:
            log.warning("recommendation log: %d rows not written at stop", len(self._queue))

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), self._flush_s)
            self._batch_full.clear()
            await self.flush()

    async def _write_batch(self) -> bool:
        """Write the oldest batch; False (and the batch queued again) if the store failed."""
        rows = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH_ROWS))]
        try:
            await self._store.log_recommendations(rows)
        except asyncio.CancelledError:
            # Stopping mid-write: `close` writes them again (a row already committed is
            # skipped by its request id).
            self._queue.extendleft(reversed(rows))
            raise
        except StoreError as exc:
            self.stats.failed_writes += 1
            room = max(self._max_queue - len(self._queue), 0)
            self.stats.dropped += max(len(rows) - room, 0)
            self._queue.extendleft(reversed(rows[:room]))
            log.warning("recommendation log: %s; %d rows wait for the next try", exc, room)
            return False
        self.stats.written += len(rows)
        return True
