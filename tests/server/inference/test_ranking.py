"""Ranking over the in-memory index: top-k, tie-break, locale filter, batching by account."""

from __future__ import annotations

import numpy as np
import pytest

from server.inference.index import AccountIndex, IndexEntry, VersionIndex
from server.inference.ranking import NUMPY, RankRequest, rank_batch, top_k


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def index_with(articles: dict[str, list[tuple[str, np.ndarray, str | None]]]) -> VersionIndex:
    index = VersionIndex(model_version=1, dim=3)
    for account_id, rows in articles.items():
        for article_id, vector, locale in rows:
            index.upsert(account_id, IndexEntry(article_id, f"title {article_id}", locale), vector)
    return index


def ids(results: list) -> list[str]:
    return [article.article_id for article in results]


def test_ranks_by_dot_product_and_cuts_at_k() -> None:
    index = index_with(
        {
            "acme": [
                ("far", unit(0, 0, 1), None),
                ("near", unit(1, 0.1, 0), None),
                ("nearest", unit(1, 0, 0), None),
                ("middle", unit(1, 1, 0), None),
            ]
        }
    )
    (result,) = rank_batch(index, unit(1, 0, 0)[None], [RankRequest("acme", top_k=3)])
    assert ids(result) == ["nearest", "near", "middle"]
    assert result[0].title == "title nearest"
    assert result[0].score == pytest.approx(1.0)
    assert result[0].score >= result[1].score >= result[2].score


def test_ties_break_by_article_id_also_at_the_kth_place() -> None:
    same = unit(1, 0, 0)
    rows = [(article_id, same, None) for article_id in ["d", "b", "e", "a", "c"]]
    index = index_with({"acme": rows})
    for k in range(1, 6):
        (result,) = rank_batch(index, same[None], [RankRequest("acme", top_k=k)])
        assert ids(result) == ["a", "b", "c", "d", "e"][:k]


def test_k_larger_than_the_account_returns_everything() -> None:
    index = index_with({"acme": [("x", unit(1, 0, 0), None), ("y", unit(0, 1, 0), None)]})
    (result,) = rank_batch(index, unit(0, 1, 0)[None], [RankRequest("acme", top_k=100)])
    assert ids(result) == ["y", "x"]


def test_locale_filter_keeps_only_that_locale() -> None:
    index = index_with(
        {
            "acme": [
                ("en-best", unit(1, 0, 0), "en-us"),
                ("de-best", unit(1, 0.01, 0), "de"),
                ("en-other", unit(0, 1, 0), "en-us"),
                ("no-locale", unit(1, 0, 0.01), None),
            ]
        }
    )
    query = unit(1, 0, 0)[None]
    (english,) = rank_batch(index, query, [RankRequest("acme", 5, "en-us")])
    assert ids(english) == ["en-best", "en-other"]
    (french,) = rank_batch(index, query, [RankRequest("acme", 5, "fr")])
    assert french == []


def test_queries_of_one_batch_are_answered_per_account() -> None:
    index = index_with(
        {
            "a": [("a1", unit(1, 0, 0), None), ("a2", unit(0, 1, 0), None)],
            "b": [("b1", unit(0, 0, 1), None)],
        }
    )
    vectors = np.stack([unit(0, 1, 0), unit(1, 0, 0), unit(1, 0, 0), unit(1, 0, 0)])
    requests = [
        RankRequest("a", 1),
        RankRequest("b", 5),
        RankRequest("a", 2),
        RankRequest("unknown", 5),
    ]
    results = rank_batch(index, vectors, requests)
    assert [ids(r) for r in results] == [["a2"], ["b1"], ["a1", "a2"], []]


def test_top_k_rejects_a_non_positive_k() -> None:
    account = AccountIndex(3)
    account.upsert(IndexEntry("x", "x", None), unit(1, 0, 0))
    with pytest.raises(ValueError):
        top_k(account.matrix[:, 0], account, 0, None, NUMPY)


def test_index_updates_replace_remove_and_grow() -> None:
    index = VersionIndex(model_version=1, dim=3)
    rng = np.random.default_rng(0)
    vectors = {f"art{i:03d}": unit(*rng.standard_normal(3)) for i in range(100)}
    for article_id, vector in vectors.items():
        index.upsert("acme", IndexEntry(article_id, article_id, None), vector)
    for i in range(0, 100, 2):  # remove every other article: rows move around
        assert index.remove("acme", f"art{i:03d}")
    assert not index.remove("acme", "art000")
    index.upsert("acme", IndexEntry("art001", "renamed", None), unit(0, 0, 1))
    account = index.account("acme")
    assert account is not None and len(account) == 50
    for row, entry in enumerate(account.entries):
        expected = unit(0, 0, 1) if entry.article_id == "art001" else vectors[entry.article_id]
        np.testing.assert_array_equal(account.matrix[row], expected)
    (result,) = rank_batch(index, unit(0, 0, 1)[None], [RankRequest("acme", 1)])
    assert [(r.article_id, r.title) for r in result] == [("art001", "renamed")]


def test_an_account_without_articles_disappears() -> None:
    index = index_with({"acme": [("x", unit(1, 0, 0), None)]})
    assert index.remove("acme", "x")
    assert index.account("acme") is None
    assert dict(index.article_counts()) == {}
