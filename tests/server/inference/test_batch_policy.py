"""The p99-target batch policy (`LatencyTarget`): its cost fit, its decisions, its settings,
and a batcher that follows them. Costs are fed in, never measured: nothing here depends
on the machine's speed."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import pytest
from serving_helpers import FakeBackend

from server.inference.batch_policy import FixedWait, LatencyTarget, query_policy
from server.inference.batching import BatchingConfig, MicroBatcher
from server.inference.compute_gate import Lane
from server.settings import Settings, settings_from

MS = 0.001
TEST_TIMEOUT_S = 10.0


def linear_cost(a_ms: float, b_ms: float) -> Callable[[int], float]:
    return lambda rows: (a_ms + b_ms * rows) * MS


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Timed(LatencyTarget):
    """The policy on the test's clock, which moves only when a batch is fed."""

    def __init__(self, target_ms: float, max_batch_size: int = 32, cold_wait_ms: float = 2.0):
        self.clock = Clock()
        super().__init__(target_ms * MS, max_batch_size, cold_wait_ms * MS, self.clock)

    def feed(self, cost: Callable[[int], float], sizes: Sequence[int], every_s: float = 1.0):
        """Observe a batch of each size, one every `every_s` seconds (by default one a
        second: too few queries for the keep-up rule to matter)."""
        for rows in sizes:
            self.clock.now += every_s
            self.observe(rows, cost(rows))


def spread(count: int, largest: int = 32) -> list[int]:
    """`count` batch sizes cycling through 1..largest."""
    return list(itertools.islice(itertools.cycle(range(1, largest + 1)), count))


def test_the_fit_converges_on_a_linear_cost() -> None:
    policy = Timed(40)
    policy.feed(linear_cost(3.0, 0.4), spread(300))
    a, b = policy.fit
    assert a == pytest.approx(3.0 * MS, rel=0.02)
    assert b == pytest.approx(0.4 * MS, rel=0.02)
    assert policy.margin == pytest.approx(1.0, abs=0.02)  # exact costs: no deviation
    assert policy.predicted_cost_s(10) == pytest.approx(7.0 * MS, rel=0.03)


def test_noise_makes_the_prediction_conservative() -> None:
    policy = Timed(40)
    rng = np.random.default_rng(0)
    sizes = spread(400)
    noise = rng.uniform(0.8, 1.2, len(sizes))
    for rows, factor in zip(sizes, noise, strict=True):
        policy.observe(rows, linear_cost(3.0, 0.4)(rows) * factor)
    assert policy.margin > 1.05  # batches run over the fit by ~5% on average
    assert policy.predicted_cost_s(10) > 1.05 * 7.0 * MS


def test_batches_of_one_size_only_are_extrapolated_in_proportion() -> None:
    """Without a spread of sizes the slope is unknown: a larger batch is predicted to
    cost in proportion to its rows (an overestimate), a smaller one not below zero."""
    policy = Timed(40)
    policy.feed(lambda rows: 4 * MS, [4] * 30)
    a, b = policy.fit
    assert a >= 0 and b >= 0
    assert policy.predicted_cost_s(4) == pytest.approx(4 * MS, rel=0.01)
    assert policy.predicted_cost_s(8) == pytest.approx(8 * MS, rel=0.01)
    assert policy.batch_limit() == 20  # T/2 = 20 ms at 1 ms per row


def test_the_limit_shrinks_when_batches_get_expensive_and_grows_when_cheap() -> None:
    policy = Timed(40)  # every batch must fit T/2 = 20 ms
    policy.feed(linear_cost(1.0, 0.1), spread(100))
    assert policy.batch_limit() == 32  # 32 rows cost 4.2 ms
    policy.feed(linear_cost(4.0, 3.0), spread(300, policy.batch_limit()))
    assert policy.batch_limit() == 5  # 4 + 3·5 = 19 ms; 6 would be 22
    # Cheaper again: batches no larger than the limit were seen, yet it grows.
    for _ in range(20):
        policy.feed(linear_cost(1.0, 0.1), spread(policy.batch_limit() * 4, policy.batch_limit()))
    assert policy.batch_limit() == 32


