"""The recommendation service: store, model versions and indexes, and the rules tying them.

Start: open the store, load the version to serve (`ModelLifecycle.open_active`;
failures abort startup), then build its index in the background: vectors of the
active version come from the store, and only articles missing one are embedded.
Until that is done the service is not ready (`NotReady`, a 503). Then the
lifecycle resumes a recorded upgrade or rollback version and watches the
repository for new versions.

Writes are acknowledged only once durable in the store and applied to the
indexes of every live version (the active one and the standby), so an
acknowledged article is immediately recommendable, and still is right after a
switch to the other version. The lifecycle's commit lock orders "commit, then
apply to the indexes" across writers, and changes of the live set against them:
a write embedded before a version joined embeds with it too before it commits.
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
from pathlib import Path

import numpy as np

from server.backfill import BackfillPacing, add_to_index
from server.batching import QUEUED_LANES, BatchingConfig, BatchObserver, ComputeGate, Lane
from server.errors import ArticleNotFound, NotReady, UnknownAccount
from server.model_lifecycle import ModelLifecycle, StartupError, VersionsKeeper, utc_now
from server.model_versions import ModelVersion
from server.ranking import RankRequest, ScoredArticle
from server.serving_model import BackendOpener, ServingModel
from server.settings import Settings
from server.store import ArticleStore, ArticleWrite, StoredArticle
from training.corpus.records import Article

log = logging.getLogger(__name__)

StoreOpener = Callable[[Path], Awaitable[ArticleStore]]

__all__ = ["RecommendationService", "StartupError", "utc_now"]


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


def backfill_pacing(settings: Settings) -> BackfillPacing:
    return BackfillPacing(share=settings.backfill_share, step_tokens=settings.backfill_step_tokens)


class RecommendationService:
    def __init__(
        self,
        settings: Settings,
        open_backend: BackendOpener,
        open_store: StoreOpener,
        on_batch: BatchObserver | None = None,
        keep_loaded: VersionsKeeper | None = None,
    ) -> None:
        self.settings = settings
        self._open_backend = open_backend
        self._open_store = open_store
        self._on_batch = on_batch
        self._keep_loaded = keep_loaded
        self._state = State.STOPPED
        self._failure: BaseException | None = None
        self._store: ArticleStore | None = None
        self._lifecycle: ModelLifecycle | None = None
        self._tokenizer_executor: ThreadPoolExecutor | None = None
        self._index_task: asyncio.Task[None] | None = None
        self._gate = ComputeGate()  # one backend call at a time, across versions

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
        lifecycle, self._lifecycle = self._lifecycle, None
        store, self._store = self._store, None
        try:
            if lifecycle is not None:
                await lifecycle.close()
        finally:
            if store is not None:
                await store.close()
            if self._tokenizer_executor is not None:
                self._tokenizer_executor.shutdown(wait=False, cancel_futures=True)

    async def _open(self) -> None:
        self._store = await self._open_store(self.settings.db)
        self._tokenizer_executor = ThreadPoolExecutor(
            max_workers=self.settings.tokenizer_threads, thread_name_prefix="tokenize"
        )
        self._lifecycle = ModelLifecycle(
            self.settings.repository,
            self._store,
            self._open_model,
            pacing=backfill_pacing(self.settings),
            keep_loaded=self._keep_loaded,
            poll_s=self.settings.repository_poll_s,
        )
        await self._lifecycle.open_active()

    async def _open_model(self, version: ModelVersion) -> ServingModel:
        assert self._tokenizer_executor is not None
        return await ServingModel.open(
            version,
            self._open_backend,
            batching_config(self.settings),
            self._tokenizer_executor,
            self._on_batch,
            self._gate,
        )

    async def _build_index(self) -> None:
        lifecycle = self._running()
        try:
            await lifecycle.build_active_index()
        except Exception as exc:
            log.exception("building the index of version %s failed", lifecycle.active_number)
            self._failure = exc
            self._state = State.FAILED
            return
        self._state = State.READY
        log.info(self.ready_message())
        await lifecycle.start_background()

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
    def lifecycle(self) -> ModelLifecycle:
        return self._running()

    @property
    def store(self) -> ArticleStore:
        if self._store is None:
            raise NotReady("the service is not running")
        return self._store

    @property
    def active_version(self) -> int | None:
        return None if self._lifecycle is None else self._lifecycle.active_number

    def article_counts(self) -> Iterator[tuple[str, int, int]]:
        """(account, model version, articles) for every account of every loaded version."""
        if self._lifecycle is not None:
            for model in self._lifecycle.live_models():
                for account_id, count in model.index.article_counts():
                    yield account_id, model.number, count

    def queue_depths(self) -> dict[Lane, int]:
        models = [] if self._lifecycle is None else self._lifecycle.live_models()
        return {lane: sum(model.batcher.depth(lane) for model in models) for lane in QUEUED_LANES}

    async def healthy(self) -> bool:
        if self._state is State.FAILED or self._lifecycle is None:
            return False
        try:
            model = self._lifecycle.active
        except NotReady:
            return False
        return model.batcher.healthy and await model.backend.health()

    def ready_message(self) -> str:
        model = self._running().active
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
        self,
        account_id: str,
        text: str,
        top_k: int,
        locale: str | None,
        model_version: int | None = None,
    ) -> Recommendation:
        """Rank with the active version, or with `model_version` if it serves (active, or
        a complete standby: how an A/B split or a comparison picks the other version)."""
        # One read of the version: its backend embeds the query and its index ranks
        # it, whatever switch happens meanwhile.
        lifecycle = self._ready()
        model = lifecycle.active if model_version is None else lifecycle.serving(model_version)
        if model.index.account(account_id) is None:
            raise UnknownAccount(account_id)
        articles = await model.rank(text, RankRequest(account_id, top_k, locale))
        return Recommendation(model.number, articles)

    async def put_article(self, article: Article) -> tuple[StoredArticle, bool]:
        """Store, embed and index one article in every live version; True if created."""
        stored = StoredArticle(article, utc_now())
        (created,) = await self._write([stored], bulk=False)
        return stored, created

    async def import_articles(self, articles: Sequence[Article]) -> ImportResult:
        """Store, embed and index many articles in one transaction (the last of an id wins)."""
        latest = list({article.article_id: article for article in articles}.values())
        if not latest:
            self._ready()
            return ImportResult(created=0, updated=0)
        now = utc_now()
        created = await self._write([StoredArticle(article, now) for article in latest], bulk=True)
        return ImportResult(created=sum(created), updated=len(created) - sum(created))

    async def get_article(self, account_id: str, article_id: str) -> StoredArticle:
        stored = await self.store.get_article(account_id, article_id)
        if stored is None:
            raise ArticleNotFound(account_id, article_id)
        return stored

    async def delete_article(self, account_id: str, article_id: str) -> None:
        lifecycle = self._ready()
        async with lifecycle.commit_lock:
            if not await self.store.delete_article(account_id, article_id):
                raise ArticleNotFound(account_id, article_id)
            for model in lifecycle.live_models():
                model.index.remove(account_id, article_id)

    async def _write(self, stored: list[StoredArticle], *, bulk: bool) -> list[bool]:
        """Embed with every live version, commit durably, apply to every live index."""
        lifecycle = self._ready()
        articles = [s.article for s in stored]
        vectors: dict[int, np.ndarray] = {}
        while True:
            await self._embed_missing(lifecycle.live_models(), articles, vectors, bulk=bulk)
            async with lifecycle.commit_lock:
                models = lifecycle.live_models()
                if any(model.number not in vectors for model in models):
                    continue  # a version joined while embedding: embed with it too
                writes = [
                    ArticleWrite(s, {model.number: vectors[model.number][i] for model in models})
                    for i, s in enumerate(stored)
                ]
                created = await self.store.write_articles(writes)
                for model in models:
                    add_to_index(model.index, articles, vectors[model.number])
                return created

    @staticmethod
    async def _embed_missing(
        models: Sequence[ServingModel],
        articles: Sequence[Article],
        vectors: dict[int, np.ndarray],
        *,
        bulk: bool,
    ) -> None:
        todo = [model for model in models if model.number not in vectors]
        results = await asyncio.gather(
            *(model.embed_articles(articles, bulk=bulk) for model in todo)
        )
        vectors.update((model.number, result) for model, result in zip(todo, results, strict=True))

    def _running(self) -> ModelLifecycle:
        if self._lifecycle is None or self._store is None:
            raise NotReady("the service is not running")
        return self._lifecycle

    def _ready(self) -> ModelLifecycle:
        if self._state is not State.READY:
            raise NotReady(f"the service is not ready ({self._state})")
        return self._running()
