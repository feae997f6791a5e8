"""Everything bound to one model version: tokenizer, backend, batcher and index.

Token ids, query vectors and article vectors are only comparable within one
version, so they live together here: a query ranked by a `ServingModel` is
embedded by its backend and scored against its index, nothing else. A live
upgrade opens a second `ServingModel` next to the active one and switches the
service's pointer atomically (`server.model_lifecycle`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from server.backends.base import BackendLoadError, EmbeddingBackend
from server.batching import BatchingConfig, BatchObserver, ComputeGate, MicroBatcher
from server.errors import InvalidRequest
from server.index import VersionIndex
from server.model_versions import ModelVersion
from server.ranking import RankRequest, ScoredArticle, rank_batch
from server.tokenizing import VersionTokenizer
from training.corpus.records import Article
from training.pairs import article_text

BackendOpener = Callable[[ModelVersion], Awaitable[EmbeddingBackend]]

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
    index: VersionIndex

    @classmethod
    async def open(
        cls,
        version: ModelVersion,
        open_backend: BackendOpener,
        batching: BatchingConfig,
        tokenizer_executor: Executor,
        on_batch: BatchObserver | None = None,
        gate: ComputeGate | None = None,
    ) -> ServingModel:
        """Open the backend and tokenizer, start the batcher; the index starts empty."""
        backend = await open_backend(version)
        try:
            check_backend(backend, version)
            tokenizer = await VersionTokenizer.open(version, tokenizer_executor)
        except BaseException:
            await backend.close()
            raise
        index = VersionIndex(version.number, backend.dim)
        finish = functools.partial(rank_batch, index)
        batcher = MicroBatcher(
            backend, batching, finish_queries=finish, on_batch=on_batch, gate=gate
        )
        batcher.start()
        return cls(version, tokenizer, backend, batcher, index)

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
        except InvalidRequest as exc:
            raise BackendLoadError(f"smoke test: {exc}") from exc
        vectors = await self.batcher.embed_documents(token_ids)
        if vectors.shape != (len(SMOKE_TEXTS), self.index.dim):
            raise BackendLoadError(f"smoke test: vectors of shape {vectors.shape}")
        similarity = vectors @ vectors.T
        if np.max(similarity[~np.eye(len(SMOKE_TEXTS), dtype=bool)]) > SAME_VECTOR_COSINE:
            raise BackendLoadError("smoke test: different texts get the same vector")

    async def rank(self, text: str, request: RankRequest) -> list[ScoredArticle]:
        """Embed `text` in the next query batch and rank it within the request's account."""
        (token_ids,) = await self.tokenizer.encode([text])
        require_tokens([token_ids])
        return await self.batcher.query(token_ids, request)

    async def embed_articles(self, articles: Sequence[Article], *, bulk: bool) -> np.ndarray:
        """float32 [len(articles), dim]. `bulk` waits for queue room instead of a 503."""
        token_ids = await self.tokenizer.encode([article_text(article) for article in articles])
        require_tokens(token_ids)
        return await self.batcher.embed_documents(token_ids, wait_for_room=bulk)


def require_tokens(rows: Sequence[Sequence[int]]) -> None:
    """A tokenizer without [CLS]/[SEP] can turn text of, say, only control characters into
    nothing; that is the caller's text, not a server fault."""
    if any(len(row) == 0 for row in rows):
        raise InvalidRequest("the text has no token the model knows")


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
