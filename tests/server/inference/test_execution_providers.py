"""`--device` of the embedded encoder: which ONNX Runtime providers a session gets, the
refusals when no GPU build is installed, and the I/O-bound run (checked on the CPU
provider, which implements the same binding API; the CUDA run itself needs a GPU)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from serving_helpers import FakeBackend

from server.inference.backends import onnx_runtime
from server.inference.backends.execution_providers import (
    CPU,
    CUDA,
    TENSORRT,
    MissingProvider,
    execution_providers,
    require_device,
    require_on_device,
    run_bound,
    tensorrt_cache_dir,
)
from server.inference.backends.onnx_runtime import (
    OnnxRuntimeBackend,
    OnnxRuntimeProvider,
    load_session,
)
from server.versions.verification import scan_repository

GPU_BUILD = CUDA in ort.get_available_providers()
TOKENS = np.array([[2, 10, 11, 3, 0, 0], [2, 12, 13, 14, 15, 3]], dtype=np.int32)


def test_cpu_gets_the_cpu_provider_only(tmp_path: Path) -> None:
    assert execution_providers("cpu", tmp_path, [TENSORRT, CUDA, CPU]) == [CPU]


def test_cuda_prefers_tensorrt_with_an_engine_cache_then_cuda_then_cpu(tmp_path: Path) -> None:
    providers = execution_providers("cuda", tmp_path, [TENSORRT, CUDA, CPU])
    assert [p if isinstance(p, str) else p[0] for p in providers] == [TENSORRT, CUDA, CPU]
    tensorrt_options = providers[0][1]
    assert tensorrt_options["trt_engine_cache_enable"] is True
    assert tensorrt_options["trt_engine_cache_path"] == str(tmp_path)


def test_cuda_without_tensorrt_uses_cuda_then_cpu(tmp_path: Path) -> None:
    providers = execution_providers("cuda", tmp_path, [CUDA, CPU])
    assert [p if isinstance(p, str) else p[0] for p in providers] == [CUDA, CPU]


def test_cuda_without_a_gpu_build_is_refused_with_the_fix() -> None:
    with pytest.raises(MissingProvider, match="onnxruntime-gpu"):
        require_device("cuda", [CPU])
    with pytest.raises(ValueError, match="device"):
        require_device("rocm", [CPU])
    require_device("cpu", [CPU])


def test_a_silent_fall_back_to_the_cpu_is_refused() -> None:
    with pytest.raises(MissingProvider, match="fell back"):
        require_on_device([CPU], "cuda")
    require_on_device([CUDA, CPU], "cuda")
    require_on_device([TENSORRT, CUDA, CPU], "cuda")
    require_on_device([CPU], "cpu")


@pytest.mark.skipif(GPU_BUILD, reason="this onnxruntime has the CUDA provider")
def test_the_provider_refuses_cuda_before_any_version_is_loaded() -> None:
    with pytest.raises(MissingProvider):
        OnnxRuntimeProvider(1, 1, "cuda")
    assert OnnxRuntimeProvider(1, 1).device == "cpu"


def test_engines_are_cached_per_model_outside_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tensorrt_cache_dir("ab" * 32) == tmp_path / "kbrec" / "tensorrt" / ("ab" * 8)


def test_the_bound_run_equals_a_plain_run(bow_repository: Path) -> None:
    session = load_session(str(bow_repository / "encoder" / "1" / "model.onnx"), 1)
    (plain,) = session.run(["embedding"], {"input_ids": TOKENS})
    bound = run_bound(session, "input_ids", "embedding", TOKENS)
    assert bound.dtype == np.float32
    np.testing.assert_array_equal(bound, plain)


def test_a_backend_on_the_device_path_embeds_through_the_binding(
    bow_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = scan_repository(bow_repository).newest_valid
    assert version is not None
    bound_runs: list[tuple[int, int]] = []

    def counted(session: ort.InferenceSession, *names_and_ids: object) -> np.ndarray:
        bound_runs.append(names_and_ids[-1].shape)  # type: ignore[attr-defined]
        return run_bound(session, *names_and_ids)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx_runtime, "run_bound", counted)

    async def test() -> None:
        session = load_session(str(version.path / "model.onnx"), 1)
        executor = ThreadPoolExecutor(1)
        # A CPU session on the "cuda" code path: the binding API is the same.
        backend = OnnxRuntimeBackend(version, [session], executor, 1, device="cuda")
        try:
            vectors = await backend.embed(TOKENS)
            expected = await FakeBackend(1).embed(TOKENS)
            np.testing.assert_allclose(vectors, expected, atol=1e-5)
            assert bound_runs == [TOKENS.shape]
        finally:
            await backend.close()

    asyncio.run(test())
