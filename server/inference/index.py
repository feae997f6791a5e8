"""The ranking index: per account, a float32 matrix of article vectors of ONE model version.

It lives in memory and is rebuilt from the store on start. All mutation and
ranking happen on the event loop (ranking runs in the batch worker), so a ranked
batch always sees a consistent matrix without locks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MIN_CAPACITY = 16


@dataclass(frozen=True)
class IndexEntry:
    """What a ranked article shows besides its score."""

    article_id: str
    title: str
    locale: str | None


class AccountArticles(Protocol):
    """One account's articles in an index: how many, and whether an article is there."""

    def __len__(self) -> int: ...

    def __contains__(self, article_id: str) -> bool: ...


class ArticleIndex(Protocol):
    """A version's ranking index as the live set, the change feed and the service use it:
    `VersionIndex` (a host matrix per account) or `DeviceIndex` (one array per version,
    server.inference.device_index)."""

    model_version: int
    dim: int

    def account(self, account_id: str) -> AccountArticles | None:
        """The account's articles (their count is `len`), or None when it has none."""
        ...

    def upsert(self, account_id: str, entry: IndexEntry, vector: np.ndarray) -> None: ...

    def remove(self, account_id: str, article_id: str) -> bool: ...

    def clear(self) -> None: ...

    def article_counts(self) -> Iterator[tuple[str, int]]: ...

    def __len__(self) -> int: ...

    def account_entries(self, account_id: str) -> list[IndexEntry]:
        """The account's entries, in the order of its `account_matrix` rows."""
        ...

    def account_matrix(self, account_id: str) -> np.ndarray:
        """A host copy or view of the account's vectors ([articles, dim])."""
        ...

    def load_accounts(
        self, accounts: Sequence[tuple[str, Sequence[IndexEntry]]], vectors: np.ndarray
    ) -> None:
        """Replace the whole index in one bulk call: each account's entries in order,
        their vectors the rows of `vectors` ([total, dim]) in the same order."""
        ...


class AccountIndex:
    """One account's articles: row i of `matrix` is the vector of `entries[i]`.

    Rows are kept dense: removing an article moves the last row into its place.
    Storage grows by doubling, so a stream of inserts costs amortised O(dim) each.
    """

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._vectors = np.zeros((MIN_CAPACITY, dim), dtype=np.float32)
        self._locale_codes = np.zeros(MIN_CAPACITY, dtype=np.int32)
        self._locale_code_of: dict[str | None, int] = {}
        self._entries: list[IndexEntry] = []
        self._row_of: dict[str, int] = {}

    @classmethod
    def loaded(cls, dim: int, entries: Sequence[IndexEntry], vectors: np.ndarray) -> AccountIndex:
        """An account holding `entries` with the rows of `vectors`, as upserting them in
        order would. A float32 `vectors` is kept, not copied (the caller hands it over):
        a bulk load then needs no second copy of every vector; the first insert past
        its rows moves the account to its own storage (`_grow_to`)."""
        if vectors.shape != (len(entries), dim):
            raise ValueError(f"vectors of shape {vectors.shape}, expected ({len(entries)}, {dim})")
        account = cls(dim)
        account._entries = list(entries)
        ids = [entry.article_id for entry in entries]
        account._row_of = dict(zip(ids, range(len(ids)), strict=True))
        if len(account._row_of) != len(account._entries):
            raise ValueError("an article_id is given twice")
        if entries:
            account._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            locales = [entry.locale for entry in entries]
            # Numbered by first appearance, as `_locale_code` numbers upserts.
            code_of = account._locale_code_of = {
                locale: code for code, locale in enumerate(dict.fromkeys(locales))
            }
            account._locale_codes = np.array([code_of[x] for x in locales], dtype=np.int32)
        return account

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, article_id: str) -> bool:
        return article_id in self._row_of

    @property
    def matrix(self) -> np.ndarray:
        """float32 [articles, dim]; a view, valid until the next mutation."""
        return self._vectors[: len(self._entries)]

    @property
    def entries(self) -> list[IndexEntry]:
        return self._entries

    def upsert(self, entry: IndexEntry, vector: np.ndarray) -> None:
        if vector.shape != (self._dim,):
            raise ValueError(f"vector shape {vector.shape}, expected ({self._dim},)")
        row = self._row_of.get(entry.article_id)
        if row is None:
            row = len(self._entries)
            self._grow_to(row + 1)
            self._entries.append(entry)
            self._row_of[entry.article_id] = row
        else:
            self._entries[row] = entry
        self._vectors[row] = vector
        self._locale_codes[row] = self._locale_code(entry.locale)

    def remove(self, article_id: str) -> bool:
        row = self._row_of.pop(article_id, None)
        if row is None:
            return False
        last = len(self._entries) - 1
        if row != last:
            moved = self._entries[last]
            self._entries[row] = moved
            self._row_of[moved.article_id] = row
            self._vectors[row] = self._vectors[last]
            self._locale_codes[row] = self._locale_codes[last]
        self._entries.pop()
        return True

    def locale_mask(self, locale: str | None) -> np.ndarray:
        """bool [articles]: which rows have exactly this locale."""
        code = self._locale_code_of.get(locale)
        if code is None:
            return np.zeros(len(self._entries), dtype=bool)
        return self._locale_codes[: len(self._entries)] == code

    def _locale_code(self, locale: str | None) -> int:
        return self._locale_code_of.setdefault(locale, len(self._locale_code_of))

    def _grow_to(self, rows: int) -> None:
        capacity = self._vectors.shape[0]
        if rows <= capacity:
            return
        capacity = max(capacity * 2, rows)
        vectors = np.zeros((capacity, self._dim), dtype=np.float32)
        vectors[: len(self._entries)] = self.matrix
        codes = np.zeros(capacity, dtype=np.int32)
        codes[: len(self._entries)] = self._locale_codes[: len(self._entries)]
        self._vectors, self._locale_codes = vectors, codes


