"""Training pairs and per-account batches for the contrastive loss.

Pairs are (index entry → its article) from the train split and (title → body)
for every article. A batch is drawn from ONE account with distinct articles,
so the in-batch negatives are the account's other articles: the same choice
the ranker faces at serving time, and no false negatives from duplicates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from kbrec.records import Article, Query, article_text


@dataclass(frozen=True)
class Pair:
    account_id: str
    anchor: str
    article_id: str
    positive: str


def build_pairs(articles: Sequence[Article], queries: Sequence[Query]) -> list[Pair]:
    by_key = {(a.account_id, a.article_id): a for a in articles}
    pairs = [
        Pair(q.account_id, q.text, q.article_id, article_text(by_key[q.account_id, q.article_id]))
        for q in queries
        if q.split == "train" and (q.account_id, q.article_id) in by_key
    ]
    pairs += [Pair(a.account_id, a.title, a.article_id, a.body) for a in articles if a.title]
    return pairs


def account_batches(pairs: Sequence[Pair], batch_size: int, seed: int) -> Iterator[list[Pair]]:
    """Endless batches: an account drawn in proportion to its pairs, distinct articles inside."""
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 for in-batch negatives")
    rng = np.random.default_rng(seed)
    by_account: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_account[pair.account_id].append(pair)
    # An account with a single article offers no negatives.
    accounts = sorted(a for a, ps in by_account.items() if len({p.article_id for p in ps}) >= 2)
    if not accounts:
        raise ValueError("no account has two or more articles with training pairs")
    weights = np.array([len(by_account[a]) for a in accounts], dtype=np.float64)
    weights /= weights.sum()
    while True:
        account_pairs = by_account[accounts[rng.choice(len(accounts), p=weights)]]
        batch: list[Pair] = []
        seen: set[str] = set()
        for index in rng.permutation(len(account_pairs)):
            pair = account_pairs[index]
            if pair.article_id not in seen:
                seen.add(pair.article_id)
                batch.append(pair)
                if len(batch) == batch_size:
                    break
        yield batch
