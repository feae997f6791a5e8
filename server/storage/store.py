"""The article store interface: articles and their vectors, durable on acknowledgement.

Vectors are keyed by (account, article, model version): a vector is only ever
compared with vectors of its own version. Writing an article replaces its text
and drops every vector of the old text, in every version, in the same
transaction as the new vectors. Two implementations: one SQLite file (`sqlite`)
and PostgreSQL for several processes and hosts (`postgres`); `opening.open_store`
picks one by location.

Every write transaction also appends rows to a change log in the same
transaction (`Change`): what changed, not how, so a reader in another process
re-reads the current state and applying a change twice does no harm.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from kbrec.records import Article
from server.storage.experiment_tables import ExperimentTables

if TYPE_CHECKING:
    from server.storage.accounts import Account, ApiKey


def utc_now() -> str:
    """The store's timestamps: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StoreError(Exception):
    """The store could not read or write (disk, corruption, locking); not the caller's fault."""


@dataclass(frozen=True)
class StoredArticle:
    article: Article
    updated_at: str  # ISO 8601, UTC
    # The seq of the change that wrote this text: never reused, not even after a delete
    # and a new write of the same id. A vector computed from revision r is stored only
    # while the article is still at r (a background re-embedding never overwrites a newer
    # text's vector with an older text's).
    revision: int = 0


