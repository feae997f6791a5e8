"""Everything bound to one model version: tokenizer, backend, batcher and index.

Token ids, query vectors and article vectors are only comparable within one
version, so they live together here: a query ranked by a `ServingModel` is
embedded by its backend and scored against its index, nothing else. A live
upgrade opens a second `ServingModel` next to the active one and switches the
live set's pointer atomically (`server.versions.live_set`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from kbrec.records import Article, article_text
from kbrec.repository import ModelVersion
from server.errors import NoKnownToken
from server.inference.backends.base import BackendLoadError, BackendProvider, EmbeddingBackend
from server.inference.batching import BatchingConfig, BatchObserver, MicroBatcher
from server.inference.compute_gate import ComputeGate
from server.inference.device_ranking import HOST_RANKING, RankingConfig
from server.inference.index import ArticleIndex
from server.inference.ranking import RankRequest, ScoredArticle
from server.inference.tokenizing import VersionTokenizer


@dataclass(frozen=True)
class ModelLoader:
    """Opens a `ServingModel` per version; every version shares the backend kind, the
    batching settings, the tokenizer threads, the compute gate, the batch observer and
    where ranking runs (`ranking`: host matrices, or one device array per version)."""

    backends: BackendProvider
    batching: BatchingConfig
    tokenizer_executor: Executor
    gate: ComputeGate
    observer: BatchObserver | None = None
    ranking: RankingConfig = HOST_RANKING

    async def open(self, version: ModelVersion) -> ServingModel:
        """Open the backend and tokenizer, start the batcher; the index starts empty."""
        backend = await self.backends.open(version)
        try:
            check_backend(backend, version)
            tokenizer = await VersionTokenizer.open(version, self.tokenizer_executor)
        except BaseException:
            await backend.close()
            raise
        index, ranker = self.ranking.open(version.number, backend.dim)  # this version's own
        batcher = MicroBatcher(
            backend,
            self.batching,
            ranker,
            observer=self.observer,
            gate=self.gate,
            tokenizer=tokenizer,
        )
        batcher.start()
        return ServingModel(version, tokenizer, backend, batcher, index)


SMOKE_TEXTS = (
    "how do I reset my password",
    "the printer prints blank pages",
    "add page numbers to a document",
)
SAME_VECTOR_COSINE = 0.9999
DRAIN_POLL_S = 0.01


@dataclass(frozen=True)
class ServingModel:
    version: ModelVersion
    tokenizer: VersionTokenizer
    backend: EmbeddingBackend
    batcher: MicroBatcher[RankRequest, list[ScoredArticle]]
    index: ArticleIndex

    @property
    def number(self) -> int:
        return self.version.number

    async def close(self, drain_s: float = 0.0) -> None:
        """Stop; with `drain_s`, first let queued and running batches finish (bounded)."""
        deadline = time.monotonic() + drain_s
        while not self.batcher.idle and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        try:
            await self.batcher.close()
        finally:
            await self.backend.close()

    async def smoke_check(self) -> None:
        """Real texts through tokenizer and backend: `dim` unit vectors, not all the same.

        Catches what the probe in `backend.open` cannot: a tokenizer that maps
        everything to unknown tokens, or a model that ignores its input.
        """
        token_ids = await self.tokenizer.encode(SMOKE_TEXTS)
        try:
            require_tokens(token_ids)
        except NoKnownToken as exc:
            raise BackendLoadError(f"smoke test: {exc}") from exc
        vectors = await self.batcher.embed_documents(token_ids)
        if vectors.shape != (len(SMOKE_TEXTS), self.index.dim):
            raise BackendLoadError(f"smoke test: vectors of shape {vectors.shape}")
        similarity = vectors @ vectors.T
        if np.max(similarity[~np.eye(len(SMOKE_TEXTS), dtype=bool)]) > SAME_VECTOR_COSINE:
            raise BackendLoadError("smoke test: different texts get the same vector")

    async def rank(self, text: str, request: RankRequest) -> list[ScoredArticle]:
        """Embed `text` in the next query batch and rank it within the request's account
        (the batch is tokenized together: one tokenizer call per batch)."""
        return await self.batcher.query_text(text, request)

    async def embed_articles(self, articles: Sequence[Article], *, bulk: bool) -> np.ndarray:
        """float32 [len(articles), dim]. `bulk` waits for queue room instead of a 503."""
        token_ids = await self.tokenizer.encode([article_text(article) for article in articles])
        require_tokens(token_ids)
        return await self.batcher.embed_documents(token_ids, wait_for_room=bulk)


def require_tokens(rows: Sequence[Sequence[int]]) -> None:
    if any(len(row) == 0 for row in rows):
        raise NoKnownToken()


def check_backend(backend: EmbeddingBackend, version: ModelVersion) -> None:
    """The backend must serve exactly the version whose tokenizer and metadata we use."""
    if backend.model_version != version.number:
        raise BackendLoadError(
            f"backend serves version {backend.model_version}, expected {version.number}"
        )
    if backend.dim != version.metadata.dim:
        raise BackendLoadError(
            f"backend dim {backend.dim} differs from metadata dim {version.metadata.dim}"
        )