def test_a_batch_of_two_is_tried_while_the_slope_is_unknown() -> None:
    """A lone query at 6 ms: in proportion, two would cost 12 ms > T/2 = 10 ms, so the
    prior alone would never let two queries share a batch and learn what it costs."""
    policy = Timed(20)
    policy.feed(lambda rows: 6 * MS, [1] * 30)
    assert policy.batch_limit() == 2
    policy.feed(linear_cost(5.0, 1.0), [1, 2] * 20)  # two cost 7 ms: they fit
    a, b = policy.fit
    assert a + 2 * b == pytest.approx(7 * MS, rel=0.03)  # the 6 ms regime has faded
    # Larger than any batch seen: the limit grows (towards 5 as larger batches are seen).
    assert 2 < policy.batch_limit() <= 5
    policy.feed(linear_cost(2.0, 6.0), [1, 2] * 40)  # two cost 14 ms: over
    assert policy.batch_limit() == 1


def test_the_limit_never_holds_back_a_batcher_that_cannot_keep_up() -> None:
    """Batches of 5 (19 ms, the most that fits T/2) back to back: queries come faster than
    they are served, and a limit of 5 would only grow the queue."""
    policy = Timed(40)
    cost = linear_cost(4.0, 3.0)
    policy.feed(cost, spread(100, 5))
    assert policy.batch_limit() == 5
    for _ in range(40):  # saturated: each batch full, the next one right after it
        rows = policy.batch_limit()
        policy.feed(cost, [rows], every_s=cost(rows))
    assert policy.batch_limit() == 32
    policy.feed(cost, spread(100, 5))  # quiet again
    assert policy.batch_limit() == 5


def test_the_limit_is_at_least_one_when_one_query_exceeds_the_budget() -> None:
    policy = Timed(10)
    policy.feed(linear_cost(8.0, 1.0), spread(50, 4))
    assert policy.batch_limit() == 1


def test_no_wait_when_one_query_already_costs_half_the_target() -> None:
    policy = Timed(10)
    policy.feed(linear_cost(5.0, 0.5), spread(50, 4))  # one query: 5.5 ms > T/2 = 5 ms
    assert policy.max_wait_s(1) == 0.0
    assert policy.max_wait_s(10) == 0.0


def test_the_wait_is_the_slack_left_by_the_batch_it_would_leave_in() -> None:
    policy = Timed(40)
    # Batches of 8.5 rows on average every 12 ms: ~700 queries/s come.
    policy.feed(linear_cost(2.0, 1.0), spread(300, 16), 0.012)
    assert policy.served_per_s == pytest.approx(8.5 / 0.012, rel=0.3)
    limit = policy.batch_limit()
    assert limit == 17  # 2 + 1·17 = 19 ms <= 20
    assert policy.max_wait_s(1) == pytest.approx(17 * MS, rel=0.03)  # 20 - 3 ms
    assert policy.max_wait_s(10) == pytest.approx(8 * MS, rel=0.05)  # 20 - 12 ms
    assert 0 < policy.max_wait_s(10) < policy.max_wait_s(1)
    # More queued than a batch takes: the batch it would leave in is a full one.
    assert policy.max_wait_s(100) == policy.max_wait_s(limit)


def test_no_wait_when_nobody_is_expected_to_join_in_time() -> None:
    """One query every 50 ms; 17 ms of slack: the next one is not expected in time."""
    policy = Timed(40)
    policy.feed(linear_cost(2.0, 1.0), [1] * 50, 0.050)
    assert policy.served_per_s == pytest.approx(20.0, rel=0.3)
    assert policy.predicted_cost_s(1) == pytest.approx(3 * MS, rel=0.01)
    assert policy.max_wait_s(1) == 0.0
    # Busier: one every 10 ms, so one more is expected within the 17 ms.
    policy.feed(linear_cost(2.0, 1.0), [1] * 50, 0.010)
    assert policy.max_wait_s(1) == pytest.approx(17 * MS, rel=0.01)


def test_a_cold_policy_waits_the_configured_time() -> None:
    policy = Timed(40)
    expensive = linear_cost(30.0, 1.0)  # one query exceeds T/2: a warm policy never waits
    for _ in range(LatencyTarget.WARMUP_BATCHES - 1):
        policy.feed(expensive, [1])
        assert policy.batch_limit() == 32
        assert policy.max_wait_s(1) == 0.002
    policy.feed(expensive, [1])
    assert policy.batch_limit() == 1
    assert policy.max_wait_s(1) == 0.0
    # The cold wait never exceeds half the target.
    assert Timed(2, 32, 5).max_wait_s(1) == 0.001


