"""When a query batch leaves: how many queries it may take, and how long the oldest
may wait for company.

The batcher asks its policy before each query batch and tells it what each batch
cost. `FixedWait` is the classic rule (flush at `max_batch_size` or after
`max_wait_ms`). `LatencyTarget` aims at a p99 target T instead (`--target-p99-ms`):

Why half the target. A query's time in the batcher is at most the rest of the batch
that is running when it arrives, then its own batch. If no batch may cost more than
T/2, a query that arrives just after a batch left waits at most one batch and then
its own: T. A query that finds the worker idle waits for company only as long as
that wait plus its own batch stays within T/2, so it never pushes the next arrival
past T either. Hence the limit is the largest batch predicted to cost <= T/2, and the
oldest query's wait is what is left of T/2 after the predicted cost of the batch it
would leave in. What the batcher does not see (HTTP, tokenization) comes on top; it
fits because the worst case (a full batch just ahead, then a full own batch) is
rare at the 99th percentile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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


class LatencyTarget:
    """Batch size and wait chosen so that a query's time in the batcher meets a p99 target.

    Cost. A batch of n queries is modelled as c(n) = a + b·n, fitted by least squares
    over exponentially weighted moments of the observed (rows, seconds): each batch
    has weight `ALPHA`, so the fit follows a machine that gets busier within about
    1/ALPHA batches. When the batches seen had (nearly) one size the slope is not
    identified: the fit is pulled (ridge, `RIDGE_ROWS2`) towards b = mean(c)/mean(n),
    cost in proportion to rows, which overestimates larger batches (batching never
    costs more per row), so the limit grows as larger batches are seen. That prior
    alone would never let a batch of two form once a lone query costs over T/4, so
    while the slope is unknown (`KNOWN_SLOPE_ROWS2`) the limit is at least 2: two
    queries together finish no later than one after the other. a and b are never
    negative. The prediction is conservative: the fit times 1 + `MARGIN_DEVIATIONS` ×
    the weighted mean of how far batches ran over their prediction, relative (0 for
    those under; each capped at 1, so one stall does not stop batching for long). It
    also pays for the batcher's clock: under uvloop, `loop.time()` counts whole
    milliseconds, so a 1.4 ms batch reads as 1 or 2 ms.

    Keeping up. A limit below the batch that keeps up with the load only grows the
    queue: then every query misses the target, by more each batch. So the limit is
    never below `HEADROOM` × the batch n that the rate of queries served, r (rows over
    about the last `RATE_WINDOW_S`, decaying exponentially), needs: n = r·c(n), i.e.
    n = r·a / (1 − r·b); under overload (r·b >= 1) it is max_batch_size. A saturated
    batcher serves r = limit / c(limit), which needs n = limit, so the limit grows
    (HEADROOM ×) until the queue stops growing. The target yields to throughput
    then, as it is lost anyway.

    Wait. Waiting for company only pays if someone comes: r says whether one more
    query is expected within the slack; if not, the batch leaves at once, so at low
    load nobody waits.

    Until `WARMUP_BATCHES` batches were seen it behaves like `FixedWait` with
    `cold_wait_s` (at most T/2). Every call is O(1): the fit is refreshed once per
    observed batch.
    """

    ALPHA = 0.1
    WARMUP_BATCHES = 8
    RIDGE_ROWS2 = 0.02  # the weight of the proportional prior, in rows² of spread of n
    KNOWN_SLOPE_ROWS2 = 0.05  # spread of n from which the slope counts as known
    MARGIN_DEVIATIONS = 2.0
    HEADROOM = 2.0
    RATE_WINDOW_S = 0.1

    def __init__(
        self,
        target_s: float,
        max_batch_size: int,
        cold_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < target_s < math.inf:
            raise ValueError(f"the p99 target must be finite and > 0, got {target_s!r}")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        if not 0 <= cold_wait_s < math.inf:
            raise ValueError(f"cold_wait_s must be finite and >= 0, got {cold_wait_s!r}")
        self.target_s = target_s
        self.max_batch_size = max_batch_size
        self._budget_s = target_s / 2
        self._cold_wait_s = min(cold_wait_s, self._budget_s)
        self._clock = clock
        self._batches = 0
        # Exponentially weighted sums: weight, n, c, n², n·c; and of relative overruns.
        self._w = self._n = self._c = self._nn = self._nc = 0.0
        self._over_w = self._over = 0.0
        self._recent_rows = 0.0  # rows served, each weighted exp(-age / RATE_WINDOW_S)
        self._last_seen: float | None = None
        self._a = self._b = 0.0
        self._limit = max_batch_size

    @property
    def warm(self) -> bool:
        return self._batches >= self.WARMUP_BATCHES

    @property
    def fit(self) -> tuple[float, float]:
        """(a, b) of the fitted cost a + b·n, seconds (no margin)."""
        return self._a, self._b

    @property
    def margin(self) -> float:
        """The factor applied to the fitted cost: 1 + MARGIN_DEVIATIONS × mean overrun."""
        overrun = self._over / self._over_w if self._over_w else 0.0
        return 1.0 + self.MARGIN_DEVIATIONS * overrun

    @property
    def served_per_s(self) -> float:
        """Queries served per second over about the last RATE_WINDOW_S (at the last batch)."""
        return self._recent_rows / self.RATE_WINDOW_S

    def predicted_cost_s(self, rows: int) -> float:
        """Conservative seconds of a batch of `rows` queries (0 before any observation)."""
        return (self._a + self._b * rows) * self.margin

    def batch_limit(self) -> int:
        return self._limit if self.warm else self.max_batch_size

    def max_wait_s(self, queued: int) -> float:
        if not self.warm:
            return self._cold_wait_s
        slack = self._budget_s - self.predicted_cost_s(min(max(queued, 1), self._limit))
        if slack <= 0 or self.served_per_s * slack < 1:
            return 0.0  # over budget already, or nobody expected to join in time
        return slack

    def observe(self, rows: int, seconds: float) -> None:
        if rows < 1 or not 0 <= seconds < math.inf:
            return
        keep = 1 - self.ALPHA
        now = self._clock()
        if self._last_seen is not None:
            self._recent_rows *= math.exp(-max(now - self._last_seen, 0.0) / self.RATE_WINDOW_S)
        self._recent_rows += rows
        self._last_seen = now
        if self._batches:
            fitted = self._a + self._b * rows
            overrun = min(max(seconds - fitted, 0.0) / fitted, 1.0) if fitted > 0 else 1.0
            self._over_w = keep * self._over_w + 1
            self._over = keep * self._over + overrun
        self._batches += 1
        n = float(rows)
        self._w = keep * self._w + 1
        self._n = keep * self._n + n
        self._c = keep * self._c + seconds
        self._nn = keep * self._nn + n * n
        self._nc = keep * self._nc + n * seconds
        self._refit()

    def _refit(self) -> None:
        mean_n, mean_c = self._n / self._w, self._c / self._w
        var_n = max(self._nn / self._w - mean_n * mean_n, 0.0)
        cov = self._nc / self._w - mean_n * mean_c
        proportional = mean_c / mean_n
        b = max((cov + self.RIDGE_ROWS2 * proportional) / (var_n + self.RIDGE_ROWS2), 0.0)
        a = mean_c - b * mean_n
        if a < 0:  # costs growing faster than rows: keep the line through the mean
            a, b = 0.0, proportional
        self._a, self._b = a, b
        self._limit = self._largest_batch_within_budget()
        slope_unknown = var_n < self.KNOWN_SLOPE_ROWS2
        if slope_unknown and self._limit == 1 and self.predicted_cost_s(1) <= self._budget_s:
            self._limit = min(2, self.max_batch_size)
        self._limit = max(self._limit, self._batch_that_keeps_up())

    def _batch_that_keeps_up(self) -> int:
        """HEADROOM × the batch size at which batches are served as fast as queries come."""
        rate, margin = self.served_per_s, self.margin
        busy = rate * self._b * margin  # the share of each second the rows themselves take
        if busy >= 1:
            return self.max_batch_size
        needed = rate * self._a * margin / (1 - busy)
        return max(1, min(self.max_batch_size, math.ceil(self.HEADROOM * needed)))

    def _largest_batch_within_budget(self) -> int:
        budget = self._budget_s / self.margin
        if self._a + self._b >= budget:
            return 1
        if self._b <= 0:
            return self.max_batch_size
        # The epsilon: a batch predicted at exactly the budget fits, despite rounding.
        rows = math.floor((budget - self._a) / self._b + 1e-9)
        return max(1, min(self.max_batch_size, rows))


class PolicySettings(Protocol):
    """The knobs a query policy is built from (`BatchingConfig` has them)."""

    @property
    def max_batch_size(self) -> int: ...

    @property
    def max_wait_ms(self) -> float: ...

    @property
    def target_p99_ms(self) -> float: ...


def query_policy(config: PolicySettings) -> BatchPolicy:
    """`LatencyTarget` when a p99 target is set (> 0), else `FixedWait`."""
    if config.target_p99_ms > 0:
        return LatencyTarget(
            config.target_p99_ms / 1000, config.max_batch_size, config.max_wait_ms / 1000
        )
    return FixedWait(config.max_batch_size, config.max_wait_ms / 1000)
