"""Ranking quality within each query's own account: recall@1, recall@5, MRR@10.

A ranker sees only the articles of the query's account, as the service does. A query
text with several correct articles counts once, as answered at the best rank any of
them reaches.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

from kbrec.records import Article, Query

MRR_DEPTH = 10


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Hit rates at ranks 1 and 5, mean reciprocal rank cut at 10, over `queries`."""

    recall_at_1: float
    recall_at_5: float
    mrr_at_10: float
    queries: int


class Ranker(Protocol):
    def rank(self, account_id: str, texts: Sequence[str], k: int) -> list[list[str]]:
        """For each text, up to `k` article ids of `account_id`, best first."""
        ...


def default_article_text(article: Article) -> str:
    """What a ranker reads of an article: its title, then its body."""
    return f"{article.title}\n{article.body}"


def evaluate(ranker: Ranker, queries: Iterable[Query], split: str = "test") -> Metrics:
    """Metrics of `ranker` on the queries of `split` (one `rank` call per account)."""
    # account → query text → its correct article ids, in first-seen order.
    relevant: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for query in queries:
        if query.split == split:
            relevant[query.account_id][query.text].add(query.article_id)
    ranks: list[int | None] = []
    for account_id, by_text in relevant.items():
        texts = list(by_text)
        rankings = ranker.rank(account_id, texts, MRR_DEPTH)
        if len(rankings) != len(texts):
            raise ValueError(f"ranker returned {len(rankings)} rankings for {len(texts)} texts")
        ranks.extend(
            _first_hit(ranking, by_text[text])
            for text, ranking in zip(texts, rankings, strict=True)
        )
    if not ranks:
        raise ValueError(f"no {split!r} queries to evaluate")
    return _metrics(ranks)


def _first_hit(ranking: Sequence[str], correct: set[str]) -> int | None:
    for position, article_id in enumerate(ranking[:MRR_DEPTH], start=1):
        if article_id in correct:
            return position
    return None


def _metrics(ranks: Sequence[int | None]) -> Metrics:
    count = len(ranks)
    return Metrics(
        recall_at_1=sum(r is not None and r <= 1 for r in ranks) / count,
        recall_at_5=sum(r is not None and r <= 5 for r in ranks) / count,
        mrr_at_10=sum(1 / r for r in ranks if r is not None) / count,
        queries=count,
    )


def format_table(rows: Mapping[str, Metrics]) -> str:
    """A Markdown table with one row per model name."""
    lines = [
        "| model | recall@1 | recall@5 | MRR@10 | queries |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {m.recall_at_1:.3f} | {m.recall_at_5:.3f} | {m.mrr_at_10:.3f} | {m.queries} |"
        for name, m in rows.items()
    ]
    return "\n".join(lines)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest scores, best first; ties go to the lower index."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if k < n:
        # Keep every score tied with the k-th best, so the tie-break below is exact.
        kth_best = scores[np.argpartition(-scores, k - 1)[:k]].min()
        candidates = np.flatnonzero(scores >= kth_best)
    else:
        candidates = np.arange(n)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order[:k]]


def group_by_account(articles: Iterable[Article]) -> dict[str, list[Article]]:
    """Articles per account, sorted by article id (so index order breaks ties by id)."""
    grouped: dict[str, list[Article]] = defaultdict(list)
    for article in articles:
        grouped[article.account_id].append(article)
    for account_id, members in grouped.items():
        members.sort(key=lambda a: a.article_id)
        for before, after in itertools.pairwise(members):
            if before.article_id == after.article_id:
                raise ValueError(f"article {account_id}/{after.article_id} appears twice")
    return dict(grouped)


class BM25Ranker:
    """Okapi BM25 (bm25s) over title + body, one index per account."""

    def __init__(self, articles: Iterable[Article], stem: bool = True) -> None:
        import bm25s
        import Stemmer

        # bm25s sets its logger to DEBUG on import and logs every index build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer("english") if stem else None
        self._indexes: dict[str, tuple[list[str], bm25s.BM25]] = {}
        for account_id, members in group_by_account(articles).items():
            retriever = bm25s.BM25()
            retriever.index(
                self._tokenize([default_article_text(a) for a in members], return_ids=True),
                show_progress=False,
            )
            self._indexes[account_id] = ([a.article_id for a in members], retriever)

    def rank(self, account_id: str, texts: Sequence[str], k: int) -> list[list[str]]:
        if account_id not in self._indexes or not texts:
            return [[] for _ in texts]
        ids, retriever = self._indexes[account_id]
        rankings = []
        for tokens in self._tokenize(list(texts), return_ids=False):
            # get_scores fails on an empty query (e.g. only stopwords): nothing matches.
            scores = retriever.get_scores(tokens) if tokens else np.zeros(len(ids))
            rankings.append([ids[i] for i in top_k_indices(scores, k)])
        return rankings

    def _tokenize(self, texts: list[str], return_ids: bool) -> object:
        return self._bm25s.tokenize(
            texts,
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=return_ids,
            show_progress=False,
        )


Embed = Callable[[Sequence[str]], np.ndarray]


class EmbeddingRanker:
    """Dot products of query and article embeddings (L2-normalised: cosine similarity)."""

    def __init__(
        self,
        articles: Iterable[Article],
        embed: Embed,
        article_text: Callable[[Article], str] | None = None,
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self._embed = embed
        self._batch_size = batch_size
        text_of = article_text or default_article_text
        grouped = group_by_account(articles)
        ordered = [article for members in grouped.values() for article in members]
        vectors = self._embed_all([text_of(article) for article in ordered])
        self._matrices: dict[str, tuple[list[str], np.ndarray]] = {}
        start = 0
        for account_id, members in grouped.items():
            end = start + len(members)
            self._matrices[account_id] = ([a.article_id for a in members], vectors[start:end])
            start = end

    def rank(self, account_id: str, texts: Sequence[str], k: int) -> list[list[str]]:
        if account_id not in self._matrices or not texts:
            return [[] for _ in texts]
        ids, matrix = self._matrices[account_id]
        scores = self._embed_all(list(texts)) @ matrix.T
        return [[ids[i] for i in top_k_indices(row, k)] for row in scores]

    def _embed_all(self, texts: list[str]) -> np.ndarray:
        """Embed in batches, checking each batch's shape."""
        batches = []
        for start in range(0, len(texts), self._batch_size):
            batch = texts[start : start + self._batch_size]
            vectors = np.asarray(self._embed(batch), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(batch):
                raise ValueError(
                    f"embed returned shape {vectors.shape} for a batch of {len(batch)} texts"
                )
            batches.append(vectors)
        if not batches:
            return np.empty((0, 0), dtype=np.float32)
        return np.concatenate(batches)
