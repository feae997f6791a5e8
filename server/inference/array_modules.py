"""Where ranking arrays live: NumPy in host memory, or CuPy on a CUDA GPU.

The ranking code is written once against a NumPy-compatible namespace (`xp`), so the
same functions run on the CPU in every test and on the GPU where CuPy finds one. CuPy
is imported only when a GPU is asked for (the `gpu` extra installs it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

RANKING_DEVICES: Final = ("cpu", "cuda", "auto")
RANKING_DTYPES: Final = ("float32", "float16")


@dataclass(frozen=True)
class ArrayModule:
    name: str
    xp: Any  # numpy or cupy
    to_host: Callable[[Any], np.ndarray]


NUMPY = ArrayModule("numpy", np, np.asarray)


class NoGpu(RuntimeError):
    """CuPy is not installed, or it finds no CUDA device."""


def cupy_arrays() -> ArrayModule:
    """CuPy on the current CUDA device; raises NoGpu with the reason when there is none."""
    try:
        import cupy
    except ImportError as exc:
        raise NoGpu(
            f"CuPy is not installed ({exc}): pip install 'kbrec[gpu]' "
            "(cupy-cuda12x, or cupy-cuda13x for CUDA 13)"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver; its type lives in cupy
        raise NoGpu(f"CuPy finds no CUDA driver: {exc}") from exc
    if count == 0:
        raise NoGpu("CuPy finds no CUDA device")
    return ArrayModule("cupy", cupy, cupy.asnumpy)


def gpu_arrays(device: str) -> ArrayModule | None:
    """`--ranking-device`'s GPU: CuPy for cuda (NoGpu if absent), None for cpu, and for
    auto whichever CuPy finds."""
    if device not in RANKING_DEVICES:
        raise ValueError(f"ranking device must be one of {RANKING_DEVICES}, got {device!r}")
    if device == "cpu":
        return None
    try:
        return cupy_arrays()
    except NoGpu:
        if device == "auto":
            return None
        raise
