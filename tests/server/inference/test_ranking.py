"""Ranking over the in-memory index: top-k, tie-break, locale filter, batching by account;
the index's updates and its bulk load."""

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


def best_by_definition(
    account: AccountIndex, vector: np.ndarray, k: int, locale: str | None
) -> list[tuple[str, float]]:
    """The oracle: every article of the locale, by score descending then article_id."""
    scored = [
        (entry.article_id, float(score))
        for entry, score in zip(account.entries, account.matrix @ vector, strict=True)
        if locale is None or entry.locale == locale
    ]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0]))[:k]


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_ranks_each_query_by_the_definition(seed: int) -> None:
    # Queries of a batch that share account, k and locale are ranked together in one
    # partition; each must get the k best of its account by score, then article_id.
    # Coarse vectors make ties, also at the k-th place; k runs past some accounts' size.
    rng = np.random.default_rng(seed)
    index = VersionIndex(model_version=1, dim=4)
    for account_id, size in {"small": 3, "mid": 40, "big": 300}.items():
        for i in rng.permutation(size):
            vector = rng.integers(-2, 3, 4).astype(np.float32)
            locale = ["en", "de", None][i % 3]
            index.upsert(account_id, IndexEntry(f"{account_id}-{i}", "t", locale), vector)
    requests = [
        RankRequest(
            str(rng.choice(["small", "mid", "big", "unknown"])),
            int(rng.choice([1, 3, 5, 100])),
            [None, "en", "de", "fr"][int(rng.integers(4))],
        )
        for _ in range(64)
    ]
    vectors = rng.integers(-2, 3, (len(requests), 4)).astype(np.float32)
    results = rank_batch(index, vectors, requests)
    for vector, request, result in zip(vectors, requests, results, strict=True):
        account = index.account(request.account_id)
        expected = (
            []
            if account is None
            else best_by_definition(account, vector, request.top_k, request.locale)
        )
        assert [(a.article_id, a.score) for a in result] == expected
        alone = (
            []
            if account is None
            else top_k(account.matrix @ vector, account, request.top_k, request.locale, NUMPY)
        )
        assert result == alone  # a query alone ranks as in its batch


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


def test_a_bulk_load_holds_what_upserts_in_that_order_hold() -> None:
    rng = np.random.default_rng(4)
    accounts = [("acme", 40), ("solo", 1), ("empty", 0), ("wide", 300)]
    loaded: list[tuple[str, list[IndexEntry]]] = []
    upserted = VersionIndex(model_version=1, dim=3)
    for account_id, size in accounts:
        entries = [IndexEntry(f"{account_id}{i}", "", (None, "de")[i % 2]) for i in range(size)]
        loaded.append((account_id, entries))
    vectors = rng.integers(-4, 5, size=(341, 3)).astype(np.float32)
    vectors[1::4] = vectors[0]  # ties
    rows = iter(vectors)
    for account_id, entries in loaded:
        for entry in entries:
            upserted.upsert(account_id, entry, next(rows))
    index = VersionIndex(model_version=1, dim=3)
    index.upsert("gone", IndexEntry("x", "", None), unit(1, 0, 0))  # replaced by the load
    index.load_accounts(loaded, vectors.copy())
    assert list(index.article_counts()) == list(upserted.article_counts())  # no "empty"
    for account_id, _ in upserted.article_counts():
        assert index.account_entries(account_id) == upserted.account_entries(account_id)
        np.testing.assert_array_equal(
            index.account_matrix(account_id), upserted.account_matrix(account_id)
        )
    requests = [
        RankRequest(a, k, locale) for a, _ in accounts for k in (1, 7) for locale in (None, "de")
    ]
    queries = rng.integers(-4, 5, size=(len(requests), 3)).astype(np.float32)
    assert rank_batch(index, queries, requests) == rank_batch(upserted, queries, requests)
    # Writes after the load: an account's first insert past its loaded rows moves it.
    for target in (index, upserted):
        target.upsert("solo", IndexEntry("new", "", "de"), unit(0, 1, 0))
        target.upsert("acme", IndexEntry("acme3", "renamed", None), unit(0, 0, 1))
        assert target.remove("wide", "wide0")
    assert rank_batch(index, queries, requests) == rank_batch(upserted, queries, requests)


def test_a_bulk_load_is_checked_before_it_replaces_anything() -> None:
    index = index_with({"acme": [("x", unit(1, 0, 0), None)]})
    entries = [IndexEntry("a", "", None), IndexEntry("a", "", None)]
    with pytest.raises(ValueError, match="shape"):
        index.load_accounts([("acme", entries)], np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="article_id is given twice"):
        index.load_accounts([("acme", entries)], np.zeros((2, 3), dtype=np.float32))
    one = [IndexEntry("a", "", None)]
    with pytest.raises(ValueError, match="given twice"):
        index.load_accounts([("b", one), ("b", one)], np.zeros((2, 3), dtype=np.float32))
    assert index.account_entries("acme") == [IndexEntry("x", "title x", None)]
