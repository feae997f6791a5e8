"""The live set: the model versions every article write must reach, and the commit lock.

`LiveVersions` is the one owner of the commit lock. Everything that must be ordered
against article writes goes through it (docs/architecture.md, "The commit lock"):

- an article write embeds with every live version, then, under the lock, checks the
  live set again (a version that joined meanwhile embeds it too), commits durably,
  and applies the vectors to every live index, in commit order;
- a delete commits and removes from every live index under the lock;
- a backfill chunk commits the vectors still valid (same article revision) and
  indexes them under the lock;
- a standby joins the live set together with loading its stored vectors, under the
  lock, so no write falls between the two;
- a switch happens under the lock after a fresh count found no article without a
  vector of the standby, and is one assignment of `_active`: a query keeps the
  `ServingModel` it picked up, whose backend and index belong to one version.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from kbrec.records import Article
from server.errors import NotReady, VersionNotServing
from server.inference.index import ArticleIndex, IndexEntry
from server.inference.serving_model import ServingModel
from server.storage.store import (
    ArticleStore,
    ArticleWrite,
    EmbeddingWrite,
    IndexRow,
    StaleLiveSet,
    StoredArticle,
    VersionRole,
)
from server.versions.progress import BackfillProgress
from server.versions.roles import VersionRoles


@dataclass(eq=False)
class Standby:
    """The version loaded next to the active one: a CANDIDATE on its way in, or the
    PREVIOUS active kept current for an instant rollback."""

    model: ServingModel
    role: VersionRole
    progress: BackfillProgress
    complete: bool = False  # every article has a vector of it (checked under the lock)
    task: asyncio.Task[None] | None = field(default=None, repr=False)  # its backfill

    @property
    def number(self) -> int:
        return self.model.number


def index_entry(article: Article) -> IndexEntry:
    return IndexEntry(article.article_id, article.title, article.locale)


# A write waits this long at most for this process to load a version the leader
# recorded (503 after).
STALE_LIVE_SET_WAIT_S = 30.0


async def pause() -> None:
    await asyncio.sleep(0.05)


def fill_index(index: ArticleIndex, rows: Sequence[IndexRow]) -> None:
    """Upsert a few rows (the change feed's refreshed articles) into a live index."""
    for row in rows:
        index.upsert(row.account_id, IndexEntry(row.article_id, row.title, row.locale), row.vector)


def load_index(index: ArticleIndex, rows: Sequence[IndexRow]) -> None:
    """Put a version's stored vectors into its index in ONE bulk call (`load_accounts`):
    an upsert per row may grow or move a `DeviceIndex` segment each time (README "GPU").

    The result is what `fill_index(index, rows)` gives: what the index already holds
    (the feed may have applied changes before a start's load) keeps its place, new
    articles follow in row order, per account and across accounts; an article given
    twice keeps its first place and takes its last row."""
    held = (
        (account_id, entry, vector)
        for account_id, _ in list(index.article_counts())
        for entry, vector in zip(
            index.account_entries(account_id),
            index.account_matrix(account_id).astype(np.float32, copy=False),
            strict=True,
        )
    )
    stored = (
        (row.account_id, IndexEntry(row.article_id, row.title, row.locale), row.vector)
        for row in rows
    )
    slot_of: dict[tuple[str, str], int] = {}  # (account, article_id) → slot in entries
    slots_of: dict[str, list[int]] = {}  # account → its slots, in the order of its rows
    entries: list[IndexEntry] = []
    vectors: list[np.ndarray] = []
    for account_id, entry, vector in itertools.chain(held, stored):
        key = (account_id, entry.article_id)
        slot = slot_of.get(key)
        if slot is not None:  # last one wins, in the first one's place
            entries[slot], vectors[slot] = entry, vector
            continue
        slot = slot_of[key] = len(entries)
        entries.append(entry)
        vectors.append(vector)
        slots_of.setdefault(account_id, []).append(slot)
    order = [slot for slots in slots_of.values() for slot in slots]
    # np.array of the row list: one copy, faster than np.stack (no per-row views).
    matrix = (
        np.array([vectors[slot] for slot in order], dtype=np.float32)
        if order
        else np.zeros((0, index.dim), dtype=np.float32)
    )
    accounts = [(a, [entries[slot] for slot in slots]) for a, slots in slots_of.items()]
    index.load_accounts(accounts, matrix)


def add_to_index(index: ArticleIndex, articles: Sequence[Article], vectors: np.ndarray) -> None:
    for article, vector in zip(articles, vectors, strict=True):
        index.upsert(article.account_id, index_entry(article), vector)


class LiveVersions:
    def __init__(self, store: ArticleStore) -> None:
        self._store = store
        self._commit_lock = asyncio.Lock()
        self._active: ServingModel | None = None
        self._standby: Standby | None = None
        self.switches = 0
        # Catches up with the version records (`ModelLifecycle.follow`) when a write
        # finds that the leader recorded a version this process lacks.
        self.on_stale_live_set: Callable[[], Awaitable[None]] = pause

    # --- views -------------------------------------------------------------------

    @property
    def active(self) -> ServingModel:
        if self._active is None:
            raise NotReady("no model version is loaded")
        return self._active

    @property
    def active_number(self) -> int | None:
        return None if self._active is None else self._active.number

    @property
    def standby(self) -> Standby | None:
        return self._standby

    def models(self) -> list[ServingModel]:
        """Every version an article write must embed with, the active one first."""
        models = [] if self._active is None else [self._active]
        if self._standby is not None:
            models.append(self._standby.model)
        return models

    def serving(self, number: int) -> ServingModel:
        """The version if it can answer queries: active, or a complete standby."""
        active, standby = self.active, self._standby
        if number == active.number:
            return active
        complete = standby if standby is not None and standby.complete else None
        if complete is not None and complete.number == number:
            return complete.model
        raise VersionNotServing(
            number, active.number, None if complete is None else complete.number
        )

    async def count_missing(self, model: ServingModel) -> int:
        return await self._store.count_without_embedding(model.number, model.index.dim)

    async def articles_missing(self, model: ServingModel) -> list[StoredArticle]:
        return await self._store.articles_without_embedding(model.number, model.index.dim)

    # --- changes of the live set -------------------------------------------------

    async def serve(self, model: ServingModel) -> None:
        """Make `model` the active version (at start; its index fills in `load_stored`)."""
        async with self._commit_lock:
            self._active = model

    async def load_stored(self, model: ServingModel) -> int:
        """Put every stored vector of the model's version into its index; returns how many."""
        async with self._commit_lock:
            return await self._load_stored_vectors(model)

    async def join(self, standby: Standby) -> int:
        """Make `standby` the standby, with its stored vectors; returns how many."""
        async with self._commit_lock:
            stored = await self._load_stored_vectors(standby.model)
            self._standby = standby
            return stored

    async def leave(self, standby: Standby) -> None:
        """`standby` stops receiving writes (it is being retired)."""
        async with self._commit_lock:
            if self._standby is standby:
                self._standby = None

    async def complete(self, standby: Standby, roles: VersionRoles) -> bool:
        """Mark `standby` complete if no article lacks a vector of it (a candidate then
        switches in); False if some do (written meanwhile: backfill again)."""
        async with self._commit_lock:
            if await self.count_missing(standby.model):
                return False
            standby.complete = True
            if standby.role is VersionRole.CANDIDATE:
                await self._switch_locked(standby, roles)
            return True

    async def switch(self, standby: Standby, roles: VersionRoles | None) -> None:
        """Make a complete standby active (a rollback, or activating a kept version);
        `roles` None: the leader recorded the switch and this process follows it."""
        async with self._commit_lock:
            await self._switch_locked(standby, roles)

    async def replace_active(self, model: ServingModel) -> ServingModel | None:
        """A follower whose active version the leader replaced by one it had not loaded:
        serve `model` (its index loaded here); returns the old active to close."""
        async with self._commit_lock:
            await self._load_stored_vectors(model)
            old, self._active = self._active, model
            self.switches += 1
            return old

    async def refresh_articles(self, keys: Sequence[tuple[str, str]]) -> None:
        """Make every live index hold exactly what the store has for these articles
        (the change feed: writes of other processes). Read and applied under the lock,
        so a local write cannot fall between and be overwritten by the older read."""
        async with self._commit_lock:
            for model in self.models():
                rows = await self._store.index_rows_for(keys, model.number, model.index.dim)
                found = {(row.account_id, row.article_id) for row in rows}
                for account_id, article_id in keys:
                    if (account_id, article_id) not in found:
                        model.index.remove(account_id, article_id)
                fill_index(model.index, rows)

    async def reload_indexes(self) -> None:
        """Every live index afresh from the store (a feed reader that fell behind)."""
        async with self._commit_lock:
            for model in self.models():
                rows = await self._store.index_rows(model.number, model.index.dim)
                model.index.clear()  # no await from here on: queries never see it empty
                load_index(model.index, rows)

    def take_all(self) -> tuple[ServingModel | None, Standby | None]:
        """Empty the live set (at stop); the caller closes what it gets."""
        active, standby = self._active, self._standby
        self._active = self._standby = None
        return active, standby

    async def _switch_locked(self, standby: Standby, roles: VersionRoles | None) -> None:
        old = self.active
        if roles is not None:
            await roles.change_many(  # durable before it takes effect
                [
                    (standby.number, VersionRole.ACTIVE, standby.model.version.model_sha256, None),
                    (old.number, VersionRole.PREVIOUS, old.version.model_sha256, None),
                ]
            )
        self._active = standby.model
        self._standby = Standby(old, VersionRole.PREVIOUS, BackfillProgress(old.number), True)
        self.switches += 1

    async def _load_stored_vectors(self, model: ServingModel) -> int:
        rows = await self._store.index_rows(model.number, model.index.dim)
        load_index(model.index, rows)
        return len(rows)

    # --- article writes and backfill commits ---------------------------------------

    async def write_articles(self, stored: Sequence[StoredArticle], *, bulk: bool) -> list[bool]:
        """Embed with every live version, commit durably, apply to every live index;
        True where the article was created. `bulk` waits for queue room (imports)."""
        articles = [s.article for s in stored]
        vectors: dict[int, np.ndarray] = {}
        deadline = time.monotonic() + STALE_LIVE_SET_WAIT_S
        while True:
            await embed_missing(self.models(), articles, vectors, bulk=bulk)
            async with self._commit_lock:
                models = self.models()
                if any(model.number not in vectors for model in models):
                    continue  # a version joined while embedding: embed with it too
                writes = [
                    ArticleWrite(s, {model.number: vectors[model.number][i] for model in models})
                    for i, s in enumerate(stored)
                ]
                try:
                    # Refused if the records name a live version this process lacks.
                    created = await self._store.write_articles(
                        writes, live_versions=[model.number for model in models]
                    )
                except StaleLiveSet as exc:
                    stale: StaleLiveSet | None = exc
                else:
                    for model in models:
                        add_to_index(model.index, articles, vectors[model.number])
                    return created
            # The leader recorded a version this process has not loaded yet: load it
            # (outside the lock: joining takes it) and embed with it too.
            if time.monotonic() > deadline:
                raise NotReady(f"model versions are changing ({stale}); retry")
            await self.on_stale_live_set()

    async def delete_article(self, account_id: str, article_id: str) -> bool:
        """Durably delete from the store and every live index; False if unknown."""
        async with self._commit_lock:
            if not await self._store.delete_article(account_id, article_id):
                return False
            for model in self.models():
                model.index.remove(account_id, article_id)
            return True

    async def delete_articles_except(self, account_id: str, keep: Collection[str]) -> int:
        """Durably delete the account's articles whose ids are not in `keep`, in one store
        transaction, and from every live index (a sync import); returns how many."""
        async with self._commit_lock:
            gone = await self._store.delete_articles_except(account_id, keep)
            for model in self.models():
                for article_id in gone:
                    model.index.remove(account_id, article_id)
            return len(gone)

    async def commit_vectors(
        self, model: ServingModel, chunk: Sequence[StoredArticle], vectors: np.ndarray
    ) -> int:
        """Store and index backfilled vectors of articles still at the embedded revision;
        returns how many were written (the others were deleted or rewritten meanwhile,
        and their writer indexed them)."""
        writes = [
            EmbeddingWrite(s.article.account_id, s.article.article_id, v, s.revision)
            for s, v in zip(chunk, vectors, strict=True)
        ]
        async with self._commit_lock:
            written = await self._store.write_embeddings(model.number, writes)
            for stored, write, ok in zip(chunk, writes, written, strict=True):
                if ok:
                    add_to_index(model.index, [stored.article], write.vector[None])
        return sum(written)


async def embed_missing(
    models: Sequence[ServingModel],
    articles: Sequence[Article],
    vectors: dict[int, np.ndarray],
    *,
    bulk: bool,
) -> None:
    """Fill `vectors` for every model it lacks, concurrently."""
    todo = [model for model in models if model.number not in vectors]
    results = await asyncio.gather(*(model.embed_articles(articles, bulk=bulk) for model in todo))
    vectors.update((model.number, result) for model, result in zip(todo, results, strict=True))