@dataclass(frozen=True)
class ArticleWrite:
    """An article and its vectors for each model version being served."""

    stored: StoredArticle
    embeddings: Mapping[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexRow:
    """What the in-memory index needs of an article that has a vector of the version."""

    account_id: str
    article_id: str
    title: str
    locale: str | None
    vector: np.ndarray


@dataclass(frozen=True)
class EmbeddingWrite:
    account_id: str
    article_id: str
    vector: np.ndarray
    revision: int | None = None  # written only if the article is still at this revision


class VersionRole(enum.StrEnum):
    """What the service does with a model version (persisted, so a restart resumes it)."""

    ACTIVE = "active"  # serves queries
    CANDIDATE = "candidate"  # loaded, articles being re-embedded; switches in when complete
    PREVIOUS = "previous"  # loaded and kept current: activating it again is a rollback
    # Loaded next to the active one for an A/B experiment (its treatment), backfilled and
    # kept current; never switched in by itself (server.experiments).
    TRIAL = "trial"
    FAILED = "failed"  # failed validation or loading; never activated on its own
    RETIRED = "retired"  # no longer kept; its vectors are deleted


@dataclass(frozen=True)
class VersionRecord:
    version: int
    role: VersionRole
    model_sha256: str  # which files the record is about (a version number is not reused)
    error: str | None = None
    updated_at: str = ""


class ChangeKind(enum.StrEnum):
    """What a change log row names (readers re-read its current state)."""

    ARTICLE = "article"  # an article's text was written or deleted (with its vectors)
    EMBEDDING = "embedding"  # a vector of (article, model_version) was written
    EMBEDDINGS_DELETED = "embeddings_deleted"  # every vector of model_version is gone
    VERSIONS = "versions"  # version records were saved
    EXPERIMENTS = "experiments"  # experiment records were saved (started, running, stopped)
    ACCOUNT_SETTINGS = "account_settings"  # an account's settings (its minimum score) changed


@dataclass(frozen=True)
class Change:
    """One row of the change log, in commit order of `seq` (gaps possible, never reused)."""

    seq: int
    kind: ChangeKind
    account_id: str | None = None
    article_id: str | None = None
    model_version: int | None = None
    at: str = ""  # when it was appended, ISO 8601 UTC


# The roles whose versions every article write must carry a vector of.
LIVE_ROLES: Final = (
    VersionRole.ACTIVE,
    VersionRole.CANDIDATE,
    VersionRole.PREVIOUS,
    VersionRole.TRIAL,
)


class StaleLiveSet(Exception):
    """A write carried vectors of fewer versions than the records name as live: another
    process (the leader) recorded a version the writer has not loaded yet."""

    def __init__(self, missing: Collection[int]) -> None:
        super().__init__(f"model version(s) {sorted(missing)} are live but were not embedded")
        self.missing = set(missing)


def missing_live_versions(
    recorded: Iterable[tuple[int, str]], live_versions: Collection[int]
) -> set[int]:
    """Versions whose (version, role) record is live but that are not in `live_versions`."""
    live = {role.value for role in LIVE_ROLES}
    return {version for version, role in recorded if role in live} - set(live_versions)


class ArticleStore(ExperimentTables, Protocol):
    async def write_articles(
        self, writes: Sequence[ArticleWrite], live_versions: Collection[int] | None = None
    ) -> list[bool]:
        """Insert or replace, all in one durable transaction; True where newly created.

        With `live_versions` (the versions the writer embedded with), nothing is written
        and `StaleLiveSet` raised if the version records name another live version: in
        the same transaction, so no version can become live between check and commit.
        """
        ...

    async def get_article(self, account_id: str, article_id: str) -> StoredArticle | None: ...

    async def delete_article(self, account_id: str, article_id: str) -> bool:
        """Durably delete the article and its vectors; False if it did not exist."""
        ...

    async def delete_articles_except(self, account_id: str, keep: Collection[str]) -> list[str]:
        """Durably delete, in one transaction, the account's articles whose ids are not in
        `keep`, with their vectors (the end of a sync import); returns the deleted ids.
        Each deletion appends an `article` change, as `delete_article` does."""
        ...

    async def index_rows(self, model_version: int, dim: int) -> list[IndexRow]:
        """Every article with a vector of this version and dimension."""
        ...

    async def articles_without_embedding(self, model_version: int, dim: int) -> list[StoredArticle]:
        """Articles lacking a (valid) vector of this version: to embed before serving it."""
        ...

    async def count_without_embedding(self, model_version: int, dim: int) -> int: ...

    async def write_embeddings(
        self, model_version: int, rows: Sequence[EmbeddingWrite]
    ) -> list[bool]:
        """Add vectors of one version to existing articles; True where written (deleted
        articles, and articles rewritten since the row's revision, are skipped)."""
        ...

    async def embedding_versions(self) -> dict[int, int]:
        """Model version → number of stored vectors."""
        ...

    async def delete_embeddings(self, model_version: int) -> int:
        """Delete every vector of a version no longer kept; returns how many."""
        ...

    async def version_records(self) -> list[VersionRecord]:
        """Every model version the service has seen, by version number."""
        ...

    async def save_version_records(self, records: Sequence[VersionRecord]) -> None:
        """Insert or replace these records in one durable transaction."""
        ...

    # The change log: what other processes poll to follow the store.

    async def index_rows_for(
        self, keys: Sequence[tuple[str, str]], model_version: int, dim: int
    ) -> list[IndexRow]:
        """`index_rows` for these (account_id, article_id) keys only (to apply changes);
        keys without a valid vector of the version are left out."""
        ...

    async def changes_since(self, after_seq: int, limit: int = 1000) -> list[Change]:
        """Committed changes with seq > after_seq, ascending, at most `limit`. A change
        is only visible once every change of a lower seq is (or never will be): a
        reader that saw seq s never gets a smaller one later."""
        ...

    async def last_change_seq(self) -> int:
        """The highest committed seq (0 when nothing was ever written). Read it before
        rebuilding from the store, then follow `changes_since` it."""
        ...

    async def first_change_seq(self) -> int:
        """The oldest seq still kept (0 when none). A reader whose last seen seq is below
        `first_change_seq() - 1` may have missed pruned changes and must rebuild (a gap
        left by a rolled-back transaction can make that needless, never wrong)."""
        ...

    async def prune_changes(self, keep_after_seq: int) -> int:
        """Delete changes with seq <= keep_after_seq, except the newest change, which
        stays to mark the highest seq; returns how many were deleted."""
        ...

    async def wait_for_change(self, after_seq: int, timeout_s: float) -> None:
        """Return once a change with seq > after_seq is committed (at once if one is),
        or after timeout_s; never raises for the timeout. Cancel-safe."""
        ...

    # Leadership: at most one holder among every store object on the same store,
    # in any process or host; lost when the holder's process dies.

    async def try_lead(self) -> bool:
        """Take leadership if no one holds it (never waits); True if this store leads."""
        ...

    def leads(self) -> bool:
        """Whether this store took leadership and has not resigned or seen it lost."""
        ...

    async def still_leading(self) -> bool:
        """Check that leadership still holds (PostgreSQL: its connection answers);
        False, and leadership dropped, if it was lost. Call it before leader-only work."""
        ...

    async def resign(self) -> None:
        """Give leadership up (no-op when not leading); `close` does too."""
        ...

    # Accounts and their API keys (records in `accounts`). Not in the change log: the
    # readers of keys reload them on a timer (server.http.keyring).

    async def create_accounts(self, accounts: Sequence[Account]) -> list[bool]:
        """Insert these accounts in one transaction; True where new (an existing account
        is left as it is)."""
        ...

    async def get_account(self, account_id: str) -> Account | None: ...

    async def count_articles(self, account_id: str, among: Collection[str] | None = None) -> int:
        """The account's stored articles, or only those whose id is in `among`."""
        ...

    async def create_api_key(self, key: ApiKey, key_sha256: str, account: Account) -> bool:
        """Store a key (by its digest) and, if it does not exist, its account (`account`),
        in one transaction; True if the account was created."""
        ...

    async def api_keys(self, account_id: str | None = None) -> list[ApiKey]:
        """Every key (of one account), revoked ones included, by creation."""
        ...

    async def valid_api_keys(self) -> dict[str, ApiKey]:
        """Key digest → record, for every key not revoked."""
        ...

    async def revoke_api_key(self, key_id: str, at: str) -> ApiKey | None:
        """Mark the key revoked at `at` (kept if it already was); None if no such key."""
        ...

    async def close(self) -> None: ...
