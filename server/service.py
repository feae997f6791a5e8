"""The recommendation service: store, model versions and indexes, and the rules tying them.

Several processes (workers, replicas) may share one store. One of them leads the
model lifecycle, elected through the store (`ArticleStore.try_lead`); the others
follow the version records it writes. Every process follows the store's change log
(`server.versions.feed`) into its own indexes, so a write accepted by one process
reaches the others' within about `feed_wait_s` (PostgreSQL: at once).

Start: open the store, then either lead — load the version to serve
(`ModelLifecycle.open_active`; failures abort startup), build its index in the
background (vectors of the active version come from the store, and only articles
missing one are embedded), then resume a recorded upgrade or rollback version and
watch the repository — or follow: load the version the leader recorded as active
with its stored vectors and wait until every article has one. Until then the
service is not ready (`NotReady`, a 503). A follower takes the lead when the
leader is gone; a leader that loses its leadership stops (its supervisor restarts
it as a follower).

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
import os
import shlex
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kbrec.records import Article
from server.errors import (
    ArticleNotFound,
    ImportInterrupted,
    InvalidRequest,
    NotReady,
    ServiceError,
    UnknownAccount,
)
from server.experiments.coordinator import ExperimentObserver, Experiments, LogPolicy
from server.experiments.min_scores import MinScores
from server.inference.backends.base import BackendError, BackendProvider
from server.inference.batching import BatchObserver
from server.inference.compute_gate import QUEUED_LANES, ComputeGate, Lane
from server.inference.device_ranking import RankingConfig
from server.inference.ranking import RankRequest, ScoredArticle, limit_blas_threads
from server.inference.serving_model import ModelLoader
from server.settings import Settings
from server.storage.accounts import Account
from server.storage.store import ArticleStore, StoredArticle, StoreError, utc_now
from server.versions.feed import PRUNE_EVERY_S, ChangeFeed, FeedObserver
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
    request_id: str = ""  # names the request in the log, for feedback
    experiment_id: str | None = None  # set when an experiment's arm answered
    arm: str | None = None


@dataclass(frozen=True)
class AccountQuotas:
    max_articles: int
    max_article_bytes: int  # title and body, UTF-8


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    deleted: int = 0  # a sync import's articles that the export no longer has


class RecommendationService:
    def __init__(
        self,
        settings: Settings,
        backends: BackendProvider,
        open_store: StoreOpener,
        observer: BatchObserver | None = None,
        feed_observer: FeedObserver | None = None,
        *,
        accounts_provisioned: bool = False,
        experiment_observer: ExperimentObserver | None = None,
    ) -> None:
        self.settings = settings
        # With authentication, accounts exist only once created; without, a first write
        # creates one (see `_admit_articles`).
        self.accounts_provisioned = accounts_provisioned
        self._backends = backends
        self._open_store = open_store
        self._observer = observer
        self._feed_observer = feed_observer
        self._experiment_observer = experiment_observer
        self._experiments: Experiments | None = None
        self._state = State.STOPPED
        self._failure: BaseException | None = None
        self._store: ArticleStore | None = None
        self._lifecycle: ModelLifecycle | None = None
        self._feed: ChangeFeed | None = None
        self._leadership_task: asyncio.Task[None] | None = None
        self._tokenizer_executor: ThreadPoolExecutor | None = None
        self._index_task: asyncio.Task[None] | None = None
        self._index_built = asyncio.Event()  # set once ready, or once the build failed
        # Backend calls at once, across versions: one per model instance.
        self._gate = ComputeGate(settings.inference.instances(settings.http.workers))

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
        tasks = [t for t in (self._index_task, self._leadership_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._state = State.STOPPED
        lifecycle, self._lifecycle = self._lifecycle, None
        store, self._store = self._store, None
        feed, self._feed = self._feed, None
        experiments, self._experiments = self._experiments, None
        try:
            if feed is not None:
                await feed.close()
            if experiments is not None:
                await experiments.close()  # writes what the log still queues
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
        inference = self.settings.inference
        ranking = RankingConfig.from_settings(inference.ranking_device, inference.ranking_dtype)
        blas_threads = limit_blas_threads(inference.ranking_threads)
        log.info(
            "ranking on %s (%s; BLAS threads: %s)", ranking.device, ranking.dtype, blas_threads
        )
        loader = ModelLoader(
            self._backends,
            self.settings.batching,
            self._tokenizer_executor,
            self._gate,
            self._observer,
            ranking,
        )
        self._lifecycle = ModelLifecycle(
            self.settings.repository,
            self._store,
            loader,
            pacing=self.settings.backfill,
            poll_s=self.settings.repository_poll_s,
        )
        feedback = self.settings.feedback
        self._experiments = Experiments(
            self._store,
            self._lifecycle,
            LogPolicy(
                feedback.recommendation_log,
                feedback.log_query_text,
                feedback.log_retention_days,
                feedback.log_flush_ms / 1000,
                feedback.log_max_queue,
            ),
            MinScores(feedback.min_score),
            self._experiment_observer,
        )
        self._lifecycle.on_trial_complete = self._experiments.trial_completed
        self._feed = ChangeFeed(
            self._store,
            self._lifecycle.live,
            self._lifecycle.follow,
            on_experiments=self._experiments.refresh,
            wait_s=self.settings.feed_wait_s,
            observer=self._feed_observer,
        )
        self._lifecycle.live.on_stale_live_set = self._lifecycle.follow
        await self._feed.mark_start()
        await self._lead_or_follow(self._lifecycle, self._store)

    async def _lead_or_follow(self, lifecycle: ModelLifecycle, store: ArticleStore) -> None:
        """Lead if no one does; else wait for the leader to record an active version."""
        while True:
            if await store.try_lead():
                lifecycle.leader = True
                log.info("this process leads the model lifecycle")
                await lifecycle.open_active()
                return
            if await lifecycle.open_followed_active() is not None:
                log.info("following the leader: model version %s", lifecycle.live.active_number)
                return
            await store.wait_for_change(await store.last_change_seq(), self.settings.leader_check_s)

    async def _build_index(self) -> None:
        lifecycle, feed = self._running(), self._following()
        try:
            feed.start()
            if lifecycle.leader:
                await lifecycle.build_active_index()
            else:
                await self._wait_until_indexed(lifecycle)
        except Exception as exc:
            log.exception("building the index of version %s failed", lifecycle.live.active_number)
            self._failure = exc
            self._state = State.FAILED
            self._index_built.set()
            return
        self._state = State.READY
        self._index_built.set()
        log.info(self.ready_message())
        if lifecycle.leader:
            await lifecycle.start_background()
        else:
            await lifecycle.follow()
        experiments = self.experiments
        await experiments.refresh()
        experiments.start_logging()
        self._leadership_task = asyncio.get_running_loop().create_task(
            self._keep_leadership(lifecycle), name="leadership"
        )

    async def _wait_until_indexed(self, lifecycle: ModelLifecycle) -> None:
        """A follower is ready once every article has a vector of the active version in
        the store (the leader embeds what lacks one; the feed brings it here)."""
        store, feed = self._running_store(), self._following()
        while True:
            seen = await store.last_change_seq()
            missing = await lifecycle.live.count_missing(lifecycle.live.active)
            # Read after the count: the index then holds every vector the count saw.
            await feed.catch_up()
            if not missing:
                return
            log.info("waiting for the leader to embed %d articles", missing)
            await store.wait_for_change(seen, self.settings.leader_check_s)
            if not lifecycle.leader and await store.try_lead():
                log.info("the leader is gone: this process leads the model lifecycle")
                await lifecycle.lead()  # embeds what is missing; the loop sees it done

    async def _keep_leadership(self, lifecycle: ModelLifecycle) -> None:
        """Take the lead when the leader is gone; stop when this process lost it (a
        partitioned leader must not go on changing roles)."""
        store = self._running_store()
        pruned_at = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.leader_check_s)
            try:
                if lifecycle.leader:
                    if not await store.still_leading():
                        log.critical("lost the lifecycle leadership; stopping this process")
                        self._state = State.FAILED
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
                    if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                        pruned_at = time.monotonic()
                        await self._following().prune()
                elif await store.try_lead():
                    log.info("the leader is gone: this process leads the model lifecycle")
                    await lifecycle.lead()
            except StoreError as exc:
                log.warning("leadership check: %s", exc)
            try:
                await self.experiments.tick()
            except (StoreError, ServiceError, BackendError) as exc:
                log.warning("experiments: %s", exc)

    # --- state -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is State.READY

    async def until_ready(self) -> bool:
        """Wait for the first index build: True once ready, False if it failed."""
        await self._index_built.wait()
        return self._state is not State.FAILED

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def lifecycle(self) -> ModelLifecycle:
        return self._running()

    @property
    def experiments(self) -> Experiments:
        if self._experiments is None:
            raise NotReady("the service is not running")
        return self._experiments

    @property
    def store(self) -> ArticleStore:
        if self._store is None:
            raise NotReady("the service is not running")
        return self._store

    @property
    def applied_change_seq(self) -> int:
        """The last change of the store's log this process applied."""
        return 0 if self._feed is None else self._feed.applied_seq

    @property
    def leader(self) -> bool:
        return self._lifecycle is not None and self._lifecycle.leader

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

    def alive(self) -> bool:
        """Liveness: not failed, and the active version's batch worker runs. Not the
        backend: a Triton that went away comes back without a restart of this process."""
        if self._state is State.FAILED or self._lifecycle is None:
            return False
        try:
            model = self._lifecycle.live.active
        except NotReady:
            return False
        return model.batcher.healthy

    async def healthy(self) -> bool:
        """Alive and the active version's backend answers (readiness)."""
        return self.alive() and await self._running().live.active.backend.health()

    def ready_message(self) -> str:
        model = self._running().live.active
        counts = [count for _, count in model.index.article_counts()]
        account = next((account for account, _ in model.index.article_counts()), "acme")
        body = json.dumps({"account_id": account, "text": "how do I reset my password"})
        url = f"{self.settings.base_url}/v1/recommendations"
        curl = f"curl -s {url} -H 'content-type: application/json' -d {shlex.quote(body)}"
        if self.accounts_provisioned:
            curl += ' -H "authorization: Bearer $KBREC_KEY"'
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
        assignment_key: str | None = None,
    ) -> Recommendation:
        """Rank with the active version, with `model_version` if it serves (active, or a
        complete standby), or with the arm of the running experiment (by the account or
        `assignment_key`); then drop what scores below the account's minimum and log it."""
        # One read of the version: its backend embeds the query and its index ranks
        # it, whatever switch happens meanwhile.
        live = self._ready().live
        experiments = self.experiments
        route = None if model_version is not None else experiments.route(account_id, assignment_key)
        if route is not None:
            model = route.model
        else:
            model = live.active if model_version is None else live.serving(model_version)
        if model.index.account(account_id) is None:
            raise UnknownAccount(account_id)
        ranked = await model.rank(text, RankRequest(account_id, top_k, locale))
        articles = experiments.min_scores.keep(account_id, ranked)
        request_id = uuid.uuid4().hex
        experiments.record(request_id, account_id, model.number, articles, route, text)
        if route is None:
            return Recommendation(model.number, articles, request_id)
        return Recommendation(
            model.number, articles, request_id, route.experiment_id, route.arm.value
        )

    async def put_article(self, article: Article) -> tuple[StoredArticle, bool]:
        """Store, embed and index one article in every live version; True if created."""
        self._ready()
        await self._admit_articles(article.account_id, [article])
        stored = StoredArticle(article, utc_now())
        (created,) = await self._write([stored], bulk=False)
        return stored, created

    async def import_articles(
        self, articles: Sequence[Article], sync_account: str | None = None
    ) -> ImportResult:
        """Store, embed and index many articles (the last of an id wins), committed in
        chunks of `import_chunk_articles` in their order: one import never holds the
        commit lock, the tokenizer or the ingest lane for long.

        With `sync_account`, then delete that account's articles not among `articles`
        (absent from the export, or drafts in it), in one transaction after the last
        chunk: the answer comes once they are gone, and an import that fails earlier
        deletes nothing. A failure after some chunks leaves those committed:
        `ImportInterrupted` (or an `InvalidRequest` of the same code) says how many.
        """
        latest = list({article.article_id: article for article in articles}.values())
        self._ready()
        account_id = sync_account or next((a.account_id for a in latest), None)
        if account_id is not None:
            await self._admit_articles(account_id, latest, replaces_all=sync_account is not None)
        chunk_size = self.settings.imports.import_chunk_articles
        now = utc_now()
        created = committed = 0
        for start in range(0, len(latest), chunk_size):
            chunk = [StoredArticle(article, now) for article in latest[start : start + chunk_size]]
            try:
                flags = await self._write(chunk, bulk=True)
            except (ServiceError, StoreError, BackendError) as exc:
                if committed == 0:
                    raise  # nothing written: the cause as it is
                raise interrupted(exc, committed, len(latest), "") from exc
            created += sum(flags)
            committed += len(chunk)
        deleted = 0
        if sync_account is not None:
            keep = {article.article_id for article in latest}
            try:
                deleted = await self._ready().live.delete_articles_except(sync_account, keep)
            except (ServiceError, StoreError, BackendError) as exc:
                reason = "; the articles it lacks were not deleted"
                raise interrupted(exc, committed, len(latest), reason) from exc
        return ImportResult(created=created, updated=committed - created, deleted=deleted)

    # --- accounts and quotas ----------------------------------------------------

    def quotas_of(self, account: Account) -> AccountQuotas:
        """The account's own quotas, else the server's defaults."""
        defaults = self.settings.access
        return AccountQuotas(
            account.max_articles or defaults.max_account_articles,
            account.max_article_bytes or defaults.max_article_bytes,
        )

    async def _admit_articles(
        self, account_id: str, articles: Sequence[Article], *, replaces_all: bool = False
    ) -> None:
        """Refuse a write the account's quotas do not allow (409 or 413, nothing written),
        or, with provisioned accounts, a write to an account never created (404). Without
        them a first write creates the account, as before authentication existed.

        `replaces_all`: `articles` become all of the account's (a sync import). Checked
        before the write: writes to one account racing each other may overshoot the
        article quota by the articles they add together.
        """
        store = self.store
        account = await store.get_account(account_id)
        if account is None:
            if self.accounts_provisioned:
                raise UnknownAccount(account_id)
            account = Account(account_id, utc_now())
            await store.create_accounts([account])
        quotas = self.quotas_of(account)
        for article in articles:
            size = len(article.title.encode("utf-8")) + len(article.body.encode("utf-8"))
            if size > quotas.max_article_bytes:
                raise InvalidRequest(
                    f"article {article.article_id!r} has {size} bytes of title and body, over "
                    f"account {account_id!r}'s quota of {quotas.max_article_bytes}",
                    "article_too_large",
                    413,
                )
        ids = {article.article_id for article in articles}
        after = len(ids)
        if not replaces_all:
            stored = await store.count_articles(account_id)
            after += stored
            if after > quotas.max_articles:  # the articles replaced do not count twice
                after -= await store.count_articles(account_id, ids)
        if after > quotas.max_articles:
            raise InvalidRequest(
                f"account {account_id!r} would hold {after} articles, over its quota of "
                f"{quotas.max_articles}",
                "article_quota_exceeded",
                409,
            )

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

    def _following(self) -> ChangeFeed:
        if self._feed is None:
            raise NotReady("the service is not running")
        return self._feed

    def _running_store(self) -> ArticleStore:
        if self._store is None:
            raise NotReady("the service is not running")
        return self._store

    def _running(self) -> ModelLifecycle:
        if self._lifecycle is None or self._store is None:
            raise NotReady("the service is not running")
        return self._lifecycle

    def _ready(self) -> ModelLifecycle:
        if self._state is not State.READY:
            raise NotReady(f"the service is not ready ({self._state})")
        return self._running()


def interrupted(exc: Exception, committed: int, total: int, reason: str) -> ServiceError:
    """An import's failure after it committed something: the cause and how many articles
    stay committed. A caller's mistake keeps its code; anything else is transient."""
    done = f"{committed} of {total} articles committed{reason}"
    if isinstance(exc, InvalidRequest):
        return InvalidRequest(f"import stopped, {done}: {exc}", exc.code, exc.status)
    return ImportInterrupted(f"import interrupted, {done}: {exc}; re-send the export to finish")
