"""Micro-batching: many concurrent embed requests become one backend call.

Two lanes share one backend and one worker task, which runs as many batches at once
as the `ComputeGate` has room for (one per model instance, `--model-instances`):

- QUERY (live recommendations): a batch flushes when `max_batch_size` queries
  wait or the oldest has waited `max_wait_ms`, whichever comes first. The wait is
  counted from the oldest query's arrival, so under load (queries piled up while
  the previous batch ran) the next batch leaves at once. With `target_p99_ms`,
  batch size and wait follow a p99 target instead (`batch_policy.LatencyTarget`).
- INGEST (article writes, index rebuilds): never waits for company, and its
  batches are smaller (`ingest_max_batch_size`), because long articles are slow
  and a query that arrives meanwhile waits for the whole batch.

Priority: while queries wait, they go first, but never more than `ingest_every`
query batches in a row (counted as they finish) when articles wait too, so neither
lane starves the other and a query waits behind at most one (small) article batch.

Admission is tried without waiting: a query whose expected wait (the rows ahead
of it over the rate queries are served) is over `max_queue_ms`, or that finds
`max_queue` rows waiting, raises `Overloaded` at once (an immediate 503, not
unbounded latency; `admission.QueueAdmission`). A query still queued past its
deadline (`admission.DEADLINE_FACTOR` × max_queue_ms) gets `Overloaded` when a batch
is taken instead of being embedded. A query text is cut to `QUERY_CHARS_PER_TOKEN`
characters per token of the model's max length before it is tokenized, so the cost
of a long text is bounded. Bulk ingestion (imports, rebuilds)
instead waits for room (`wait_for_room=True`), as it is already-accepted work,
and keeps at most half of the article queue, so single article writes are still
admitted while an import runs.

Across model versions (the active one and a candidate being re-embedded), all
backend calls go through one `ComputeGate` (`server.inference.compute_gate`):
queries first, then article writes, then background re-embedding
(`embed_background`, which bypasses the queues: its one caller paces itself). A
backend that sets capacity apart for background work (the embedded ONNX Runtime:
a one-thread session of its own) runs re-embedding next to queries instead.

Rows are grouped by length (`length_buckets`) and each group is right-padded to
its longest row; the groups of a batch go to the backend in one `embed_groups`
call (one hop to the embedded backend's thread for the whole batch). The backend must return one
vector per row, or the whole batch fails; any failure reaches every caller of
the batch. Callers that have gone (cancelled futures) are skipped. If the
worker task itself dies, every queued and in-flight caller gets
`BackendUnavailable` and later submissions fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from kbrec.tokenization import pad_batch
from server.errors import NoKnownToken, Overloaded
from server.inference.admission import QueueAdmission
from server.inference.backends.base import BackendError, BackendUnavailable, EmbeddingBackend
from server.inference.batch_policy import BatchPolicy, FixedWait, query_policy
from server.inference.compute_gate import ComputeGate, Lane

log = logging.getLogger(__name__)

P = TypeVar("P", contravariant=True)  # what a query carries besides its tokens (account, top_k)
R = TypeVar("R", covariant=True)  # what a query's caller gets back


class BatchRanker(Protocol[P, R]):
    """Turns a batch's query vectors into one result per query, all at once, so that the
    work on the batch (ranking) is shared too (`server.inference.ranking.IndexRanker`)."""

    def rank_batch(self, vectors: np.ndarray, payloads: Sequence[P]) -> Sequence[R]: ...


class QueryTokenizer(Protocol):
    """The version's tokenizer (`server.inference.tokenizing.VersionTokenizer`)."""

    async def encode(self, texts: Sequence[str]) -> list[list[int]]: ...


