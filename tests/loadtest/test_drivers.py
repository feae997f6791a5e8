"""The open loop keeps its schedule, a stall shows in its percentiles (coordinated
omission), the closed loop waits with the server instead, and drops are counted."""

from __future__ import annotations

import asyncio
import io
import itertools
import time

import numpy as np
import pytest
from loadtest_helpers import config, run_against, small_workload

from loadtest.runner import Load, execute
from loadtest.schedule import arrival_offsets
from loadtest.stub_server import StubThread, stub_thread
from loadtest.target import DROP_BEHIND_SCHEDULE, DROP_IN_FLIGHT_CAP, Done

STALL_S = 0.5


def arrivals_between(stub: StubThread, start: float, end: float) -> int:
    return sum(start <= t < end for t in stub.arrivals())


@pytest.mark.parametrize("poisson", [False, True], ids=["constant", "poisson"])
def test_open_loop_sends_at_the_asked_rate(fast_stub: StubThread, poisson: bool) -> None:
    rate, seconds = 200.0, 5.0
    started = fast_stub.now()
    result = run_against(fast_stub.url, config(loads=(rate,), duration_s=seconds, poisson=poisson))
    arrivals = [t for t in fast_stub.arrivals() if t >= started][1:]  # [0]: the pre-flight check
    # What the schedule itself asks for in 5 s (Poisson: this seed's draw, itself near 1000).
    offsets = arrival_offsets(rate, poisson, seed=1000)  # the first step's seed: seed + 1000
    due = sum(1 for _ in itertools.takewhile(lambda t: t < seconds, offsets))
    assert due == pytest.approx(rate * seconds, rel=0.05)
    assert len(arrivals) == pytest.approx(rate * seconds, rel=0.05)
    assert arrivals[-1] - arrivals[0] == pytest.approx(seconds, rel=0.05)
    step = result.steps[0]
    assert step.measured.offered_rate == pytest.approx(rate, rel=0.05)
    assert step.measured.throughput == pytest.approx(rate, rel=0.05)
    assert result.totals is not None and result.totals.dropped.total() == 0


def run_with_stall(mode: str, load: float, stall_at_s: float = 1.0) -> tuple[object, int, int]:
    """A 3 s run against a 10 ms stub that stalls for 0.5 s after `stall_at_s`.

    Returns (result, requests that reached the stub during the stall, all requests).
    """
    with stub_thread(delay_s=0.01) as stub:
        # Armed on the stub's own loop, so it fires stall_at_s after the run starts.
        stub.loop.call_soon_threadsafe(stub.loop.call_later, stall_at_s, stub.server.stall, STALL_S)
        result = run_against(stub.url, config(mode=mode, loads=(load,), duration_s=3.0))
        stalled_until = stub.server.stalled_until
        assert stalled_until > 0, "the stall did not happen"
        during = arrivals_between(stub, stalled_until - STALL_S, stalled_until)
        return result, during, len(stub.arrivals())


def test_a_stall_shows_in_the_open_loop_p99_but_not_the_closed_loops() -> None:
    rate = 50.0
    open_result, open_during, _ = run_with_stall("open", rate)
    closed_result, closed_during, closed_total = run_with_stall("closed", 1)
    with stub_thread(delay_s=0.01) as stub:
        run_against(stub.url, config(mode="closed", loads=(1,), duration_s=3.0))
        baseline_total = len(stub.arrivals())

    # Open loop: requests kept coming during the stall and waited for it, counted from
    # their due times: the stall is in the percentiles.
    open_latency = open_result.steps[0].measured.latency()
    assert open_during >= 0.8 * rate * STALL_S
    assert open_latency.p99_us >= 0.8 * STALL_S * 1e6
    assert open_latency.p90_us >= 0.1 * STALL_S * 1e6  # ~17% of requests met the stall
    # Closed loop: it waited with the server (one request in flight, so one arrival),
    # sent fewer requests, and its p99 hides the stall; only max shows it.
    closed_latency = closed_result.steps[0].measured.latency()
    assert closed_during <= 1
    assert closed_total < 0.9 * baseline_total
    assert closed_latency.p99_us < 0.2 * STALL_S * 1e6
    assert closed_latency.max_us >= 0.8 * STALL_S * 1e6


