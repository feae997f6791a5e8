"""Workloads: real texts, accounts drawn by a Zipf law, writes at a fraction, seeded."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from loadtest_helpers import QUERIES, small_workload

from loadtest.sources import WorkloadError, load_workload
from loadtest.workload import (
    WRITE,
    WRITE_ID_PREFIX,
    WRITE_SLOTS,
    ArticleWrite,
    Query,
    build_workload,
    pick_items,
    zipf_weights,
)


def take(iterator, n: int) -> list[int]:
    return list(itertools.islice(iterator, n))


def test_the_same_seed_gives_the_same_requests() -> None:
    workload = small_workload()
    first = take(pick_items(workload, 7, 1.1, 0.1), 5000)
    assert first == take(pick_items(workload, 7, 1.1, 0.1), 5000)
    assert first != take(pick_items(workload, 8, 1.1, 0.1), 5000)


def test_accounts_are_ranked_by_size_and_drawn_by_zipf() -> None:
    workload = small_workload()
    assert workload.accounts == ("writer", "calc", "impress")  # 3, 2 and 1 queries
    n = 30_000
    for s in (0.0, 1.1, 2.0):
        picks = take(pick_items(workload, 0, s, 0.0), n)
        counts = Counter(workload.items[i].account_id for i in picks)
        shares = np.array([counts[a] for a in workload.accounts]) / n
        np.testing.assert_allclose(shares, zipf_weights(3, s), atol=0.01)
    np.testing.assert_allclose(zipf_weights(4, 0.0), [0.25] * 4)


def test_texts_within_an_account_are_uniform() -> None:
    workload = small_workload()
    picks = take(pick_items(workload, 0, 0.0, 0.0), 30_000)
    writer = Counter(
        workload.items[i].text for i in picks if workload.items[i].account_id == "writer"
    )
    assert len(writer) == 3
    assert max(writer.values()) / min(writer.values()) < 1.1


def test_writes_come_at_their_fraction_to_a_few_load_test_ids() -> None:
    workload = small_workload()
    picks = take(pick_items(workload, 0, 1.1, 0.25), 20_000)
    writes = [workload.items[i] for i in picks if workload.ops[i] == WRITE]
    assert len(writes) / len(picks) == pytest.approx(0.25, abs=0.01)
    assert all(isinstance(w, ArticleWrite) for w in writes)
    assert {w.article_id for w in writes} == {f"{WRITE_ID_PREFIX}{k}" for k in range(WRITE_SLOTS)}
    # Each write goes to the account it was drawn for, with that account's texts.
    for write in writes:
        assert write.title in {q.text for q in QUERIES if q.account_id == write.account_id}


def test_no_writes_without_a_fraction() -> None:
    workload = small_workload()
    assert all(workload.ops[i] != WRITE for i in take(pick_items(workload, 0, 1.1, 0.0), 5000))


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_fractions_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        next(pick_items(small_workload(), 0, 1.1, bad))


def test_corpus_workload_uses_held_out_queries_and_real_articles(tiny_corpus: Path) -> None:
    workload = load_workload(f"corpus:{tiny_corpus}")
    queries = [json.loads(line) for line in (tiny_corpus / "queries.jsonl").open()]
    held_out = {(q["account_id"], q["text"]) for q in queries if q["split"] != "train"}
    items = workload.items[: workload.write_start]
    assert {(q.account_id, q.text) for q in items} == held_out
    articles = [json.loads(line) for line in (tiny_corpus / "articles.jsonl").open()]
    titles = {a["title"] for a in articles}
    assert all(w.title in titles for w in workload.items[workload.write_start :])


def test_tickets_workload_reuses_the_benchmark_tickets(tiny_corpus: Path) -> None:
    workload = load_workload(f"tickets:{tiny_corpus}")
    texts = [item.text for item in workload.items[: workload.write_start]]
    assert "How do I add page numbers?" in texts
    assert len(texts) > 40


def test_file_workload_reads_account_and_text(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    lines = [
        {"account_id": "acme", "text": "reset my password", "extra": 1},
        {"account_id": "b", "text": "x"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    workload = load_workload(f"file:{path}")
    assert set(workload.items[: workload.write_start]) == {
        Query("acme", "reset my password"),
        Query("b", "x"),
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"account_id": "a", "text": "ok"}\nnot json\n', ":2:"),
        ('{"account_id": "a b", "text": "x"}\n', "account id"),
        ('{"account_id": "a", "text": ""}\n', "text"),
        ("", "no queries"),
    ],
)
def test_file_workload_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(WorkloadError, match=message):
        load_workload(f"file:{path}")


@pytest.mark.parametrize("spec", ["nonsense", "file:", "corpus:/nonexistent"])
def test_unusable_specs_are_errors(spec: str) -> None:
    with pytest.raises(WorkloadError):
        load_workload(spec)


def test_an_account_without_articles_writes_its_own_texts() -> None:
    workload = build_workload([Query("solo", "one text"), Query("solo", "two")], {}, "x")
    write = workload.items[workload.write_start]
    assert isinstance(write, ArticleWrite) and write.account_id == "solo"
    assert write.body
