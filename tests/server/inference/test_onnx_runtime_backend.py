"""The embedded ONNX Runtime backend and the choice of the version it serves."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import (
    DIM,
    FakeBackend,
    embedding_table,
    publish_bag_of_words_version,
    vocab_size,
    write_bag_of_words_onnx,
    write_metadata,
    write_word_tokenizer,
)

from kbrec.repository import MODEL_FILE, TOKENIZER_FILE, ModelVersion, publish_version
from server.inference.backends.base import BackendError, BackendLoadError, BackendUnavailable
from server.inference.backends.onnx_runtime import OnnxRuntimeBackend
from server.versions.verification import scan_repository


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


@pytest.fixture
def version(bow_repository: Path) -> ModelVersion:
    """Version 1 of the bag-of-words repository, as the server finds it."""
    found = scan_repository(bow_repository).newest_valid
    assert found is not None
    return found


def test_embeds_unit_vectors_like_the_reference(version: ModelVersion) -> None:
    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(version, intra_op_threads=1)
        assert (backend.model_version, backend.dim, backend.max_length) == (1, DIM, 32)
        token_ids = np.array([[2, 10, 11, 3, 0, 0], [2, 12, 13, 14, 15, 3]], dtype=np.int32)
        vectors = await backend.embed(token_ids)
        assert vectors.dtype == np.float32 and vectors.shape == (2, DIM)
        expected = await FakeBackend(1).embed(token_ids)  # same table, same pooling in NumPy
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
        assert await backend.health()
        await backend.close()
        assert not await backend.health()
        with pytest.raises(BackendUnavailable):
            await backend.embed(token_ids)

    run(test)


def test_embeds_groups_of_different_lengths_in_one_call(version: ModelVersion) -> None:
    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(version, intra_op_threads=1)
        short = np.array([[2, 10, 3], [2, 11, 3]], dtype=np.int32)
        long = np.array([[2, 12, 13, 14, 15, 16, 17, 3]], dtype=np.int32)
        grouped = await backend.embed_groups([short, long])
        assert [vectors.shape for vectors in grouped] == [(2, DIM), (1, DIM)]
        np.testing.assert_allclose(grouped[0], await backend.embed(short), atol=1e-6)
        np.testing.assert_allclose(grouped[1], await backend.embed(long), atol=1e-6)
        with pytest.raises(BackendError, match="max length"):  # every group is checked
            await backend.embed_groups([short, np.ones((1, 33), dtype=np.int32)])
        await backend.close()

    run(test)


def test_rejects_bad_inputs(version: ModelVersion) -> None:
    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(version)
        with pytest.raises(BackendError, match="int32"):
            await backend.embed(np.zeros((1, 3), dtype=np.int64))
        with pytest.raises(BackendError, match="max length"):
            await backend.embed(np.ones((1, 33), dtype=np.int32))
        await backend.close()

    run(test)


def test_the_newest_valid_version_wins_and_invalid_ones_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish_bag_of_words_version(tmp_path, seed=1)  # 1
    publish_bag_of_words_version(tmp_path, seed=2)  # 2
    publish_bag_of_words_version(tmp_path, seed=3)  # 3, corrupted below
    (tmp_path / "encoder" / "3" / MODEL_FILE).write_bytes(b"not the model")
    scan = scan_repository(tmp_path)
    assert [s.number for s in scan.statuses] == [1, 2, 3]
    assert scan.newest_valid is not None and scan.newest_valid.number == 2
    assert scan.statuses[2].version is None and "sha256" in (scan.statuses[2].error or "")
    assert "model version 3 is invalid" in caplog.text


def test_no_version_at_all(tmp_path: Path) -> None:
    assert scan_repository(tmp_path).newest_valid is None


def test_a_model_without_the_declared_input_fails_to_load(tmp_path: Path) -> None:
    def build(out: Path) -> None:
        write_word_tokenizer(out / TOKENIZER_FILE)
        table = embedding_table(vocab_size(), DIM, 0)
        write_bag_of_words_onnx(out / MODEL_FILE, table, input_name="tokens")
        write_metadata(out, DIM, 32)

    publish_version(tmp_path, build)
    version = scan_repository(tmp_path).newest_valid
    assert version is not None

    async def test() -> None:
        with pytest.raises(BackendLoadError, match="no input 'input_ids'"):
            await OnnxRuntimeBackend.open(version)

    run(test)


def test_a_model_that_is_not_onnx_fails_to_load(tmp_path: Path, bow_repository: Path) -> None:
    def build(out: Path) -> None:
        shutil.copy(bow_repository / "encoder" / "1" / TOKENIZER_FILE, out / TOKENIZER_FILE)
        (out / MODEL_FILE).write_bytes(b"garbage, but with a matching checksum")
        write_metadata(out, DIM, 32)

    publish_version(tmp_path, build)
    version = scan_repository(tmp_path).newest_valid
    assert version is not None

    async def test() -> None:
        with pytest.raises(BackendLoadError, match="version 1"):
            await OnnxRuntimeBackend.open(version)

    run(test)


def test_background_embedding_runs_on_a_session_of_its_own(version: ModelVersion) -> None:
    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(version, background_threads=1)
        assert backend.isolates_background
        token_ids = np.array([[2, 10, 11, 3, 0], [2, 12, 13, 14, 3]], dtype=np.int32)
        assert backend._background is None  # created on first use only
        # Both sessions at once, as a query and a re-embedding step would run.
        apart, main = await asyncio.gather(
            backend.embed_background(token_ids), backend.embed(token_ids)
        )
        assert backend._background is not None
        np.testing.assert_allclose(apart, main, atol=1e-6)
        await backend.end_background()
        assert backend._background is None
        await backend.close()
        with pytest.raises(BackendUnavailable):
            await backend.embed_background(token_ids)

    run(test)


def test_two_instances_embed_two_batches_at_once(
    version: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_running = threading.Barrier(2, timeout=5)  # broken if the batches took turns
    sessions: list[object] = []
    real_run = OnnxRuntimeBackend._run

    def run_when_both_run(
        backend: OnnxRuntimeBackend, token_ids: np.ndarray, session: object
    ) -> np.ndarray:
        sessions.append(session)
        both_running.wait()
        return real_run(backend, token_ids, session)  # type: ignore[arg-type]

    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(version, intra_op_threads=1, instances=2)
        assert backend.instances == 2
        short = np.array([[2, 10, 3], [2, 11, 3]], dtype=np.int32)
        long = np.array([[2, 12, 13, 14, 15, 16, 17, 3]], dtype=np.int32)
        expected = [await FakeBackend(1).embed(ids) for ids in (short, long)]
        monkeypatch.setattr(OnnxRuntimeBackend, "_run", run_when_both_run)
        first, second = await asyncio.gather(
            backend.embed_groups([short]), backend.embed_groups([long])
        )
        np.testing.assert_allclose(first[0], expected[0], atol=1e-5)
        np.testing.assert_allclose(second[0], expected[1], atol=1e-5)
        assert len({id(session) for session in sessions}) == 2  # one instance each
        await backend.close()

    run(test)


def test_a_batch_alone_runs_on_the_lone_session_and_one_beside_it_on_an_instance(
    version: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_running, second_done = threading.Event(), threading.Event()
    ran_on: list[object] = []
    real_run = OnnxRuntimeBackend._run

    def recorded(backend: OnnxRuntimeBackend, token_ids: np.ndarray, session: object) -> np.ndarray:
        ran_on.append(session)
        if len(ran_on) == 1:  # the first batch holds its session until the second is done
            first_running.set()
            assert second_done.wait(timeout=5)
        return real_run(backend, token_ids, session)  # type: ignore[arg-type]

    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(
            version, intra_op_threads=1, instances=2, lone_threads=2
        )
        lone = backend._lone
        assert lone is not None
        token_ids = np.array([[2, 10, 11, 3], [2, 12, 3, 0]], dtype=np.int32)
        expected = await FakeBackend(1).embed(token_ids)
        ran_on.clear()  # the probe at open
        monkeypatch.setattr(OnnxRuntimeBackend, "_run", recorded)

        async def second() -> list[np.ndarray]:
            await asyncio.to_thread(first_running.wait, 5)
            try:
                return await backend.embed_groups([token_ids])
            finally:
                second_done.set()

        first, beside = await asyncio.gather(backend.embed_groups([token_ids]), second())
        (after,) = await backend.embed_groups([token_ids])  # alone again
        assert ran_on[0] is lone and ran_on[1] is not lone and ran_on[2] is lone
        for vectors in (first[0], beside[0], after):
            np.testing.assert_allclose(vectors, expected, atol=1e-5)
        await backend.close()

    run(test)


@pytest.mark.parametrize(("intra_op_threads", "lone_threads"), [(1, 0), (1, 1), (2, 2)])
def test_no_lone_session_unless_it_has_more_threads_than_an_instance(
    version: ModelVersion, intra_op_threads: int, lone_threads: int
) -> None:
    async def test() -> None:
        backend = await OnnxRuntimeBackend.open(
            version, intra_op_threads=intra_op_threads, instances=2, lone_threads=lone_threads
        )
        assert backend._lone is None
        await backend.close()

    run(test)
