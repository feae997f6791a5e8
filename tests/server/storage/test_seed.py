"""`kbrec store import`: corpus articles into the store (a SQLite file or a PostgreSQL
URL), unchanged ones left alone."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np

from cli.main import main
from kbrec.records import read_articles
from server.storage.opening import open_store
from server.storage.seed import seed_store
from server.storage.store import EmbeddingWrite


async def _add_vector_and_count_missing(db: str | Path, account: str, article: str) -> int:
    store = await open_store(db)
    try:
        vector = np.ones(4, dtype=np.float32) / 2
        await store.write_embeddings(1, [EmbeddingWrite(account, article, vector)])
        return len(await store.articles_without_embedding(1, 4))
    finally:
        await store.close()


async def _missing(db: str | Path) -> int:
    store = await open_store(db)
    try:
        return len(await store.articles_without_embedding(1, 4))
    finally:
        await store.close()


def test_reimport_keeps_unchanged_articles_and_their_vectors(
    tiny_corpus: Path, location: str | Path, capsys
) -> None:
    db = location
    articles = read_articles(tiny_corpus / "articles.jsonl")
    assert main(["store", "import", "--corpus", str(tiny_corpus), "--db", str(db)]) == 0
    assert f"{len(articles)} written, 0 unchanged" in capsys.readouterr().out

    first = articles[0]
    missing = asyncio.run(_add_vector_and_count_missing(db, first.account_id, first.article_id))
    assert missing == len(articles) - 1

    again = asyncio.run(seed_store(db, articles))
    assert (again.written, again.unchanged) == (0, len(articles))
    assert asyncio.run(_missing(db)) == len(articles) - 1  # the vector survived

    edited = [dataclasses.replace(first, body=first.body + " Updated."), *articles[1:]]
    changed = asyncio.run(seed_store(db, edited))
    assert (changed.written, changed.unchanged) == (1, len(articles) - 1)
    assert asyncio.run(_missing(db)) == len(articles)  # new text, stale vector dropped


def test_import_without_a_corpus_says_what_to_run(tmp_path: Path, capsys) -> None:
    status = main(["store", "import", "--corpus", str(tmp_path), "--db", str(tmp_path / "x.db")])
    assert status == 2
    assert "kbrec corpus fetch" in capsys.readouterr().err
