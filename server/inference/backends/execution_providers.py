"""Which ONNX Runtime execution providers run the embedded encoder (`--device`).

- cpu: the CPU provider only.
- cuda: TensorRT first when this onnxruntime build has it (its engines cached on disk
  per model, so a restart does not rebuild them), then CUDA, then the CPU for any node
  neither takes. Needs `onnxruntime-gpu` (the `gpu` extra) in place of `onnxruntime`.

`onnxruntime-gpu` without a usable GPU, or without TensorRT's libraries, falls back to
the next provider with only a log line (docs/architecture.md, "Platform facts"): so the
providers are checked before a session is made (`require_device`) and after
(`require_on_device`). On the device a batch runs with I/O binding (`run_bound`).

Written from ONNX Runtime's documentation (execution providers, TensorRT provider
options, I/O binding); it has not run on a GPU yet (README, "GPU").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from server.inference.backends.base import ENCODER_DEVICES

CPU: Final = "CPUExecutionProvider"
CUDA: Final = "CUDAExecutionProvider"
TENSORRT: Final = "TensorrtExecutionProvider"
DEVICE_PROVIDERS: Final = frozenset({CUDA, TENSORRT})

ProviderSpec = str | tuple[str, dict[str, Any]]


class MissingProvider(ValueError):
    """`--device cuda` and this onnxruntime cannot run on a GPU."""


def require_device(device: str, available: Sequence[str] | None = None) -> None:
    """Raise MissingProvider unless this onnxruntime can run on `device`."""
    if device not in ENCODER_DEVICES:
        raise ValueError(f"device must be one of {ENCODER_DEVICES}, got {device!r}")
    if device == "cpu":
        return
    available = ort.get_available_providers() if available is None else available
    if CUDA not in available:
        raise MissingProvider(
            f"--device cuda needs onnxruntime-gpu (pip install 'kbrec[gpu]', which replaces "
            f"onnxruntime); onnxruntime {ort.__version__} here has {list(available)}"
        )


def execution_providers(
    device: str, cache_dir: Path, available: Sequence[str] | None = None
) -> list[ProviderSpec]:
    """The `providers` argument of a session on `device`, most preferred first."""
    available = ort.get_available_providers() if available is None else available
    require_device(device, available)
    if device == "cpu":
        return [CPU]
    providers: list[ProviderSpec] = []
    if TENSORRT in available:
        providers.append(
            (
                TENSORRT,
                {
                    "device_id": 0,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(cache_dir),
                },
            )
        )
    providers += [(CUDA, {"device_id": 0}), CPU]
    return providers


def require_on_device(session_providers: Sequence[str], device: str) -> None:
    """After loading: the session really got a GPU provider (none is a silent CPU run)."""
    if device == "cuda" and not DEVICE_PROVIDERS & set(session_providers):
        raise MissingProvider(
            f"ONNX Runtime fell back to {list(session_providers)}: no usable CUDA device "
            "(see its log lines above)"
        )


def tensorrt_cache_dir(model_sha256: str) -> Path:
    """Engines of one model, built for this host's GPU: the user cache, never the version
    directory (whose files are checksummed and watched by Triton)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kbrec" / "tensorrt" / model_sha256[:16]


def run_bound(
    session: ort.InferenceSession, input_name: str, output_name: str, token_ids: np.ndarray
) -> np.ndarray:
    """One run with I/O binding: the ids copied to the device once, before the run, and
    the output copied back once, after it (ORT's documented CPU-in, CPU-out binding)."""
    binding = session.io_binding()
    binding.bind_cpu_input(input_name, np.ascontiguousarray(token_ids))
    binding.bind_output(output_name)
    session.run_with_iobinding(binding)
    (vectors,) = binding.copy_outputs_to_cpu()
    return vectors