class BatchObserver(Protocol):
    """Told about every executed batch (`server.http.metrics.Metrics`)."""

    def observe_batch(self, lane: Lane, rows: int, seconds: float) -> None: ...


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256
    ingest_max_batch_size: int = 8
    ingest_max_queue: int = 64
    ingest_every: int = 4
    target_p99_ms: float = 0.0  # > 0: batch_policy.LatencyTarget instead of max_wait_ms
    # Longest expected wait a query is admitted to (0: only max_queue counts). 500 ms:
    # a refusal is then faster than the answer, and a client with a timeout of a
    # second or more still gets its answer from the queue it joined.
    max_queue_ms: float = 500.0

    def __post_init__(self) -> None:
        for name in (
            "max_batch_size",
            "max_queue",
            "ingest_max_batch_size",
            "ingest_max_queue",
            "ingest_every",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 0 <= self.max_wait_ms < float("inf"):
            raise ValueError(f"max_wait_ms must be finite and >= 0, got {self.max_wait_ms!r}")
        if not 0 <= self.target_p99_ms < float("inf"):
            raise ValueError(f"target_p99_ms must be finite and >= 0, got {self.target_p99_ms!r}")
        if not 0 <= self.max_queue_ms < float("inf"):
            raise ValueError(f"max_queue_ms must be finite and >= 0, got {self.max_queue_ms!r}")
        if self.max_queue < self.max_batch_size:
            raise ValueError("max_queue must be >= max_batch_size, or batches never fill")
        if self.ingest_max_queue < self.ingest_max_batch_size:
            raise ValueError("ingest_max_queue must be >= ingest_max_batch_size")


@dataclass(eq=False)
class _Pending:
    token_ids: Sequence[int]  # empty until tokenized, for a query queued as text
    payload: Any
    future: asyncio.Future[Any]
    enqueued_at: float
    text: str | None = None
    deadline: float = math.inf  # loop time after which it is dropped instead of embedded


class _LaneQueue:
    """A bounded FIFO of pending rows; rows whose caller has gone are dropped lazily."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[_Pending] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def room(self) -> int:
        return self.capacity - len(self._items)

    def append(self, item: _Pending) -> None:
        self._items.append(item)

    def drop_gone(self) -> None:
        if any(item.future.done() for item in self._items):
            self._items = deque(item for item in self._items if not item.future.done())

    def expire(self, now: float) -> list[_Pending]:
        """Remove and return the rows at the front whose deadline has passed (rows are
        queued in deadline order: one budget per lane)."""
        expired: list[_Pending] = []
        while self._items and self._items[0].deadline <= now:
            expired.append(self._items.popleft())
        return expired

    def oldest_enqueued_at(self) -> float | None:
        return self._items[0].enqueued_at if self._items else None

    def take(self, limit: int) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._items and len(batch) < limit:
            item = self._items.popleft()
            if not item.future.done():
                batch.append(item)
        return batch

    def drain(self) -> list[_Pending]:
        items = list(self._items)
        self._items.clear()
        return items


# Padded-length classes: a batch is embedded in one call per class, so short
# tickets are not padded to a long one's length. Measured on realistic tickets
# (bench/service_benchmark.py): one call for the whole batch padded rows of 23
# tokens on average to 81, and made batching slower than no batching at all.
BUCKET_BOUNDS = (16, 32, 64, 128)

# A query text is cut to this many characters per token of the model's max length
# before it is tokenized: a token takes a few characters of ordinary text, so the cut
# never shortens what the model sees, and a 1 MiB text costs the tokenizer no more
# than max_length × 32 characters do.
QUERY_CHARS_PER_TOKEN = 32


def length_buckets(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices grouped by padded-length class, shortest class first."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        bound = next((b for b in BUCKET_BOUNDS if length <= b), sys.maxsize)
        groups.setdefault(bound, []).append(index)
    return [groups[bound] for bound in sorted(groups)]


def fail_callers(batch: Sequence[_Pending], error: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)


def chunked(rows: Sequence[Sequence[int]], size: int) -> Iterator[Sequence[Sequence[int]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class MicroBatcher(Generic[P, R]):
    """Batches query and article rows for one backend (one model version)."""

    def __init__(
        self,
        backend: EmbeddingBackend,
        config: BatchingConfig,
        ranker: BatchRanker[P, R],
        observer: BatchObserver | None = None,
        gate: ComputeGate | None = None,
        policy: BatchPolicy | None = None,
        tokenizer: QueryTokenizer | None = None,
    ) -> None:
        if not isinstance(config, BatchingConfig):
            raise TypeError(f"config must be a BatchingConfig, got {type(config).__name__}")
        self._backend = backend
        self._config = config
        self._ranker = ranker
        self._tokenizer = tokenizer
        self._observer = observer
        self._gate = gate or ComputeGate()
        self._lanes = {
            Lane.QUERY: _LaneQueue(config.max_queue),
            Lane.INGEST: _LaneQueue(config.ingest_max_queue),
        }
        # Articles never wait for company; queries as the policy says.
        self._policies: dict[Lane, BatchPolicy] = {
            Lane.QUERY: policy or query_policy(config),
            Lane.INGEST: FixedWait(config.ingest_max_batch_size, 0.0),
        }
        self._wakeup = asyncio.Event()  # something was queued
        self._room_freed = asyncio.Event()  # something left a queue (or the worker ended)
        self._worker: asyncio.Task[None] | None = None
        self._in_flight: list[list[_Pending]] = []  # the batches running now
        # perf_counter at the end of the last query batch if queries still waited then
        self._query_backlog_since: float | None = None
        self._failure: BackendUnavailable | None = None
        self._worker_error: BaseException | None = None  # what ended the worker, if not a close
        self._query_batches_in_a_row = 0
        self._admission = QueueAdmission(config.max_queue, config.max_queue_ms / 1000)

    @property
    def config(self) -> BatchingConfig:
        return self._config

    @property
    def healthy(self) -> bool:
        return self._worker is not None and self._failure is None

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return not self._in_flight and not any(self._lanes.values())

    def _rows_in_flight(self) -> int:
        return sum(len(batch) for batch in self._in_flight)

    @property
    def admission(self) -> QueueAdmission:
        return self._admission

    def depth(self, lane: Lane) -> int:
        """Rows waiting in `lane` (not counting the batch in flight)."""
        return len(self._lanes[lane])

    def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("batcher already started")
        self._worker = asyncio.get_running_loop().create_task(
            self._work(), name=f"batcher-v{self._backend.model_version}"
        )
        self._worker.add_done_callback(self._on_worker_done)
        self._gate.register(self)

    async def close(self) -> None:
        """Stop the worker; callers still waiting get `BackendUnavailable`."""
        self._gate.unregister(self)
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._fail_everything(self._failure or BackendUnavailable("batcher closed"))

    async def query(self, token_ids: Sequence[int], payload: P) -> R:
        """Embed one query in the next query batch; returns the ranker's result for it."""
        self._admit_query()
        return await self._enqueue(Lane.QUERY, token_ids, payload)

    async def query_text(self, text: str, payload: P) -> R:
        """As `query`, for a text: it is tokenized with its batch, in one tokenizer call
        per batch instead of a thread-pool hop per query, and only once admitted."""
        if self._tokenizer is None:
            raise RuntimeError("this batcher has no tokenizer")
        self._admit_query()
        text = text[: self._backend.max_length * QUERY_CHARS_PER_TOKEN]
        return await self._enqueue(Lane.QUERY, (), payload, text)

    def _admit_query(self) -> None:
        self._raise_if_failed()
        lane = self._lanes[Lane.QUERY]
        lane.drop_gone()
        self._expire(lane)
        refusal = self._admission.refusal(len(lane), self._rows_in_flight())
        if refusal is not None:
            raise Overloaded(refusal)

    def _expire(self, lane: _LaneQueue) -> None:
        """Fail the rows whose deadline passed while they waited (503, not embedded)."""
        for item in lane.expire(asyncio.get_running_loop().time()):
            if not item.future.done():
                waited_ms = self._admission.deadline_s * 1000
                item.future.set_exception(Overloaded(f"waited over {waited_ms:.0f} ms for a batch"))

    async def embed_documents(
        self, documents: Sequence[Sequence[int]], *, wait_for_room: bool = False
    ) -> np.ndarray:
        """Embed articles in the INGEST lane: float32 [len(documents), dim], in order.

        Without `wait_for_room`, all rows are admitted at once or `Overloaded` is raised.
        """
        self._raise_if_failed()
        lane = self._lanes[Lane.INGEST]
        if not documents:
            return np.zeros((0, self._backend.dim), dtype=np.float32)
        lane.drop_gone()
        if not wait_for_room and lane.room() < len(documents):
            raise Overloaded(f"article queue is full ({lane.capacity} waiting)")
        futures: list[asyncio.Future[Any]] = []
        try:
            for chunk in chunked(documents, self._config.ingest_max_batch_size):
                if wait_for_room:
                    await self._wait_for_bulk_room(lane, len(chunk))
                futures.extend(self._enqueue(Lane.INGEST, row, None) for row in chunk)
            rows = await asyncio.gather(*futures)
        except BaseException:
            for future in futures:
                future.cancel()  # the worker skips rows nobody waits for
            raise
        return np.stack(rows).astype(np.float32, copy=False)

    async def embed_background(self, documents: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed articles at the lowest priority, now, without queueing: float32 [n, dim].

        For one caller that paces itself (the re-embedding of a new version). On a
        backend with capacity set apart for it (`isolates_background`) it runs there,
        next to queries; otherwise whenever no query or article write waits.
        """
        self._raise_if_failed()
        if not documents:
            return np.zeros((0, self._backend.dim), dtype=np.float32)
        if not self._backend.isolates_background:
            await self._gate.yield_to_queries()
        started = time.perf_counter()  # loop.time() counts whole ms on uvloop
        vectors = await self._embed(list(documents), Lane.BACKFILL)
        if self._observer is not None:
            seconds = time.perf_counter() - started
            self._observer.observe_batch(Lane.BACKFILL, len(documents), seconds)
        return vectors.astype(np.float32, copy=False)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            # A fresh exception each time: re-raising one instance grows its traceback.
            raise BackendUnavailable(str(self._failure))

    async def _wait_for_bulk_room(self, lane: _LaneQueue, rows: int) -> None:
        bulk_share = max(lane.capacity // 2, rows)
        while True:
            self._raise_if_failed()
            lane.drop_gone()
            if len(lane) + rows <= bulk_share:
                return
            self._room_freed.clear()
            await self._room_freed.wait()

    def _enqueue(
        self, lane: Lane, token_ids: Sequence[int], payload: Any, text: str | None = None
    ) -> asyncio.Future[Any]:
        if len(token_ids) == 0 and text is None:
            raise ValueError("a row needs at least one token")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        now = loop.time()
        deadline = now + self._admission.deadline_s if lane is Lane.QUERY else math.inf
        self._lanes[lane].append(_Pending(token_ids, payload, future, now, text, deadline))
        self._wakeup.set()
        return future

    async def _work(self) -> None:
        """Collect batches and run up to the gate's capacity of them at once (one per model
        instance): the next batch is taken as soon as an instance is free."""
        slots = asyncio.Semaphore(self._gate.capacity)
        running: set[asyncio.Task[None]] = set()
        worker = asyncio.current_task()
        assert worker is not None

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()
            if not task.cancelled() and (error := task.exception()) is not None:
                # A fault outside a batch's own error handling ends the worker, as it
                # would if the batch had run in it: every caller learns of it.
                self._worker_error = error
                worker.cancel()

        try:
            while True:
                await slots.acquire()
                lane = await self._next_lane()
                batch = await self._collect(lane, self._gate.capacity - len(running))
                if not batch:
                    slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._execute(lane, batch))
                running.add(task)
                task.add_done_callback(finished)
        finally:
            for task in running:
                task.cancel()

    async def _next_lane(self) -> Lane:
        queries, articles = self._lanes[Lane.QUERY], self._lanes[Lane.INGEST]
        while True:
            queries.drop_gone()
            articles.drop_gone()
            if queries and (
                not articles or self._query_batches_in_a_row < self._config.ingest_every
            ):
                return Lane.QUERY
            if articles:
                return Lane.INGEST
            self._query_backlog_since = None  # idle: no backlog carries over
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _collect(self, lane: Lane, idle_instances: int = 1) -> list[_Pending]:
        """Wait until `lane` has a full batch or its oldest row's wait is over; take it,
        or its share when several instances are idle: rows that arrived together (a
        burst, clients in step) then run side by side instead of on one instance."""
        queue, policy = self._lanes[lane], self._policies[lane]
        loop = asyncio.get_running_loop()
        while True:
            limit = policy.batch_limit()
            queue.drop_gone()
            self._expire(queue)
            oldest = queue.oldest_enqueued_at()
            if oldest is None:
                return []  # everyone waiting left
            remaining = oldest + policy.max_wait_s(len(queue)) - loop.time()
            if len(queue) >= limit or remaining <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
        self._expire(queue)  # rows that passed their deadline meanwhile are not embedded
        batch = queue.take(min(limit, max(1, math.ceil(len(queue) / idle_instances))))
        self._room_freed.set()
        return batch

    async def _execute(self, lane: Lane, batch: list[_Pending]) -> None:
        started = time.perf_counter()  # loop.time() counts whole ms on uvloop
        running = batch  # `batch` becomes the rows left after tokenizing
        self._in_flight.append(running)
        taken = len(batch)
        try:
            batch = await self._tokenized(batch)
            results = await self._results_for(lane, batch) if batch else []
        except Exception as exc:
            fail_callers(batch, exc)
        except BaseException as exc:
            # Cancellation or a fatal error ends the worker: nobody may hang on it.
            fail_callers(batch, BackendUnavailable(f"batch worker stopped: {exc!r}"))
            raise
        else:
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        self._in_flight = [b for b in self._in_flight if b is not running]
        seconds = time.perf_counter() - started
        if batch:
            self._policies[lane].observe(len(batch), seconds)
        if lane is Lane.QUERY:
            self._observe_drain(taken, started, started + seconds)
            self._query_batches_in_a_row += 1
        else:
            self._query_batches_in_a_row = 0
        if self._observer is not None:
            self._observer.observe_batch(lane, len(batch), seconds)

    async def _embed(self, rows: list[Sequence[int]], lane: Lane) -> np.ndarray:
        """One backend call for the batch's length buckets; vectors in the rows' order."""
        buckets = length_buckets([len(row) for row in rows])
        groups = [pad_batch([rows[i] for i in indices]) for indices in buckets]
        if lane is Lane.BACKFILL and self._backend.isolates_background:
            embedded = [await self._backend.embed_background(group) for group in groups]
        else:
            async with self._gate.hold(lane):
                embedded = await self._backend.embed_groups(groups)
        if len(embedded) != len(groups):
            raise BackendError(f"backend returned {len(embedded)} groups for {len(groups)}")
        out: np.ndarray | None = None
        for indices, vectors in zip(buckets, embedded, strict=True):
            if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
                raise BackendError(f"backend returned {type(vectors).__name__}, not a 2-d array")
            if vectors.shape[0] != len(indices):
                raise BackendError(
                    f"backend returned {vectors.shape[0]} vectors for a batch of {len(indices)}"
                )
            if out is None:
                out = np.empty((len(rows), vectors.shape[1]), dtype=vectors.dtype)
            out[indices] = vectors
        if out is None:
            raise BackendError("empty batch")
        return out

    async def _tokenized(self, batch: list[_Pending]) -> list[_Pending]:
        """Tokenize the queries queued as text, in one call; a text without a single
        token the model knows fails its own caller only. Returns the rows to embed."""
        texts = [item for item in batch if item.text is not None]
        if not texts:
            return batch
        assert self._tokenizer is not None
        rows = await self._tokenizer.encode([item.text or "" for item in texts])
        for item, row in zip(texts, rows, strict=True):
            if row:
                item.token_ids = row
            elif not item.future.done():
                item.future.set_exception(NoKnownToken())
        return [item for item in batch if item.token_ids and not item.future.done()]

    async def _results_for(self, lane: Lane, batch: list[_Pending]) -> list[Any]:
        vectors = await self._embed([item.token_ids for item in batch], lane)
        if lane is Lane.INGEST:
            return list(vectors)
        # Callers that left while the backend ran are not ranked for.
        live = [i for i, item in enumerate(batch) if not item.future.done()]
        finished = self._ranker.rank_batch(vectors[live], [batch[i].payload for i in live])
        if len(finished) != len(live):
            raise BackendError(f"ranker returned {len(finished)} results for {len(live)}")
        results: list[Any] = [None] * len(batch)
        for i, result in zip(live, finished, strict=True):
            results[i] = result
        return results

    def _observe_drain(self, taken: int, started: float, ended: float) -> None:
        """Tell admission how fast the query queue drained: through a backlog, from the
        end of the previous query batch (gaps between batches count), else this batch's
        own time."""
        since = self._query_backlog_since
        self._admission.observe(taken, ended - (started if since is None else since))
        queue = self._lanes[Lane.QUERY]
        queue.drop_gone()
        self._query_backlog_since = ended if queue else None

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        error = self._worker_error or (None if task.cancelled() else task.exception())
        if error is None:
            failure = BackendUnavailable("batcher closed")
        else:
            log.error("batch worker died", exc_info=error)
            failure = BackendUnavailable(f"batch worker died: {error!r}")
        self._fail_everything(failure)

    def _fail_everything(self, failure: BackendUnavailable) -> None:
        self._failure = failure
        for batch in self._in_flight:
            fail_callers(batch, failure)
        self._in_flight = []
        for lane in self._lanes.values():
            fail_callers(lane.drain(), failure)
        self._room_freed.set()  # bulk callers waiting for room must see the failure
