"""Where ranking runs (`--ranking-device`, `RankingConfig`), and the device index behind a
real live set: ONNX Runtime embeds, SQLite stores, writes and deletes go through
`LiveVersions`, and every answer equals the host ranking's over the stored vectors."""

from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import VOCAB_WORDS

from cli.main import main
from kbrec.records import Article
from server.inference.array_modules import NoGpu, gpu_arrays
from server.inference.backends.onnx_runtime import OnnxRuntimeProvider
from server.inference.batching import BatchingConfig
from server.inference.compute_gate import ComputeGate
from server.inference.device_index import DeviceIndex
from server.inference.device_ranking import (
    BATCHED_NUMPY_RANKING,
    HOST_RANKING,
    DeviceRanker,
    RankingConfig,
)
from server.inference.index import VersionIndex
from server.inference.ranking import IndexRanker, RankRequest
from server.inference.serving_model import ModelLoader
from server.settings import Settings
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import StoredArticle, utc_now
from server.versions.live_set import LiveVersions
from server.versions.verification import scan_repository

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def test_cpu_ranks_on_host_matrices() -> None:
    assert gpu_arrays("cpu") is None
    index, ranker = RankingConfig.from_settings("cpu", "float32").open(1, 4)
    assert isinstance(index, VersionIndex) and isinstance(ranker, IndexRanker)


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_without_cupy_cuda_is_refused_and_auto_falls_back_to_the_host() -> None:
    with pytest.raises(NoGpu, match="CuPy is not installed"):
        gpu_arrays("cuda")
    assert RankingConfig.from_settings("auto", "float16").device == "cpu"


def test_bad_ranking_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ranking_device"):
        Settings.of(ranking_device="gpu")
    with pytest.raises(ValueError, match="ranking_dtype"):
        Settings.of(ranking_dtype="bfloat16")
    with pytest.raises(ValueError, match="device"):
        Settings.of(device="cuda", triton_url="grpc://127.0.0.1:8001")
    with pytest.raises(ValueError, match="ranking device"):
        gpu_arrays("tpu")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_serve_refuses_a_missing_gpu_in_one_line(
    bow_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["serve", "--repository", str(bow_repository), "--db", str(tmp_path / "k.sqlite")]
    assert main([*args, "--port", "0", "--ranking-device", "cuda"]) == 2
    assert "CuPy is not installed" in capsys.readouterr().err


def test_batched_numpy_opens_a_device_index_per_version() -> None:
    one, ranker = BATCHED_NUMPY_RANKING.open(1, 4)
    two, _ = BATCHED_NUMPY_RANKING.open(2, 4)
    assert isinstance(one, DeviceIndex) and isinstance(ranker, DeviceRanker)
    assert isinstance(two, DeviceIndex) and one.vectors is not two.vectors
    assert BATCHED_NUMPY_RANKING.device == "numpy" and HOST_RANKING.device == "cpu"


def article(account: str, number: int, rng: np.random.Generator) -> Article:
    words = [str(w) for w in rng.choice(VOCAB_WORDS[:60], size=int(rng.integers(2, 6)))]
    locale = ("en-us", "de", None)[number % 3]
    return Article(account, f"{account}-{number:03d}", " ".join(words[:2]), " ".join(words), locale)


def test_live_writes_and_deletes_rank_as_the_host_ranking_does(
    bow_repository: Path, tmp_path: Path
) -> None:
    (status,) = scan_repository(bow_repository).statuses
    assert status.version is not None
    version = status.version
    rng = np.random.default_rng(0)
    queries = [
        ("how do i reset my password", RankRequest("acme", 5)),
        ("printer page numbers", RankRequest("acme", 3, "de")),
        ("export charts and tables", RankRequest("globex", 100)),
        ("invoice refund", RankRequest("initech", 2, "en-us")),
        ("billing", RankRequest("nobody", 5)),
    ]

    async def answers(live: LiveVersions) -> list[list[str]]:
        model = live.active
        results = [await model.rank(text, request) for text, request in queries]
        return [[f"{r.article_id} {r.score:.6f}" for r in result] for result in results]

    async def test() -> None:
        store = await SqliteArticleStore.open(tmp_path / "kbrec.sqlite")
        with ThreadPoolExecutor(1) as executor:

            def loader(ranking: RankingConfig) -> ModelLoader:
                return ModelLoader(
                    OnnxRuntimeProvider(1), BatchingConfig(), executor, ComputeGate(), None, ranking
                )

            device = LiveVersions(store)
            await device.serve(await loader(BATCHED_NUMPY_RANKING).open(version))
            assert isinstance(device.active.index, DeviceIndex)
            sizes = {"acme": 40, "globex": 7, "initech": 1}
            articles = [article(a, i, rng) for a, n in sizes.items() for i in range(n)]
            stored = [StoredArticle(a, utc_now()) for a in articles]
            await device.write_articles(stored, bulk=True)

            async def host_answers() -> list[list[str]]:
                host = LiveVersions(store)
                await host.serve(await loader(HOST_RANKING).open(version))
                await host.load_stored(host.active)
                try:
                    return await answers(host)
                finally:
                    await host.active.close()

            first = await answers(device)
            assert first == await host_answers()
            assert [len(result) for result in first] == [5, 3, 7, 1, 0]
            # Deletes (the only initech article: the account goes), updates, new articles.
            for gone in ["acme-000", "acme-007", "acme-039"]:
                assert await device.delete_article("acme", gone)
            assert await device.delete_article("initech", "initech-000")
            assert device.active.index.account("initech") is None
            changed = [article("acme", i, rng) for i in (1, 2, 50, 51)]
            changed.append(Article("globex", "globex-new", "reset password", "reset password"))
            await device.write_articles([StoredArticle(a, utc_now()) for a in changed], bulk=True)
            second = await answers(device)
            assert second != first
            assert second == await host_answers()
            assert any(line.startswith("globex-new ") for line in second[2])
            await device.active.close()
        await store.close()

    asyncio.run(test())
