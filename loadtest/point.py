"""One fixed load level and what it cost: the unit of the benchmarks in bench/.

`kbrec loadtest` answers "how does the server behave under this load"; a benchmark
also asks "at what price" and compares configurations level by level. `measure`
runs one level with the harness (warm-up, one measurement window, drain; the same
drivers, client and recorder as `kbrec loadtest`) and reads cumulative counters
before and after it — this process's CPU seconds always, and whatever a benchmark
adds (the server's CPU, its batch metrics, Triton's) — so every cost is a difference
over the same span.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from loadtest.recorder import Window
from loadtest.runner import Load, RunConfig, RunResult, execute
from loadtest.step import DEFAULT_STABILITY, StepResult

GENERATOR_CPU: Final = "generator_cpu_s"
NO_REQUEST_CAP: Final = 1_000_000_000
# Counters read before and after a level: name → cumulative value.
Counters = Callable[[], dict[str, float]]


def level_config(
    mode: str,
    load: float,
    warmup_s: float,
    window_s: float,
    *,
    poisson: bool = False,
    seed: int = 0,
    max_lag_s: float = 1.0,
    honour_retry_after: bool = True,
) -> RunConfig:
    """One level (a rate, or a concurrency): warm-up, then one window of `window_s`."""
    return RunConfig(
        mode=mode,
        loads=(load,),
        sweep=False,
        poisson=poisson,
        duration_s=warmup_s + window_s,
        max_requests=NO_REQUEST_CAP,
        warmup_s=warmup_s,
        window_s=window_s,
        max_windows=1,
        stability=DEFAULT_STABILITY,
        max_p99_ms=None,
        max_error_rate=1.0,
        max_lag_s=max_lag_s,
        seed=seed,
        honour_retry_after=honour_retry_after,
    )


@dataclass(frozen=True)
class Measured:
    result: RunResult
    elapsed_s: float  # wall time the counters span: set-up, warm-up and drain included
    spent: dict[str, float]  # counter differences over elapsed_s

    @property
    def step(self) -> StepResult:
        return self.result.steps[0]

    @property
    def window(self) -> Window:
        return self.step.measured

    def latency_ms(self, name: str) -> float:
        """A percentile of the window's successful requests: latency_ms("p99")."""
        return self.window.latency().ms(name)

    @property
    def completed(self) -> int:
        """Requests answered over the whole span (what the CPU counters paid for)."""
        totals = self.result.totals
        return 0 if totals is None else totals.ok + totals.errors.total()

    def ms_per_request(self, counter: str) -> float:
        return self.spent[counter] / max(self.completed, 1) * 1000

    def cores(self, counter: str) -> float:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return self.spent[counter] / self.elapsed_s

    @property
    def failures(self) -> str:
        """The window's errors and dropped requests by kind, or "0"."""
        window = self.window
        dropped = ((f"dropped ({kind})", n) for kind, n in window.dropped.items())
        kinds = [*window.errors.items(), *dropped]
        return ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds)) or "0"


def measure(config: RunConfig, load: Load, counters: Sequence[Counters] = ()) -> Measured:
    """Run one level (progress line discarded) between two readings of the counters.

    Counters are read outside the event loop, so a slow one (an HTTP GET of /metrics)
    never stalls the load. Ctrl-C ends the level and raises KeyboardInterrupt.
    """

    def read() -> dict[str, float]:
        values = {GENERATOR_CPU: time.process_time()}
        for counter in counters:
            values.update(counter())
        return values

    before, started = read(), time.perf_counter()
    result = asyncio.run(execute(config, load, progress_stream=io.StringIO()))
    elapsed = time.perf_counter() - started
    after = read()
    if result.interrupted:
        raise KeyboardInterrupt
    if not result.steps:
        raise RuntimeError(f"no window measured: {result.stop_reason}")
    return Measured(result, elapsed, {name: after[name] - before[name] for name in after})
