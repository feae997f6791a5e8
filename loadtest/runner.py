"""A whole run: one load level or a sweep, bounded in time and requests, Ctrl-C safe.

A sweep stops at the first step whose p99 passes `max_p99_ms`, or whose share of
failed and dropped requests passes `max_error_rate` (a server that sheds load with
fast 503s keeps a low p99 and is not keeping up either). SIGINT ends the run at
once: sending stops, answers get a second to arrive, and the steps measured so
far are reported, flagged as interrupted.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from loadtest.drivers import Budget, ClosedLoop, Driver, OpenLoop, Stopper
from loadtest.histogram import bucket_values
from loadtest.progress import Progress, progress_line
from loadtest.recorder import Interval, Recorder, Window
from loadtest.step import StepResult, WindowPolicy, run_step
from loadtest.target import Target

INTERRUPTED = "interrupted (SIGINT)"
DURATION_LIMIT = "duration limit"
COMPLETED = "completed"
TICK_S = 1.0


@dataclass(frozen=True)
class RunConfig:
    mode: str  # "open" or "closed"
    loads: tuple[float, ...]  # rates (open) or concurrencies (closed); one unless sweeping
    sweep: bool
    poisson: bool
    duration_s: float  # hard cap on the whole run
    max_requests: int  # hard cap on requests sent
    warmup_s: float
    window_s: float
    max_windows: int  # per step; a single run's windows are fitted to its duration
    stability: float
    max_p99_ms: float | None
    max_error_rate: float
    max_lag_s: float
    seed: int
    # closed: wait out a 429/503's Retry-After before the next request (False: at once)
    honour_retry_after: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("open", "closed"):
            raise ValueError(f"mode must be open or closed, got {self.mode!r}")
        if not self.loads or min(self.loads) <= 0:
            raise ValueError("every rate or concurrency must be > 0")
        if self.mode == "closed" and any(load != int(load) for load in self.loads):
            raise ValueError("concurrencies must be whole numbers")
        if self.duration_s <= 0 or self.max_requests < 1:
            raise ValueError("duration must be > 0 and max requests >= 1")

    def window_policy(self) -> WindowPolicy:
        if self.sweep:
            return WindowPolicy(self.window_s, self.warmup_s, self.max_windows, self.stability)
        # A single run spans its duration with whole windows of about window_s each.
        measured = max(self.duration_s - self.warmup_s, 0.001)
        count = max(1, round(measured / self.window_s))
        return WindowPolicy(measured / count, self.warmup_s, count, None)


@dataclass
class RunResult:
    config: RunConfig
    target: str
    workload: str
    started_at: str
    steps: list[StepResult] = field(default_factory=list)
    timeline: list[Interval] = field(default_factory=list)
    totals: Window | None = None
    stop_reason: str = COMPLETED
    wall_s: float = 0.0
    generator_cpu_s: float = 0.0
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start, end

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == INTERRUPTED


@dataclass(frozen=True)
class Load:
    """What a run loads: the target (made inside the event loop) and the item sequence."""

    make_target: Callable[[], Awaitable[Target]]
    picks: Iterator[int]
    ops: Sequence[str]
    target: str  # descriptions for the reports
    workload: str


async def execute(config: RunConfig, load: Load, progress_stream: TextIO = sys.stderr) -> RunResult:
    loop = asyncio.get_running_loop()
    result = RunResult(
        config, load.target, load.workload, datetime.datetime.now(datetime.UTC).isoformat()
    )
    bucket_values()  # one-time tables (~0.2 s): not part of the generator's measured cost
    started, cpu_started, load_started = loop.time(), time.process_time(), os.getloadavg()[0]
    target = await load.make_target()
    try:
        await target.check()
        await _Run(config, load, target, Progress(progress_stream)).steps(result)
    finally:
        await target.close()
    result.wall_s = loop.time() - started
    result.generator_cpu_s = time.process_time() - cpu_started
    result.load_average = (load_started, os.getloadavg()[0])
    return result


class _Run:
    """The state of one run's steps: deadline, request budget, recorder and progress."""

    def __init__(self, config: RunConfig, load: Load, target: Target, progress: Progress) -> None:
        self.config, self.load, self.target, self.progress = config, load, target, progress
        self.loop = asyncio.get_running_loop()
        self.recorder = Recorder()
        # The clock starts once everything is set up: the duration is all load time.
        self.started = self.loop.time()
        self.recorder.start(self.started)
        self.deadline = self.started + config.duration_s
        self.stopper = Stopper()
        self.budget = Budget(config.max_requests, self.stopper)
        self.step_name = "starting"
        self._ticker = self.loop.call_later(TICK_S, self._tick)

    def _tick(self) -> None:
        interval = self.recorder.tick(self.loop.time(), self.step_name, self.target.in_flight)
        self.progress.show(progress_line(interval, self.recorder.totals))
        self._ticker = self.loop.call_later(TICK_S, self._tick)

    async def steps(self, result: RunResult) -> None:
        self.loop.add_signal_handler(signal.SIGINT, self.stopper.stop, INTERRUPTED)
        try:
            await self._steps(result)
        finally:
            self.loop.remove_signal_handler(signal.SIGINT)
            self._ticker.cancel()
            self.progress.finish()
        result.stop_reason = self.stopper.reason or COMPLETED
        result.timeline = self.recorder.timeline
        result.totals = self.recorder.totals
        result.totals.end = self.loop.time()

    async def _steps(self, result: RunResult) -> None:
        config = self.config
        for index, level in enumerate(config.loads):
            if self.loop.time() >= self.deadline:
                self.stopper.stop(DURATION_LIMIT)
                return
            driver = self._driver(level, index)
            self.step_name = f"step {index + 1}/{len(config.loads)} {driver.mode} {level:g}"
            step = await run_step(
                driver,
                self.target,
                self.recorder,
                config.window_policy(),
                self.stopper,
                self.deadline,
                drain_s=self.target.timeout_s + 1.0,
            )
            if step is not None:
                result.steps.append(step)
            if self.stopper.reason is not None:
                return
            if step is not None and (reason := _sweep_stop(config, step)) is not None:
                self.stopper.stop(reason)
                return
        if self.loop.time() >= self.deadline and len(result.steps) < len(config.loads):
            self.stopper.stop(DURATION_LIMIT)

    def _driver(self, level: float, index: int) -> Driver:
        load, config = self.load, self.config
        common = (self.target, load.picks, load.ops, self.recorder, self.budget)
        if config.mode == "closed":
            return ClosedLoop(
                *common, concurrency=int(level), honour_retry_after=config.honour_retry_after
            )
        return OpenLoop(
            *common,
            rate=level,
            poisson=config.poisson,
            seed=config.seed + 1000 + index,  # its own stream per step, apart from the picks
            max_lag_s=config.max_lag_s,
        )


def _sweep_stop(config: RunConfig, step: StepResult) -> str | None:
    """Why a sweep ends after this step, or None to go on."""
    measured = step.measured
    p99_ms = measured.latency().ms("p99")
    if config.max_p99_ms is not None and p99_ms > config.max_p99_ms:
        return f"p99 {p99_ms:.1f} ms > {config.max_p99_ms:g} ms at {step.label}"
    failed = measured.errors.total() + measured.dropped.total()
    due = measured.ok + measured.late + failed
    if due and failed / due > config.max_error_rate:
        return f"{failed / due:.1%} failed or dropped > {config.max_error_rate:.1%} at {step.label}"
    return None
