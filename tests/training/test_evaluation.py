from collections.abc import Sequence

import numpy as np
import pytest

from kbrec.records import Article, Query
from training.evaluation import (
    BM25Ranker,
    EmbeddingRanker,
    Metrics,
    evaluate,
    format_table,
    top_k_indices,
)


class FixedRanker:
    """Returns canned rankings and records what it was asked."""

    def __init__(self, rankings: dict[tuple[str, str], list[str]]) -> None:
        self.rankings = rankings
        self.calls: list[tuple[str, list[str], int]] = []

    def rank(self, account_id: str, texts: Sequence[str], k: int) -> list[list[str]]:
        self.calls.append((account_id, list(texts), k))
        return [self.rankings.get((account_id, text), []) for text in texts]


def test_metrics_on_a_hand_computed_example() -> None:
    queries = [
        Query("a", "q1", "x", "test"),  # rank 1
        Query("a", "q2", "x", "test"),  # rank 3
        Query("b", "q3", "x", "test"),  # rank 7
        Query("b", "q4", "x", "test"),  # not in the top 10
        Query("b", "q5", "x", "train"),  # other split: ignored
    ]
    ranker = FixedRanker(
        {
            ("a", "q1"): ["x", "y"],
            ("a", "q2"): ["y", "z", "x"],
            ("b", "q3"): ["1", "2", "3", "4", "5", "6", "x"],
            ("b", "q4"): [str(i) for i in range(10)] + ["x"],
        }
    )

    metrics = evaluate(ranker, queries)

    assert metrics.queries == 4
    assert metrics.recall_at_1 == pytest.approx(1 / 4)
    assert metrics.recall_at_5 == pytest.approx(2 / 4)
    assert metrics.mrr_at_10 == pytest.approx((1 + 1 / 3 + 1 / 7 + 0) / 4)
    # One call per account, asking for the MRR depth.
    assert ranker.calls == [("a", ["q1", "q2"], 10), ("b", ["q3", "q4"], 10)]


def test_a_text_with_several_correct_articles_counts_once_at_its_best_rank() -> None:
    queries = [Query("a", "zoom", "p", "test"), Query("a", "zoom", "q", "test")]

    metrics = evaluate(FixedRanker({("a", "zoom"): ["q", "p"]}), queries)

    assert metrics == Metrics(recall_at_1=1.0, recall_at_5=1.0, mrr_at_10=1.0, queries=1)


def test_evaluate_other_split_and_empty_split() -> None:
    queries = [Query("a", "q", "x", "validation")]

    assert evaluate(FixedRanker({("a", "q"): ["x"]}), queries, "validation").queries == 1
    with pytest.raises(ValueError, match="no 'test' queries"):
        evaluate(FixedRanker({}), queries)


def test_evaluate_rejects_a_ranker_returning_the_wrong_number_of_rankings() -> None:
    class Short:
        def rank(self, account_id: str, texts: Sequence[str], k: int) -> list[list[str]]:
            return []

    with pytest.raises(ValueError, match="0 rankings for 1 texts"):
        evaluate(Short(), [Query("a", "q", "x", "test")])


def test_format_table() -> None:
    table = format_table({"bm25": Metrics(0.5, 0.75, 0.6123, 8), "minilm": Metrics(1, 1, 1, 8)})

    assert table.splitlines() == [
        "| model | recall@1 | recall@5 | MRR@10 | queries |",
        "|---|---:|---:|---:|---:|",
        "| bm25 | 0.500 | 0.750 | 0.612 | 8 |",
        "| minilm | 1.000 | 1.000 | 1.000 | 8 |",
    ]


def test_top_k_breaks_ties_by_index_even_at_the_cut() -> None:
    scores = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.2], dtype=np.float32)

    assert top_k_indices(scores, 3).tolist() == [3, 1, 2]
    assert top_k_indices(scores, 10).tolist() == [3, 1, 2, 4, 5, 0]
    assert top_k_indices(scores, 0).tolist() == []


