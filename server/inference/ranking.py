"""Ranking: dot products of query vectors with an account's article matrix, top-k.

Queries of one batch that ask the same account are scored in one matrix product.
Top-k uses a partition (O(n)) to find the k-th score, then sorts only the
candidates at or above it by (score desc, article_id asc), so ties are broken
the same way every time, also at the k-th place.

The array work goes through an `ArrayModule` (a NumPy-compatible namespace and a
way back to host memory). The GPU ranker beside `IndexRanker` keeps a whole version in
one device array and ranks a batch in a fixed number of calls
(server.inference.device_ranking); it gives the same results as `rank_batch` here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from server.inference.array_modules import NUMPY, ArrayModule
from server.inference.index import AccountIndex, IndexEntry, VersionIndex

__all__ = [
    "NUMPY",
    "ArrayModule",
    "IndexRanker",
    "RankRequest",
    "ScoredArticle",
    "rank_batch",
    "top_k",
]


@dataclass(frozen=True)
class RankRequest:
    account_id: str
    top_k: int
    locale: str | None = None


class ScoredArticle(NamedTuple):
    """One ranked article. A named tuple, not a dataclass: a batch of 256 queries makes
    thousands of them, and a tuple is made about 4x faster (immutable all the same)."""

    article_id: str
    title: str
    score: float


class IndexRanker:
    """Ranks query batches against one version's index (the batcher's `BatchRanker`)."""

    def __init__(self, index: VersionIndex, arrays: ArrayModule = NUMPY) -> None:
        self.index = index
        self.arrays = arrays

    def rank_batch(
        self, vectors: np.ndarray, requests: Sequence[RankRequest]
    ) -> list[list[ScoredArticle]]:
        return rank_batch(self.index, vectors, requests, self.arrays)


def rank_batch(
    index: VersionIndex,
    vectors: np.ndarray,
    requests: Sequence[RankRequest],
    arrays: ArrayModule = NUMPY,
) -> list[list[ScoredArticle]]:
    """Top articles per request; row i of `vectors` is request i's query vector.

    Requests that ask the same account for the same k and locale (most of a batch) are
    ranked together: one matrix product and one `top_k_rows` for the group. An account
    without articles yields an empty list.
    """
    if vectors.shape[0] != len(requests):
        raise ValueError(f"{vectors.shape[0]} vectors for {len(requests)} requests")
    groups: dict[tuple[str, int, str | None], list[int]] = defaultdict(list)
    for row, request in enumerate(requests):
        groups[(request.account_id, request.top_k, request.locale)].append(row)
    results: list[list[ScoredArticle]] = [[] for _ in requests]
    xp = arrays.xp
    for (account_id, k, locale), rows in groups.items():
        account = index.account(account_id)
        if account is None:
            continue
        scores = xp.asarray(vectors[rows]) @ xp.asarray(account.matrix).T  # [queries, articles]
        for row, ranked in zip(rows, top_k_rows(scores, account, k, locale, arrays), strict=True):
            results[row] = ranked
    return results


def top_k_rows(
    scores: Any, account: AccountIndex, k: int, locale: str | None, arrays: ArrayModule
) -> list[list[ScoredArticle]]:
    """`top_k` of every row of `scores` [queries, articles], in a fixed number of array
    calls for the whole group (a few calls per query were most of ranking's cost)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    xp = arrays.xp
    if locale is not None:
        scores = xp.where(xp.asarray(account.locale_mask(locale))[None, :], scores, -xp.inf)
    queries, count = scores.shape
    if k < count:
        kth_best = xp.partition(scores, count - k, axis=1)[:, count - k]
        # k columns per row, plus any tied with that row's k-th
        rows, columns = xp.nonzero(scores >= kth_best[:, None])
    else:
        rows = xp.repeat(xp.arange(queries), count)
        columns = xp.tile(xp.arange(count), queries)
    picked_scores = arrays.to_host(scores[rows, columns]).tolist()
    picked_rows = arrays.to_host(rows).tolist()
    picked_columns = arrays.to_host(columns).tolist()
    candidates: list[list[tuple[float, IndexEntry]]] = [[] for _ in range(queries)]
    entries = account.entries
    for row, column, score in zip(picked_rows, picked_columns, picked_scores, strict=True):
        if score != -np.inf:
            candidates[row].append((score, entries[column]))
    return [best_candidates(found, k) for found in candidates]


def best_candidates(candidates: list[tuple[float, IndexEntry]], k: int) -> list[ScoredArticle]:
    """The k best of `candidates` by (score desc, article_id asc): the one tie-break."""
    candidates.sort(key=lambda candidate: (-candidate[0], candidate[1].article_id))
    return [ScoredArticle(entry.article_id, entry.title, score) for score, entry in candidates[:k]]


def top_k(
    scores: Any, account: AccountIndex, k: int, locale: str | None, arrays: ArrayModule
) -> list[ScoredArticle]:
    """The k best rows of one query's `scores` (a 1-d array on the array module's device)."""
    (ranked,) = top_k_rows(scores[None, :], account, k, locale, arrays)
    return ranked


def limit_blas_threads(threads: int) -> int | None:
    """Cap this process's BLAS pool (OpenBLAS under NumPy), which CPU ranking's matrix
    products use; returns the threads it now has (None: no BLAS pool found). Its threads
    spin after each product, and a ranking product here is too small to share: with the
    default (one per core), MiniLM's saturation on two cores was 181–189 req/s against
    211–219 with one (BENCHMARKS.md, 2026-12-01). Only the first thread that sets a limit
    holds the pool (threadpoolctl), which in `kbrec serve` is the main thread."""
    threadpool_limits(limits=threads, user_api="blas")
    pools = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(pools) if pools else None
