"""HDR histograms of latencies in microseconds, and the percentiles every report shows.

Recording uses the `hdrhistogram` package as is. Reading does not: its percentile and
mean functions walk all ~23,000 buckets in Python (about 15 ms per percentile), which
would stall the event loop at every progress tick. `LatencySummary.of` computes the
same values, with the same rules, from the bucket counts with NumPy.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US: Final = 1
HIGHEST_US: Final = 3_600_000_000  # one hour: no latency a bounded run can see is larger
SIGNIFICANT_FIGURES: Final = 3  # values within 0.1%
PERCENTILES: Final = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def record_seconds(histogram: HdrHistogram, seconds: float) -> None:
    histogram.record_value(min(max(int(seconds * 1e6), LOWEST_US), HIGHEST_US))


def merged(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    total = new_histogram()
    for histogram in histograms:
        total.add(histogram)
    return total


@functools.cache
def bucket_values() -> tuple[np.ndarray, np.ndarray]:
    """Per bucket index: the highest and the median value it stands for (the same for
    every histogram made by `new_histogram`, so computed once: about 0.1 s, which
    `Recorder` spends before the clock runs)."""
    probe = new_histogram()
    lowest = [probe.get_value_from_index(i) for i in range(probe.counts_len)]
    highest = np.array([probe.get_highest_equivalent_value(v) for v in lowest], dtype=np.int64)
    median = np.array([probe._hdr_median_equiv_value(v) for v in lowest], dtype=np.float64)
    return highest, median


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles in microseconds of the successful requests; zeros when there were none."""

    count: int
    mean_us: float
    p50_us: int
    p90_us: int
    p95_us: int
    p99_us: int
    p999_us: int
    max_us: int

    @classmethod
    def of(cls, histogram: HdrHistogram) -> LatencySummary:
        count = histogram.get_total_count()
        if count == 0:
            return cls(0, 0.0, 0, 0, 0, 0, 0, 0)
        counts = np.frombuffer(histogram.counts, dtype=np.uint64)
        highest, median = bucket_values()
        cumulative = np.cumsum(counts)

        def at(percentile: float) -> int:
            # hdrh's rule: the first bucket whose cumulative count reaches the target count.
            target = max(int(percentile * count / 100 + 0.5), 1)
            return int(highest[int(np.searchsorted(cumulative, target))])

        return cls(
            count=count,
            # Not np.dot: BLAS threads spin after each call and would bill the run CPU.
            mean_us=float((counts * median).sum() / count),
            p50_us=at(50.0),
            p90_us=at(90.0),
            p95_us=at(95.0),
            p99_us=at(99.0),
            p999_us=at(99.9),
            max_us=histogram.get_max_value(),
        )

    def ms(self, name: str) -> float:
        """A field in milliseconds: ms("p99") reads p99_us."""
        return getattr(self, f"{name}_us") / 1000

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