ARTICLES = [
    Article("writer", "tables", "Inserting tables", "Choose Table - Insert Table to add a table."),
    Article("writer", "spelling", "Checking spelling", "Spellcheck marks misspelled words."),
    Article("writer", "printing", "Printing documents", "Choose File - Print to print pages."),
    Article("calc", "sum", "Summing cells", "Use the SUM function to add cell values."),
    # Words of the writer queries, in another account: must never be returned for writer.
    Article("calc", "print-ranges", "Printing sheets", "Define print ranges to print a table."),
]


def test_bm25_ranks_the_obvious_article_first_within_the_account() -> None:
    ranker = BM25Ranker(ARTICLES)

    rankings = ranker.rank("writer", ["how do I print my document", "misspelled word"], k=5)

    assert [ranking[0] for ranking in rankings] == ["printing", "spelling"]
    writer_ids = {a.article_id for a in ARTICLES if a.account_id == "writer"}
    assert all(set(ranking) <= writer_ids for ranking in rankings)
    assert all(len(ranking) == 3 for ranking in rankings)  # k is capped by the account size


def test_bm25_stemming_matches_word_forms() -> None:
    query = ["summing the cell"]
    articles = [
        Article("calc", "sum", "Sums", "The SUM function sums cells."),
        Article("calc", "other", "Charts", "Charts show data."),
    ]

    assert BM25Ranker(articles, stem=True).rank("calc", query, k=1) == [["sum"]]
    # Unstemmed, "summing" and "cell" match nothing: all scores tie at 0.
    assert BM25Ranker(articles, stem=False).rank("calc", query, k=1) == [["other"]]


def test_bm25_queries_with_no_usable_words_and_unknown_accounts() -> None:
    ranker = BM25Ranker(ARTICLES)

    # Only stopwords: every score is 0, so the order falls back to article id.
    assert ranker.rank("writer", ["the of and"], k=2) == [["printing", "spelling"]]
    assert ranker.rank("nobody", ["print"], k=2) == [[]]
    assert ranker.rank("writer", [], k=2) == []


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    """Bag of three keywords, L2-normalised: enough to make the ranking predictable."""
    keywords = ("print", "spell", "table")
    vectors = np.array(
        [[text.lower().count(word) for word in keywords] + [0.01] for text in texts],
        dtype=np.float32,
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_embedding_ranker_with_a_fake_embed_function() -> None:
    batches: list[int] = []

    def counting_embed(texts: Sequence[str]) -> np.ndarray:
        batches.append(len(texts))
        return fake_embed(texts)

    ranker = EmbeddingRanker(ARTICLES, counting_embed, batch_size=2)

    assert batches == [2, 2, 1]  # all five articles, embedded once, in batches
    assert ranker.rank("writer", ["print it", "spell check", "table"], k=1) == [
        ["printing"],
        ["spelling"],
        ["tables"],
    ]
    assert sorted(ranker.rank("writer", ["print"], k=5)[0]) == ["printing", "spelling", "tables"]
    assert ranker.rank("calc", ["print"], k=5)[0][0] == "print-ranges"
    assert ranker.rank("nobody", ["print"], k=5) == [[]]


def test_embedding_ranker_uses_the_article_text_function() -> None:
    ranker = EmbeddingRanker(ARTICLES, fake_embed, article_text=lambda a: a.article_id)

    assert ranker.rank("writer", ["spell"], k=1) == [["spelling"]]


def test_embedding_ranker_checks_the_embed_output() -> None:
    with pytest.raises(ValueError, match="embed returned shape"):
        EmbeddingRanker(ARTICLES, lambda texts: np.zeros((1, 4), dtype=np.float32))


def test_duplicate_article_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="writer/tables appears twice"):
        EmbeddingRanker([ARTICLES[0], ARTICLES[0]], fake_embed)
