"""When a query batch leaves: how many queries it may take, and how long the oldest
may wait for company.

The batcher asks its policy before each query batch and tells it what each batch
cost. `FixedWait` is the classic rule (flush at `max_batch_size` or after
`max_wait_ms`); a policy that aims at a latency target instead goes beside it.
"""

from __future__ import annotations

from typing import Protocol


class BatchPolicy(Protocol):
    def batch_limit(self) -> int:
        """Most queries the next batch may take."""
        ...

    def max_wait_s(self, queued: int) -> float:
        """How long the oldest of `queued` waiting queries may wait before its batch leaves."""
        ...

    def observe(self, rows: int, seconds: float) -> None:
        """A query batch of `rows` took `seconds` (backend and ranking)."""
        ...


class FixedWait:
    """Flush at `max_batch_size` queries or when the oldest has waited `max_wait_s`."""

    def __init__(self, max_batch_size: int, max_wait_s: float) -> None:
        self._limit = max_batch_size
        self._wait_s = max_wait_s

    def batch_limit(self) -> int:
        return self._limit

    def max_wait_s(self, queued: int) -> float:
        return self._wait_s

    def observe(self, rows: int, seconds: float) -> None:
        return None