def test_unusable_observations_are_ignored() -> None:
    policy = Timed(40)
    policy.feed(linear_cost(2.0, 1.0), spread(100, 8))
    before = (policy.fit, policy.margin, policy.batch_limit())
    for rows, seconds in [(0, 0.001), (3, -1.0), (3, math.nan), (3, math.inf)]:
        policy.observe(rows, seconds)
    assert (policy.fit, policy.margin, policy.batch_limit()) == before


@pytest.mark.parametrize(
    "arguments",
    [
        (0.0, 32, 0.002),
        (-0.01, 32, 0.002),
        (math.nan, 32, 0.002),
        (math.inf, 32, 0.002),
        (0.040, 0, 0.002),
        (0.040, 2.5, 0.002),
        (0.040, 32, -0.001),
        (0.040, 32, math.nan),
    ],
)
def test_bad_policy_settings_are_rejected(arguments: tuple[float, int, float]) -> None:
    with pytest.raises(ValueError):
        LatencyTarget(*arguments)


@pytest.mark.parametrize("target", [-1.0, math.nan, math.inf])
def test_bad_targets_are_rejected_by_the_config(target: float) -> None:
    with pytest.raises(ValueError):
        BatchingConfig(target_p99_ms=target)


def test_the_config_picks_the_policy() -> None:
    fixed = query_policy(BatchingConfig(max_batch_size=16, max_wait_ms=3))
    assert isinstance(fixed, FixedWait)
    assert (fixed.batch_limit(), fixed.max_wait_s(1)) == (16, 0.003)
    aiming = query_policy(BatchingConfig(max_batch_size=16, max_wait_ms=3, target_p99_ms=40))
    assert isinstance(aiming, LatencyTarget)
    assert (aiming.target_s, aiming.max_batch_size) == (0.040, 16)
    assert aiming.max_wait_s(1) == 0.003  # cold


def test_the_target_is_a_serve_setting() -> None:
    assert Settings().batching.target_p99_ms == 0  # off by default
    assert Settings.of(target_p99_ms=25.0).batching.target_p99_ms == 25.0
    from_env = settings_from({"KBREC_TARGET_P99_MS": "12.5"})
    assert from_env.batching.target_p99_ms == 12.5


# The batcher with the policy ------------------------------------------------------


class EchoRanker:
    def rank_batch(self, vectors: np.ndarray, payloads: Sequence[object]) -> list[object]:
        return list(payloads)


class FedCost(Timed):
    """The real policy, told a cost that grows with rows instead of the fake backend's
    (near zero, and machine-dependent) seconds; a batch a second on its clock."""

    def __init__(self, cost: Callable[[int], float], target_ms: float) -> None:
        super().__init__(target_ms)
        self.cost = cost
        self.observed: list[int] = []

    def observe(self, rows: int, seconds: float) -> None:
        self.observed.append(rows)
        self.clock.now += 1.0
        super().observe(rows, self.cost(rows))


async def batch_sizes(policy: FixedWait | LatencyTarget, queued: int) -> list[int]:
    """One query goes to the (held) backend alone; `queued` more queue behind it; then
    the backend is released. Returns the size of every backend call."""
    backend = FakeBackend(1, gate=asyncio.Event())
    batcher = MicroBatcher(backend, BatchingConfig(), EchoRanker(), policy=policy)
    batcher.start()
    first = asyncio.create_task(batcher.query([2, 10, 3], "first"))
    while len(backend.calls) < 1:
        await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.query([2, 11, 3], i)) for i in range(queued)]
    while batcher.depth(Lane.QUERY) < queued:
        await asyncio.sleep(0)
    assert backend.gate is not None
    backend.gate.set()
    assert await asyncio.gather(first, *rest) == ["first", *range(queued)]
    await batcher.close()
    return [rows for rows, _ in backend.calls]


def run(test: Awaitable[list[int]]) -> list[int]:
    async def bounded() -> list[int]:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            return await test

    return asyncio.run(bounded())


def test_with_a_target_the_batcher_caps_batches_at_what_fits_half_of_it() -> None:
    cost = linear_cost(4.0, 3.0)  # T/2 = 20 ms fits 5 rows (19 ms), not 6 (22 ms)
    policy = FedCost(cost, 40)
    for rows in spread(40, 8):
        policy.observe(rows, 0.0)  # told `cost`
    policy.observed.clear()
    sizes = run(batch_sizes(policy, 12))
    assert sizes == [1, 5, 5, 2]
    assert policy.observed == sizes  # the batcher reports every batch's rows
    # The fixed wait, same queue: one batch of everything queued.
    assert run(batch_sizes(FixedWait(32, 0.0), 12)) == [1, 12]
