"""The embedded backend runs the model bytes it hashed, whatever happens to model.onnx
on disk afterwards: real ONNX Runtime sessions of two differently seeded models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from serving_helpers import publish_bag_of_words_version

from kbrec.repository import MODEL_FILE, ModelVersion, version_dir
from server.inference.backends.base import BackendError, BackendLoadError
from server.inference.backends.onnx_runtime import OnnxRuntimeBackend
from server.versions.verification import scan_repository

TOKEN_IDS = np.array([[2, 10, 11, 3, 0], [2, 12, 13, 14, 3]], dtype=np.int32)


def reference_vectors(model: bytes) -> np.ndarray:
    (vectors,) = ort.InferenceSession(model).run(None, {"input_ids": TOKEN_IDS})
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def two_models(tmp_path: Path) -> tuple[ModelVersion, bytes, bytes]:
    """Version 1 (verified), its model's bytes, and another model's bytes (seed 1)."""
    publish_bag_of_words_version(tmp_path, seed=0)
    publish_bag_of_words_version(tmp_path, seed=1)
    original = (version_dir(tmp_path, 1) / MODEL_FILE).read_bytes()
    other = (version_dir(tmp_path, 2) / MODEL_FILE).read_bytes()
    assert original != other
    version = scan_repository(tmp_path).statuses[0].version
    assert version is not None
    # The two models really embed differently: a swap would show in the vectors.
    assert not np.allclose(reference_vectors(original), reference_vectors(other), atol=1e-3)
    return version, original, other


def test_a_model_swapped_right_after_its_check_is_not_what_runs(
    two_models: tuple[ModelVersion, bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is replaced the instant its bytes were hashed (the window a check by
    path and a load by path would leave): the session is still the hashed model."""
    version, original, other = two_models
    read_model = ModelVersion.read_model

    def read_then_swap(self: ModelVersion) -> bytes:
        data = read_model(self)
        (self.path / MODEL_FILE).write_bytes(other)
        return data

    monkeypatch.setattr(ModelVersion, "read_model", read_then_swap)

    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(version, intra_op_threads=1)
        try:
            assert (version.path / MODEL_FILE).read_bytes() == other
            vectors = await backend.embed(TOKEN_IDS)
            np.testing.assert_allclose(vectors, reference_vectors(original), atol=1e-5)
        finally:
            await backend.close()

    asyncio.run(test())


def test_a_model_replaced_after_verification_is_refused_at_load(
    two_models: tuple[ModelVersion, bytes, bytes],
) -> None:
    version, _, other = two_models
    (version.path / MODEL_FILE).write_bytes(other)

    async def test() -> None:
        with pytest.raises(BackendLoadError, match="does not match metadata"):
            await OnnxRuntimeBackend.open(version, intra_op_threads=1)

    asyncio.run(test())


def test_the_background_session_is_the_verified_model_or_none(
    two_models: tuple[ModelVersion, bytes, bytes],
) -> None:
    """Loaded later from disk, the re-embedding session is checked again: a replaced
    file fails it with the reason instead of embedding articles with another model,
    and the query session goes on serving the original."""
    version, original, other = two_models

    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(version, intra_op_threads=1)
        try:
            (version.path / MODEL_FILE).write_bytes(other)
            with pytest.raises(BackendError, match=r"background session: .*does not match"):
                await backend.embed_background(TOKEN_IDS)
            np.testing.assert_allclose(
                await backend.embed(TOKEN_IDS), reference_vectors(original), atol=1e-5
            )
            (version.path / MODEL_FILE).write_bytes(original)  # put back: it loads
            np.testing.assert_allclose(
                await backend.embed_background(TOKEN_IDS), reference_vectors(original), atol=1e-5
            )
        finally:
            await backend.close()

    asyncio.run(test())
