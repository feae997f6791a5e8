"""A fixed number of backend calls at a time across model versions, most urgent first.

The active version and a candidate being re-embedded share the same cores or the
same Triton. Every backend call of their batchers passes through one `ComputeGate`:
queries first, then article writes, then background re-embedding
(docs/architecture.md, "Sharing compute between versions"). Its capacity is the
number of model instances (`--model-instances`): calls beyond it wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
from collections.abc import AsyncIterator
from typing import Protocol


class Lane(enum.StrEnum):
    """Kinds of work, most urgent first (the order is the `ComputeGate` priority)."""

    QUERY = "query"
    INGEST = "ingest"
    BACKFILL = "backfill"  # re-embedding every article with a new version, in the background


QUEUED_LANES = (Lane.QUERY, Lane.INGEST)
PRIORITY = {lane: rank for rank, lane in enumerate(Lane)}


# A background step starts only once no query waits in any batcher of the gate,
# checked this often, but defers at most this long (so an upgrade still progresses
# under saturation).
BACKGROUND_POLL_S = 0.005
BACKGROUND_MAX_DEFER_S = 1.0


class QueryQueue(Protocol):
    """What the gate asks of a batcher: how many rows wait in a lane."""

    def depth(self, lane: Lane) -> int: ...


class ComputeGate:
    """Lets `capacity` backend calls run at once; waiters go by lane priority, then arrival.

    Priority only orders calls already waiting at the gate; queries still queued in
    a batcher (its worker busy with the previous batch) are not waiting yet, so a
    background step also defers while any registered batcher has queries queued.
    """

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._running = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._batchers: set[QueryQueue] = set()

    @property
    def capacity(self) -> int:
        return self._capacity

    def register(self, batcher: QueryQueue) -> None:
        self._batchers.add(batcher)

    def unregister(self, batcher: QueryQueue) -> None:
        self._batchers.discard(batcher)

    def queries_waiting(self) -> bool:
        return any(batcher.depth(Lane.QUERY) for batcher in self._batchers)

    async def yield_to_queries(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BACKGROUND_MAX_DEFER_S
        while self.queries_waiting() and loop.time() < deadline:
            await asyncio.sleep(BACKGROUND_POLL_S)

    @contextlib.asynccontextmanager
    async def hold(self, lane: Lane) -> AsyncIterator[None]:
        if self._running >= self._capacity:
            granted = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (PRIORITY[lane], next(self._arrivals), granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # handed over just as the waiter was cancelled
                raise
        else:
            self._running += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():  # skip waiters that were cancelled
                granted.set_result(None)  # the slot passes to it
                return
        self._running -= 1
