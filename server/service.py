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
switch to the other version. `LiveVersions` (server.versions.live_set) owns the
commit lock that orders them; docs/architecture.md follows a query and a write
through the layers.
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

from kbrec.records import Article
from server.errors import ArticleNotFound, NotReady, UnknownAccount
from server.inference.backends.base import BackendProvider
from server.inference.batching import BatchObserver
from server.inference.compute_gate import QUEUED_LANES, ComputeGate, Lane
from server.inference.ranking import RankRequest, ScoredArticle
from server.inference.serving_model import ModelLoader
from server.settings import Settings
from server.storage.store import ArticleStore, StoredArticle, utc_now
from server.versions.lifecycle import ModelLifecycle

log = logging.getLogger(__name__)

StoreOpener = Callable[[Path], Awaitable[ArticleStore]]


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


class RecommendationService:
    def __init__(
        self,
        settings: Settings,
        backends: BackendProvider,
        open_store: StoreOpener,
        observer: BatchObserver | None = None,
    ) -> None:
        self.settings = settings
        self._backends = backends
        self._open_store = open_store
        self._observer = observer
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
            max_workers=self.settings.inference.tokenizer_threads, thread_name_prefix="tokenize"
        )
        loader = ModelLoader(
            self._backends,
            self.settings.batching,
            self._tokenizer_executor,
            self._gate,
            self._observer,
        )
        self._lifecycle = ModelLifecycle(
            self.settings.repository,
            self._store,
            loader,
            pacing=self.settings.backfill,
            poll_s=self.settings.repository_poll_s,
        )
        await self._lifecycle.open_active()

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
        return None if self._lifecycle is None else self._lifecycle.live.active_number

    def article_counts(self) -> Iterator[tuple[str, int, int]]:
        """(account, model version, articles) for every account of every loaded version."""
        if self._lifecycle is not None:
            for model in self._lifecycle.live.models():
                for account_id, count in model.index.article_counts():
                    yield account_id, model.number, count

    def queue_depths(self) -> dict[Lane, int]:
        models = [] if self._lifecycle is None else self._lifecycle.live.models()
        return {lane: sum(model.batcher.depth(lane) for model in models) for lane in QUEUED_LANES}

    async def healthy(self) -> bool:
        if self._state is State.FAILED or self._lifecycle is None:
            return False
        try:
            model = self._lifecycle.live.active
        except NotReady:
            return False
        return model.batcher.healthy and await model.backend.health()

    def ready_message(self) -> str:
        model = self._running().live.active
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
        live = self._ready().live
        model = live.active if model_version is None else live.serving(model_version)
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
        if not await self._ready().live.delete_article(account_id, article_id):
            raise ArticleNotFound(account_id, article_id)

    async def _write(self, stored: list[StoredArticle], *, bulk: bool) -> list[bool]:
        return await self._ready().live.write_articles(stored, bulk=bulk)

    def _running(self) -> ModelLifecycle:
        if self._lifecycle is None or self._store is None:
            raise NotReady("the service is not running")
        return self._lifecycle

    def _ready(self) -> ModelLifecycle:
        if self._state is not State.READY:
            raise NotReady(f"the service is not ready ({self._state})")
        return self._running()
