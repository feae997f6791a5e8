"""The live progress line: the last second's traffic and latency, once a second.

On a terminal the line is rewritten in place; into a file or pipe (CI logs) each
second is its own line, so the log keeps the run's history.
"""

from __future__ import annotations

from typing import TextIO

from loadtest.recorder import Interval, Window


def progress_line(interval: Interval, totals: Window) -> str:
    latency = interval.latency
    return (
        f"[{interval.t:5.0f}s] {interval.step} | last 1 s: sent {interval.sent} "
        f"ok {interval.ok} err {interval.errors} drop {interval.dropped} "
        f"p50 {latency.ms('p50'):.1f} ms p99 {latency.ms('p99'):.1f} ms "
        f"max {latency.ms('max'):.1f} ms | in flight {interval.in_flight} | "
        f"total ok {totals.ok} err {totals.errors.total()} drop {totals.dropped.total()}"
    )


class Progress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.in_place = stream.isatty()
        self._width = 0

    def show(self, line: str) -> None:
        if self.in_place:
            padding = " " * max(self._width - len(line), 0)
            self.stream.write(f"\r{line}{padding}")
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.in_place and self._width:
            self.stream.write("\n")
            self.stream.flush()
