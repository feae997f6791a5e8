"""Open-loop arrival schedules: send-time offsets in seconds from the start of a step.

Constant spacing computes k / rate for each k (no running sum, so no drift over long
runs); Poisson arrivals sum exponential gaps drawn from a seeded generator.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Final

import numpy as np

_CHUNK: Final = 4096


def arrival_offsets(rate: float, poisson: bool, seed: int) -> Iterator[float]:
    """Endless, increasing offsets for `rate` requests per second."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if not poisson:
        return (k / rate for k in itertools.count())
    return _poisson_offsets(rate, seed)


def _poisson_offsets(rate: float, seed: int) -> Iterator[float]:
    rng = np.random.default_rng(seed)
    offset = 0.0
    while True:
        times = offset + np.cumsum(rng.exponential(1.0 / rate, size=_CHUNK))
        offset = float(times[-1])
        yield from times.tolist()
