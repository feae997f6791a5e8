"""Training pairs and per-account batches."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest

from kbrec.records import read_articles, read_queries
from training.pairs import account_batches, build_pairs


def test_pairs_use_only_train_queries_and_every_titled_article(tiny_corpus: Path) -> None:
    articles = read_articles(tiny_corpus / "articles.jsonl")
    queries = read_queries(tiny_corpus / "queries.jsonl")
    pairs = build_pairs(articles, queries)
    anchors = {(p.account_id, p.anchor, p.article_id) for p in pairs}
    assert not anchors & {
        (q.account_id, q.text, q.article_id) for q in queries if q.split != "train"
    }
    assert {(q.account_id, q.text, q.article_id) for q in queries if q.split == "train"} <= anchors
    assert len(pairs) == sum(q.split == "train" for q in queries) + len(articles)


def test_batches_hold_one_account_and_distinct_articles(tiny_corpus: Path) -> None:
    articles = read_articles(tiny_corpus / "articles.jsonl")
    pairs = build_pairs(articles, read_queries(tiny_corpus / "queries.jsonl"))
    batches = list(islice(account_batches(pairs, batch_size=8, seed=1), 20))
    for batch in batches:
        assert len({p.account_id for p in batch}) == 1
        assert len({p.article_id for p in batch}) == len(batch) == 8
    again = list(islice(account_batches(pairs, batch_size=8, seed=1), 20))
    assert [[p.anchor for p in b] for b in batches] == [[p.anchor for p in b] for b in again]
    assert len({b[0].account_id for b in batches}) > 1


def test_batches_need_two_articles() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(account_batches([], batch_size=1, seed=0))
