"""The recommendation service: store, active model and index, and the rules tying them.

Lifecycle: `start` loads the newest valid model version and opens the store
(failures abort startup), then builds the index in the background: vectors of
the active version come from the store, and only articles missing one are
embedded. Until that is done the service is not ready (`NotReady`, a 503).

Writes are acknowledged only once durable in the store and applied to the index,
so an acknowledged article is immediately recommendable. A lock orders
"commit, then apply to the index" across writers, so the index always ends in
the state of the last commit.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import shlex
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from server.batching import BatchingConfig, BatchObserver, Lane
from server.errors import ArticleNotFound, NotReady, UnknownAccount
from server.index import IndexEntry, VersionIndex
from server.model_versions import RepositoryScan, scan_repository
from server.ranking import RankRequest, ScoredArticle
from server.serving_model import BackendOpener, ServingModel
from server.settings import Settings
from server.store import ArticleStore, ArticleWrite, EmbeddingWrite, StoredArticle
from training.corpus.records import Article

log = logging.getLogger(__name__)

StoreOpener = Callable[[Path], Awaitable[ArticleStore]]

# Articles embedded and committed together while rebuilding the index on start.
REBUILD_CHUNK = 256


class StartupError(Exception):
    """The service cannot start (no servable model version, store unusable)."""


class State(enum.StrEnum):
    STOPPED = "stopped"
    BUILDING_INDEX = "building_index"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class Recommendation:
    model_version: int
    articles: list[ScoredArticle]


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int


def batching_config(settings: Settings) -> BatchingConfig:
    return BatchingConfig(
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
        ingest_max_batch_size=settings.ingest_max_batch_size,
        ingest_max_queue=settings.ingest_max_queue,
        ingest_every=settings.ingest_every,
    )


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def index_entry(article: Article) -> IndexEntry:
    return IndexEntry(article.article_id, article.title, article.locale)


class RecommendationService:
    def __init__(
        self,
        settings: Settings,
        open_backend: BackendOpener,
        open_store: StoreOpener,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.settings = settings
        self._open_backend = open_backend
        self._open_store = open_store
        self._on_batch = on_batch
        self._state = State.STOPPED
        self._failure: BaseException | None = None
        self._scan = RepositoryScan(())
        self._store: ArticleStore | None = None
        self._model: ServingModel | None = None
        self._tokenizer_executor: ThreadPoolExecutor | None = None
        self._index_task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._open()
        except BaseException as exc:
            self._failure = exc
            await self.stop()
            raise
        self._state = State.BUILDING_INDEX
        self._index_task = asyncio.get_running_loop().create_task(
            self._build_index(), name="build-index"
        )

    async def stop(self) -> None:
        if self._index_task is not None:
            self._index_task.cancel()
            await asyncio.gather(self._index_task, return_exceptions=True)
        self._state = State.STOPPED
        model, self._model = self._model, None
        store, self._store = self._store, None
        try:
            if model is not None:
                await model.close()
        finally:
            if store is not None:
                await store.close()
            if self._tokenizer_executor is not None:
                self._tokenizer_executor.shutdown(wait=False, cancel_futures=True)

    async def _open(self) -> None:
        self._scan = await asyncio.to_thread(scan_repository, self.settings.repository)
        version = self._scan.newest_valid
        if version is None:
            raise StartupError(
                f"no valid model version in {self.settings.repository} "
                f"({len(self._scan.statuses)} published; see the warnings above)"
            )
        self._store = await self._open_store(self.settings.db)
        self._tokenizer_executor = ThreadPoolExecutor(
            max_workers=self.settings.tokenizer_threads, thread_name_prefix="tokenize"
        )
        self._model = await ServingModel.open(
            version,
            self._open_backend,
            batching_config(self.settings),
            self._tokenizer_executor,
            self._on_batch,
        )

    async def _build_index(self) -> None:
        model, store = self._serving()
        try:
            await load_index(store, model)
        except Exception as exc:
            log.exception("building the index of version %d failed", model.number)
            self._failure = exc
            self._state = State.FAILED
            return
        self._state = State.READY
        log.info(self.ready_message())

    # --- state -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is State.READY

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def scan(self) -> RepositoryScan:
        return self._scan

    @property
    def active_version(self) -> int | None:
        return None if self._model is None else self._model.number

    def article_counts(self) -> Iterator[tuple[str, int, int]]:
        """(account, model version, articles) for every account of every loaded version."""
        if self._model is not None:
            for account_id, count in self._model.index.article_counts():
                yield account_id, self._model.number, count

    def queue_depths(self) -> dict[Lane, int]:
        if self._model is None:
            return {lane: 0 for lane in Lane}
        return {lane: self._model.batcher.depth(lane) for lane in Lane}

    async def healthy(self) -> bool:
        if self._state is State.FAILED or self._model is None:
            return False
        return self._model.batcher.healthy and await self._model.backend.health()

    def ready_message(self) -> str:
        model, _ = self._serving()
        counts = [count for _, count in model.index.article_counts()]
        account = next((account for account, _ in model.index.article_counts()), "acme")
        body = json.dumps({"account_id": account, "text": "how do I reset my password"})
        url = f"{self.settings.base_url}/v1/recommendations"
        curl = f"curl -s {url} -H 'content-type: application/json' -d {shlex.quote(body)}"
        return (
            f"kbrec ready on {self.settings.base_url} (model version {model.number}, "
            f"{sum(counts)} articles in {len(counts)} accounts); try: {curl}"
        )

    # --- operations ------------------------------------------------------------

    async def recommend(
        self, account_id: str, text: str, top_k: int, locale: str | None
    ) -> Recommendation:
        model, _ = self._ready()
        if model.index.account(account_id) is None:
            raise UnknownAccount(account_id)
        articles = await model.rank(text, RankRequest(account_id, top_k, locale))
        return Recommendation(model.number, articles)

    async def put_article(self, article: Article) -> tuple[StoredArticle, bool]:
        """Store, embed and index one article; True if it was created."""
        model, store = self._ready()
        (vector,) = await model.embed_articles([article], bulk=False)
        stored = StoredArticle(article, utc_now())
        async with self._write_lock:
            (created,) = await store.write_articles([ArticleWrite(stored, {model.number: vector})])
            add_to_index(model.index, [article], vector[None])
        return stored, created

    async def import_articles(self, articles: Sequence[Article]) -> ImportResult:
        """Store, embed and index many articles in one transaction (the last of an id wins)."""
        model, store = self._ready()
        latest = list({article.article_id: article for article in articles}.values())
        if not latest:
            return ImportResult(created=0, updated=0)
        vectors = await model.embed_articles(latest, bulk=True)
        now = utc_now()
        writes = [
            ArticleWrite(StoredArticle(article, now), {model.number: vector})
            for article, vector in zip(latest, vectors, strict=True)
        ]
        async with self._write_lock:
            created = await store.write_articles(writes)
            add_to_index(model.index, latest, vectors)
        return ImportResult(created=sum(created), updated=len(created) - sum(created))

    async def get_article(self, account_id: str, article_id: str) -> StoredArticle:
        _, store = self._serving()
        stored = await store.get_article(account_id, article_id)
        if stored is None:
            raise ArticleNotFound(account_id, article_id)
        return stored

    async def delete_article(self, account_id: str, article_id: str) -> None:
        model, store = self._ready()
        async with self._write_lock:
            if not await store.delete_article(account_id, article_id):
                raise ArticleNotFound(account_id, article_id)
            model.index.remove(account_id, article_id)

    def _serving(self) -> tuple[ServingModel, ArticleStore]:
        if self._model is None or self._store is None:
            raise NotReady("the service is not running")
        return self._model, self._store

    def _ready(self) -> tuple[ServingModel, ArticleStore]:
        if self._state is not State.READY:
            raise NotReady(f"the service is not ready ({self._state})")
        return self._serving()


async def load_index(store: ArticleStore, model: ServingModel) -> None:
    """Fill the model's index from the store, embedding only articles lacking a vector."""
    index = model.index
    rows = await store.index_rows(model.number, index.dim)
    for row in rows:
        index.upsert(row.account_id, IndexEntry(row.article_id, row.title, row.locale), row.vector)
    missing = await store.articles_without_embedding(model.number, index.dim)
    log.info(
        "index of version %d: %d stored vectors, %d articles to embed",
        model.number,
        len(rows),
        len(missing),
    )
    for start in range(0, len(missing), REBUILD_CHUNK):
        chunk = [stored.article for stored in missing[start : start + REBUILD_CHUNK]]
        vectors = await model.embed_articles(chunk, bulk=True)
        await store.write_embeddings(
            model.number,
            [
                EmbeddingWrite(article.account_id, article.article_id, vector)
                for article, vector in zip(chunk, vectors, strict=True)
            ],
        )
        add_to_index(index, chunk, vectors)


def add_to_index(index: VersionIndex, articles: Sequence[Article], vectors: np.ndarray) -> None:
    for article, vector in zip(articles, vectors, strict=True):
        index.upsert(article.account_id, index_entry(article), vector)