def test_requests_over_the_in_flight_cap_are_dropped() -> None:
    # 100 ms answers and 5 in flight at most: about 50/s get through of 200/s due.
    with stub_thread(delay_s=0.1) as stub:
        result = run_against(stub.url, config(loads=(200.0,), duration_s=2.0), max_in_flight=5)
    totals = result.totals
    assert totals is not None
    assert totals.dropped[DROP_IN_FLIGHT_CAP] > 200
    assert totals.sent + totals.dropped.total() == pytest.approx(400, abs=2)
    assert totals.ok == pytest.approx(100, rel=0.25)


class FrozenOnceTarget:
    """Answers at once, except that its 20th submit blocks the event loop for 0.3 s,
    as a generator that is descheduled or stuck in a long GC pause would be."""

    timeout_s = 1.0

    def __init__(self) -> None:
        self.in_flight = 0
        self.submits = 0

    async def check(self) -> None:
        pass

    def submit(self, item: int, done: Done) -> bool:
        self.submits += 1
        if self.submits == 20:
            time.sleep(0.3)  # the simulated freeze itself, not a wait for something
        self.in_flight += 1
        loop = asyncio.get_running_loop()
        loop.call_soon(self._answer, item, done)
        return True

    def _answer(self, item: int, done: Done) -> None:
        self.in_flight -= 1
        done(item, asyncio.get_running_loop().time(), None, 0.0)

    def abandon(self) -> int:
        return 0

    async def close(self) -> None:
        pass


def test_requests_due_long_ago_are_dropped_and_the_rest_count_their_lag() -> None:
    workload = small_workload()
    target = FrozenOnceTarget()

    async def make() -> FrozenOnceTarget:
        return target

    run = config(loads=(100.0,), duration_s=1.0, max_lag_s=0.1)
    load = Load(make, iter(itertools.cycle([0])), workload.ops, "frozen", "one query")
    result = asyncio.run(execute(run, load, progress_stream=io.StringIO()))
    totals = result.totals
    assert totals is not None
    # 0.3 s frozen at 100/s: the ~20 requests due more than 0.1 s ago are dropped, those
    # due within 0.1 s are sent late and carry that lag as latency.
    # (More if the machine adds lag of its own; never fewer.)
    assert 17 <= totals.dropped[DROP_BEHIND_SCHEDULE] <= 30
    assert result.steps[0].measured.latency().max_us >= 80_000


class RefusingTarget:
    """Answers every request at once with a 503 asking for `retry_after_s`."""

    timeout_s = 1.0

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.sent: list[float] = []

    async def check(self) -> None:
        pass

    def submit(self, item: int, done: Done) -> bool:
        loop = asyncio.get_running_loop()
        self.sent.append(loop.time())
        self.in_flight += 1
        loop.call_soon(self._answer, item, done)
        return True

    def _answer(self, item: int, done: Done) -> None:
        self.in_flight -= 1
        done(item, asyncio.get_running_loop().time(), "HTTP 503", self.retry_after_s)

    def abandon(self) -> int:
        return 0

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("honour", [True, False], ids=["honoured", "ignored"])
def test_a_closed_loop_client_waits_out_retry_after_unless_told_not_to(honour: bool) -> None:
    target = RefusingTarget(retry_after_s=0.25)

    async def make() -> RefusingTarget:
        return target

    run = config(mode="closed", loads=(2,), duration_s=1.0, honour_retry_after=honour)
    load = Load(make, iter(itertools.cycle([0])), small_workload().ops, "refusing", "one query")
    result = asyncio.run(execute(run, load, progress_stream=io.StringIO()))
    assert result.totals is not None
    if honour:
        # Each of the 2 clients: a request at 0, 0.25, 0.5, 0.75 s (and one more if the
        # machine is quick about the last): never two within one Retry-After.
        assert 8 <= len(target.sent) <= 10
        gaps = np.diff(sorted(target.sent)[::2])
        assert gaps.min() >= 0.25 - 0.01
    else:
        assert len(target.sent) > 200  # at once, again and again
    assert result.totals.errors["HTTP 503"] == len(target.sent)
