"""TritonGrpcBackend against the real local Triton: same embeddings as the embedded ONNX
Runtime backend, the version named in every call, metadata checked at open."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from serving_helpers import loopback_listener

from kbrec.repository import ModelVersion
from kbrec.tokenization import TextTokenizer, pad_batch
from local_triton.launcher import TritonServer
from server.inference.backends.base import BackendLoadError, BackendUnavailable
from server.inference.backends.onnx_runtime import OnnxRuntimeBackend
from server.inference.backends.triton_grpc import CHANNEL_ARGS, TritonGrpcBackend, grpc_target
from server.versions.verification import scan_repository

pytestmark = pytest.mark.triton

TEXTS = [
    "How do I add page numbers?",
    "tables",
    "Hi, my printer prints every page twice and the margins are wrong since the update, "
    "what should I change in the page style dialog to fix the footers and headers?",
    "passwords",
    "Working with fonts and charts in a document with many columns",
]


@pytest.fixture(scope="module")
def version(tiny_model_repository: Path) -> ModelVersion:
    version = scan_repository(tiny_model_repository).newest_valid
    assert version is not None
    return version


def token_batches(version: ModelVersion) -> list[np.ndarray]:
    """Real tokenized texts of mixed lengths, padded per batch; one batch at max length."""
    tokenizer = TextTokenizer(version.tokenizer_path, version.metadata.max_length)
    rows = tokenizer.encode(TEXTS)
    longest = pad_batch(rows, version.metadata.max_length)
    return [pad_batch(rows[:1]), pad_batch(rows), pad_batch(rows[1:4]), longest]


def open_triton(version: ModelVersion, triton: TritonServer):
    return TritonGrpcBackend.open(version, url=triton.grpc_url, timeout_s=10)


def test_embeddings_match_the_embedded_backend(
    version: ModelVersion, triton_server: TritonServer
) -> None:
    async def both() -> list[tuple[np.ndarray, np.ndarray]]:
        embedded = await OnnxRuntimeBackend.open(version)
        remote = await open_triton(version, triton_server)
        try:
            return [
                (await embedded.embed(ids), await remote.embed(ids))
                for ids in token_batches(version)
            ]
        finally:
            await remote.close()
            await embedded.close()

    for expected, actual in asyncio.run(both()):
        assert actual.dtype == np.float32 and actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


def test_concurrent_calls_each_get_their_own_rows(
    version: ModelVersion, triton_server: TritonServer
) -> None:
    """Triton's dynamic batcher may merge these requests; each must get its rows back."""
    batches = token_batches(version)

    async def run() -> tuple[list[np.ndarray], list[np.ndarray]]:
        remote = await open_triton(version, triton_server)
        try:
            alone = [await remote.embed(ids) for ids in batches]
            together = await asyncio.gather(*(remote.embed(ids) for ids in batches * 4))
            return alone, list(together)
        finally:
            await remote.close()

    alone, together = asyncio.run(run())
    for i, vectors in enumerate(together):
        np.testing.assert_allclose(vectors, alone[i % len(batches)], atol=1e-5, rtol=0)


def test_health_follows_triton(version: ModelVersion, triton_server: TritonServer) -> None:
    async def run() -> tuple[bool, bool]:
        remote = await open_triton(version, triton_server)
        healthy = await remote.health()
        await remote.close()
        return healthy, await remote.health()

    assert asyncio.run(run()) == (True, False)


def test_a_version_triton_has_not_loaded_is_refused(
    version: ModelVersion, triton_server: TritonServer
) -> None:
    """Calls name the version: Triton's version 1 never stands in for another one."""
    other = dataclasses.replace(version, number=7)
    with pytest.raises(BackendLoadError, match="has not loaded version 7"):
        asyncio.run(open_triton(other, triton_server))


def test_a_dimension_unlike_metadata_json_is_refused(
    version: ModelVersion, triton_server: TritonServer
) -> None:
    metadata = dataclasses.replace(version.metadata, dim=version.metadata.dim + 1)
    wrong = dataclasses.replace(version, metadata=metadata)
    with pytest.raises(BackendLoadError, match=r"metadata\.json expects"):
        asyncio.run(open_triton(wrong, triton_server))


def test_an_unreachable_triton_fails_the_open(version: ModelVersion) -> None:
    with loopback_listener() as closed:
        port = closed.getsockname()[1]
    url = f"grpc://127.0.0.1:{port}"  # nothing listens there any more
    with pytest.raises(BackendLoadError, match="UNAVAILABLE"):
        asyncio.run(TritonGrpcBackend.open(version, url=url, timeout_s=2))


def test_a_call_past_its_deadline_is_unavailable(
    version: ModelVersion, triton_server: TritonServer
) -> None:
    async def run() -> None:
        url = triton_server.grpc_url
        client = triton_aio.InferenceServerClient(grpc_target(url), channel_args=CHANNEL_ARGS)
        hurried = TritonGrpcBackend(version, client, url=url, timeout_s=1e-4)
        try:
            await hurried.embed(token_batches(version)[1])
        finally:
            await hurried.close()

    with pytest.raises(BackendUnavailable, match="DEADLINE_EXCEEDED"):
        asyncio.run(run())


def test_a_closed_backend_is_unavailable(
    version: ModelVersion, triton_server: TritonServer
) -> None:
    async def run() -> None:
        remote = await open_triton(version, triton_server)
        await remote.close()
        await remote.embed(token_batches(version)[0])

    with pytest.raises(BackendUnavailable, match="closed"):
        asyncio.run(run())


@pytest.mark.parametrize(
    ("url", "target"),
    [("grpc://127.0.0.1:8001", "127.0.0.1:8001"), ("grpc://triton:8001/", "triton:8001")],
)
def test_grpc_target(url: str, target: str) -> None:
    assert grpc_target(url) == target


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "grpc://127.0.0.1", "grpc://:8001"])
def test_a_malformed_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        grpc_target(url)
