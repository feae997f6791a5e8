"""One load level measured over windows: warm up, measure, stop sending, drain.

A sweep step keeps measuring until perf_analyzer's stability rule holds — over the
last three windows, max/min of throughput and of p99 latency are both within
1 + threshold (10%) and no window is empty — or until the window cap. A single run
measures a fixed number of windows spanning its duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from loadtest.drivers import REQUEST_CAP, Driver, Stopper
from loadtest.recorder import Recorder, Window, merge_windows
from loadtest.target import Target

STABILITY_WINDOWS: Final = 3
DEFAULT_STABILITY: Final = 0.10  # perf_analyzer's; a fixed run reports stability by it
INTERRUPT_DRAIN_S: Final = 1.0  # after Ctrl-C, wait this long for answers, then give up
_DRAIN_POLL_S: Final = 0.01


@dataclass(frozen=True)
class WindowPolicy:
    window_s: float
    warmup_s: float
    max_windows: int
    stability: float | None  # None: measure exactly max_windows windows (a fixed run)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.warmup_s < 0 or self.max_windows < 1:
            raise ValueError("window_s must be > 0, warmup_s >= 0 and max_windows >= 1")
        if self.stability is not None and self.max_windows < STABILITY_WINDOWS:
            raise ValueError(f"a stabilising step needs max_windows >= {STABILITY_WINDOWS}")

    def enough(self, windows: Sequence[Window]) -> bool:
        if len(windows) >= self.max_windows:
            return True
        return self.stability is not None and is_stable(windows, self.stability)


def is_stable(windows: Sequence[Window], threshold: float) -> bool:
    """perf_analyzer's rule over the last three windows (throughput and p99)."""
    if len(windows) < STABILITY_WINDOWS:
        return False
    last = windows[-STABILITY_WINDOWS:]
    throughputs = [w.throughput for w in last]
    p99s = [w.latency().p99_us for w in last]
    if min(throughputs) <= 0 or min(p99s) <= 0:
        return False
    return (
        max(throughputs) / min(throughputs) <= 1 + threshold
        and max(p99s) / min(p99s) <= 1 + threshold
    )


@dataclass(frozen=True)
class StepResult:
    mode: str  # "open" or "closed"
    load: float  # requests per second (open) or concurrency (closed)
    windows: tuple[Window, ...]
    stable: bool
    measured: Window  # what the step reports: its last three windows, or all in a fixed run

    @property
    def label(self) -> str:
        return f"{self.load:g}/s" if self.mode == "open" else f"concurrency {self.load:g}"


async def run_step(
    driver: Driver,
    target: Target,
    recorder: Recorder,
    policy: WindowPolicy,
    stopper: Stopper,
    deadline: float,
    drain_s: float,
) -> StepResult | None:
    """Measure one load level; None if it was stopped before its first window closed."""
    loop = asyncio.get_running_loop()
    windows: list[Window] = []
    stable = False
    driver.start()
    try:
        if not await stopper.wait_until(min(loop.time() + policy.warmup_s, deadline)):
            while True:
                recorder.open_window(loop.time())
                stopped = await stopper.wait_until(min(loop.time() + policy.window_s, deadline))
                windows.append(recorder.close_window(loop.time()))
                # Judged as the windows closed: the drain below may still add late
                # latencies to the last one, which belong in its percentiles but must
                # not overturn the decision that ended the step.
                stable = is_stable(windows, policy.stability or DEFAULT_STABILITY)
                if stopped or loop.time() >= deadline or policy.enough(windows):
                    break
    finally:
        driver.stop()
        interrupted = stopper.reason not in (None, REQUEST_CAP)
        await drain(target, INTERRUPT_DRAIN_S if interrupted else drain_s)
        recorder.end_step()
    if not windows:
        return None
    measured_windows = windows if policy.stability is None else windows[-STABILITY_WINDOWS:]
    measured = merge_windows(measured_windows)
    return StepResult(driver.mode, driver.load, tuple(windows), stable, measured)


async def drain(target: Target, limit_s: float) -> None:
    """Wait for the requests in flight (they end by the target's timeout at the latest);
    past `limit_s` the rest are failed as interrupted."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while target.in_flight > 0 and loop.time() < deadline:
        await asyncio.sleep(_DRAIN_POLL_S)
    if target.in_flight > 0:
        target.abandon()
