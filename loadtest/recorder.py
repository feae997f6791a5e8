"""Counts and latency histograms per measurement window and per second.

A completion belongs to the window in which it completes (perf_analyzer's rule), so
a window's throughput is what the server delivered in it. Requests still in flight
when a step's last window closes are waited for, and their latencies and errors join
that window ("late"): a stall at the very end of a step is not dropped from its
percentiles. Latencies are those of successful (2xx) requests; failures are counted
by kind ("HTTP 503", "timeout", "connection error", ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from loadtest.histogram import (
    LatencySummary,
    bucket_values,
    merged,
    new_histogram,
    record_seconds,
)


@dataclass
class Window:
    """One measurement window (open while `end` is None)."""

    start: float
    end: float | None = None
    sent: int = 0
    ok: int = 0
    late: int = 0  # completions after `end`, recorded while the step drained
    errors: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    histograms: dict[str, HdrHistogram] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        assert self.end is not None, "window still open"
        return self.end - self.start

    @property
    def throughput(self) -> float:
        """Successful completions per second within the window."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def offered_rate(self) -> float:
        """Requests due per second: sent plus dropped (open loop: the schedule's rate)."""
        return (self.sent + self.dropped.total()) / self.duration_s if self.duration_s else 0.0

    def latency(self, op: str | None = None) -> LatencySummary:
        if op is not None:
            return LatencySummary.of(self.histograms.get(op, new_histogram()))
        return LatencySummary.of(merged(self.histograms.values()))

    def record(self, op: str, seconds: float) -> None:
        histogram = self.histograms.get(op)
        if histogram is None:
            histogram = self.histograms[op] = new_histogram()
        record_seconds(histogram, seconds)


def merge_windows(windows: Iterable[Window]) -> Window:
    """One window spanning `windows` (consecutive), with their counts and histograms."""
    windows = list(windows)
    total = Window(start=windows[0].start, end=windows[0].start)
    for window in windows:
        total.sent += window.sent
        total.ok += window.ok
        total.late += window.late
        total.errors.update(window.errors)
        total.dropped.update(window.dropped)
        for op, histogram in window.histograms.items():
            total.histograms.setdefault(op, new_histogram()).add(histogram)
    # Gaps between steps are not load time: the span is the sum of the windows.
    total.end = total.start + sum(w.duration_s for w in windows)
    return total


@dataclass(frozen=True)
class Interval:
    """One second of the run for the progress line and the latency-over-time plot."""

    t: float  # seconds since the run started, at the end of the interval
    step: str
    sent: int
    ok: int
    errors: int
    dropped: int
    in_flight: int
    latency: LatencySummary

    def to_dict(self) -> dict[str, object]:
        values = {k: v for k, v in self.__dict__.items() if k != "latency"}
        return {**values, "latency_us": self.latency.to_dict()}


class Recorder:
    """Receives every event of a run; cheap enough for thousands of requests a second
    (two histogram records per success)."""

    def __init__(self, started: float = 0.0) -> None:
        bucket_values()  # warm the summary tables now, not during the first progress tick
        self.started = started
        self.window: Window | None = None
        self.tail: Window | None = None  # the last closed window, which drains join
        self.timeline: list[Interval] = []
        self.totals = Window(start=started)
        self._second = Window(start=started)

    def start(self, now: float) -> None:
        """Start the clock: run time, totals and the first second count from `now`."""
        self.started = self.totals.start = self._second.start = now

    def on_sent(self) -> None:
        self._second.sent += 1
        self.totals.sent += 1
        if self.window is not None:
            self.window.sent += 1

    def on_dropped(self, reason: str) -> None:
        self._second.dropped[reason] += 1
        self.totals.dropped[reason] += 1
        if self.window is not None:
            self.window.dropped[reason] += 1

    def on_done(self, op: str, latency_s: float, error: str | None) -> None:
        target = self.window if self.window is not None else self.tail
        if error is None:
            self._second.ok += 1
            self.totals.ok += 1
            self._second.record(op, latency_s)
            if target is not None:
                target.record(op, latency_s)
                if target is self.window:
                    target.ok += 1
                else:
                    target.late += 1
        else:
            self._second.errors[error] += 1
            self.totals.errors[error] += 1
            if target is not None:
                target.errors[error] += 1

    def open_window(self, now: float) -> None:
        self.window = Window(start=now)
        self.tail = None

    def close_window(self, now: float) -> Window:
        assert self.window is not None, "no open window"
        window, self.window = self.window, None
        window.end = now
        self.tail = window
        return window

    def end_step(self) -> None:
        """Stop attributing late completions (the step has drained)."""
        self.tail = None

    def tick(self, now: float, step: str, in_flight: int) -> Interval:
        second, self._second = self._second, Window(start=now)
        interval = Interval(
            t=now - self.started,
            step=step,
            sent=second.sent,
            ok=second.ok,
            errors=second.errors.total(),
            dropped=second.dropped.total(),
            in_flight=in_flight,
            latency=second.latency(),
        )
        self.timeline.append(interval)
        return interval
