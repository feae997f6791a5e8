"""The precision knob: a minimum score per account (and a default for every account);
recommendations scoring below it are not returned, so an empty list is a valid answer.

Each process keeps the accounts' minimums in memory, read from the store at start and
again whenever the change feed brings an `account_settings` change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from server.inference.ranking import ScoredArticle
from server.storage.store import ArticleStore

# Scores are cosine similarities: a minimum at or below -1 lets everything through.
NO_MINIMUM: Final = -1.0


class MinScores:
    def __init__(self, default: float = NO_MINIMUM) -> None:
        self.default = default
        self._by_account: dict[str, float] = {}

    async def refresh(self, store: ArticleStore) -> None:
        self._by_account = await store.account_min_scores()

    def of(self, account_id: str) -> float:
        return self._by_account.get(account_id, self.default)

    def configured(self, account_id: str) -> float | None:
        """The account's own minimum, None when the default applies."""
        return self._by_account.get(account_id)

    def keep(self, account_id: str, articles: Sequence[ScoredArticle]) -> list[ScoredArticle]:
        """The articles scoring at least the account's minimum, in their order."""
        minimum = self.of(account_id)
        if minimum <= NO_MINIMUM:
            return list(articles)
        return [article for article in articles if article.score >= minimum]