class VersionIndex:
    """Every account's `AccountIndex` for one model version."""

    def __init__(self, model_version: int, dim: int) -> None:
        self.model_version = model_version
        self.dim = dim
        self._accounts: dict[str, AccountIndex] = {}

    def account(self, account_id: str) -> AccountIndex | None:
        """The account's index, or None when it has no article."""
        return self._accounts.get(account_id)

    def upsert(self, account_id: str, entry: IndexEntry, vector: np.ndarray) -> None:
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = AccountIndex(self.dim)
        account.upsert(entry, vector)

    def remove(self, account_id: str, article_id: str) -> bool:
        account = self._accounts.get(account_id)
        if account is None or not account.remove(article_id):
            return False
        if not account:
            # An account exists while it has articles (the same rule after a restart).
            del self._accounts[account_id]
        return True

    def clear(self) -> None:
        """Forget every account (before a reload from the store)."""
        self._accounts.clear()

    def article_counts(self) -> Iterator[tuple[str, int]]:
        for account_id, account in self._accounts.items():
            yield account_id, len(account)

    def __len__(self) -> int:
        """Number of accounts."""
        return len(self._accounts)

    def account_entries(self, account_id: str) -> list[IndexEntry]:
        account = self._accounts.get(account_id)
        return [] if account is None else list(account.entries)

    def account_matrix(self, account_id: str) -> np.ndarray:
        """A view, valid until the next mutation."""
        account = self._accounts.get(account_id)
        return np.zeros((0, self.dim), dtype=np.float32) if account is None else account.matrix

    def load_accounts(
        self, accounts: Sequence[tuple[str, Sequence[IndexEntry]]], vectors: np.ndarray
    ) -> None:
        """Replace the whole index (as `DeviceIndex.load_accounts`): the accounts' entries
        in order, their vectors the rows of `vectors` ([total, dim]) in the same order,
        kept as they are (no copy, see `AccountIndex.loaded`): not to be changed by the
        caller afterwards. Checked before anything is replaced; an account given
        without entries is left out."""
        total = sum(len(entries) for _, entries in accounts)
        if vectors.shape != (total, self.dim):
            raise ValueError(f"vectors of shape {vectors.shape}, expected ({total}, {self.dim})")
        loaded: dict[str, AccountIndex] = {}
        start = 0
        for account_id, entries in accounts:
            if account_id in loaded:
                raise ValueError(f"account {account_id!r} is given twice")
            count = len(entries)
            if count:  # an account exists while it has articles
                try:
                    loaded[account_id] = AccountIndex.loaded(
                        self.dim, entries, vectors[start : start + count]
                    )
                except ValueError as exc:
                    raise ValueError(f"account {account_id!r}: {exc}") from None
            start += count
        self._accounts = loaded
