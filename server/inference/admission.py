"""Admission of queries by expected wait, not by rows (`--max-queue-ms`).

A row cap says nothing about time: 256 queued rows are a few milliseconds of work
for a tiny encoder and seconds for MiniLM on two cores. So the batcher asks, for
each new query, how long until its batch is taken: the rows ahead of it (queued,
and in the batch running now) over the rate at which query rows are served. A query
whose expected wait exceeds `max_queue_ms` is refused at once (503): a fast refusal
a client can retry elsewhere, instead of an answer that comes after it gave up.
Counting the whole running batch keeps an admitted query's time to its answer near
max_queue_ms (its wait, then a batch of at most that much work) rather than twice
that; under overload batches hold about half of max_queue_ms of work.

The rate is how fast the queue drains, in wall time: for a batch taken while
queries were still waiting after the previous one (a backlog), rows over the time
from the previous query batch's end to this one's, so whatever else the process
and the machine do between batches (HTTP, article batches, other processes) counts;
without a backlog, rows over the batch's own time (tokenizing, the backend call and
ranking). It is exponentially weighted over batches (`ALPHA`): the sums of rows and
of seconds are weighted, so full batches, those that matter under load, count the
most. At low load batches are small and cost more per row, so a sudden burst is
estimated pessimistically until a few full batches have been seen. Before any batch
was measured only the row cap holds.

Each admitted query also carries a deadline, `DEADLINE_FACTOR` × max_queue_ms after
its arrival: the estimate can be wrong (the machine slows down, an article batch runs
first), and a query still queued past its deadline is dropped with a 503 when its
batch is taken rather than embedded for a client that will not wait for it. The
factor leaves room for the estimate's noise, so that refusals are nearly all the
immediate kind.
"""

from __future__ import annotations

import math

DEADLINE_FACTOR = 2.0  # a queued query is dropped after 2 × max_queue_ms


class QueueAdmission:
    """Whether one more query may queue, from the rows ahead of it and the served rate.

    `max_queue_s` 0 turns the time rules off (row cap only, no deadline).
    """

    ALPHA = 0.2

    def __init__(self, max_queue: int, max_queue_s: float) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        if not 0 <= max_queue_s < math.inf:
            raise ValueError(f"max_queue_s must be finite and >= 0, got {max_queue_s!r}")
        self.max_queue = max_queue
        self.max_queue_s = max_queue_s
        self._rows = 0.0  # exponentially weighted sums over query batches
        self._seconds = 0.0

    @property
    def deadline_s(self) -> float:
        """How long an admitted query may stay queued (inf: no deadline)."""
        return self.max_queue_s * DEADLINE_FACTOR if self.max_queue_s > 0 else math.inf

    @property
    def rows_per_s(self) -> float | None:
        """Query rows served per second of batch time; None before any measured batch."""
        return self._rows / self._seconds if self._seconds > 0 else None

    def observe(self, rows: int, seconds: float) -> None:
        """`rows` queries left the queue in a batch that took `seconds` to serve them."""
        if rows < 1 or not 0 < seconds < math.inf:
            return
        keep = 1 - self.ALPHA
        self._rows = keep * self._rows + rows
        self._seconds = keep * self._seconds + seconds

    def expected_wait_s(self, ahead: int) -> float | None:
        """Seconds until `ahead` rows are served; None while the rate is unknown."""
        rate = self.rows_per_s
        return None if rate is None else ahead / rate

    def refusal(self, queued: int, in_flight: int = 0) -> str | None:
        """Why a new query is refused, or None to admit it. `queued` rows wait and
        `in_flight` rows are in the batch running now: all of them go first."""
        if queued >= self.max_queue:
            return f"query queue is full ({self.max_queue} waiting)"
        if self.max_queue_s <= 0:
            return None
        wait = self.expected_wait_s(queued + in_flight)
        if wait is not None and wait > self.max_queue_s:
            return (
                f"expected wait {wait * 1000:.0f} ms is over the "
                f"{self.max_queue_s * 1000:.0f} ms limit ({queued} queued)"
            )
        return None
