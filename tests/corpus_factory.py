"""A small synthetic help-center corpus for tests: distinct topics per article."""

from __future__ import annotations

from pathlib import Path

from kbrec.records import (
    ARTICLES_FILE,
    QUERIES_FILE,
    SPLITS,
    Article,
    Query,
    write_jsonl,
)

TOPICS = (
    "page numbers",
    "tables",
    "fonts",
    "printing",
    "margins",
    "spelling",
    "charts",
    "formulas",
    "filters",
    "passwords",
    "images",
    "columns",
    "headers",
    "footnotes",
    "bookmarks",
    "comments",
    "shortcuts",
    "templates",
    "macros",
    "borders",
    "colors",
    "sorting",
    "hyperlinks",
    "styles",
    "slides",
    "animations",
    "databases",
    "reports",
    "equations",
    "symbols",
    "shapes",
    "layers",
    "export",
    "signatures",
    "languages",
    "toolbars",
    "backups",
    "labels",
    "envelopes",
    "indexes",
)
ACCOUNTS = ("acme", "globex", "initech")
PER_ACCOUNT = 12


def make_corpus(out: Path) -> tuple[list[Article], list[Query]]:
    """Write articles.jsonl and queries.jsonl with every split populated."""
    articles: list[Article] = []
    queries: list[Query] = []
    for a, account in enumerate(ACCOUNTS):
        for i in range(PER_ACCOUNT):
            topic = TOPICS[(a * 7 + i) % len(TOPICS)]
            other = TOPICS[(a * 7 + i + 17) % len(TOPICS)]
            article_id = f"{account}-{i:02d}"
            articles.append(
                Article(
                    account_id=account,
                    article_id=article_id,
                    title=f"Working with {topic} and {other}",
                    body=f"This article explains {topic}. To change {topic}, open the "
                    f"{topic} dialog. {other.capitalize()} are related to {topic}.",
                    locale="en-US" if i % 2 == 0 else "de",
                )
            )
            for j, template in enumerate(
                ("how do I change {t}", "{t} not working", "problem with {t} in {o}")
            ):
                split = SPLITS[(i + j) % len(SPLITS)]
                queries.append(Query(account, template.format(t=topic, o=other), article_id, split))
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / ARTICLES_FILE, articles)
    write_jsonl(out / QUERIES_FILE, queries)
    return articles, queries


# `kbrec train` flags of the tiny encoder the tests train: seconds, not minutes.
TINY_TRAIN_ARGS = [
    "--init", "random", "--hidden-size", "32", "--layers", "2", "--heads", "2",
    "--intermediate-size", "64", "--max-length", "64", "--max-steps", "30",
    "--batch-size", "8", "--learning-rate", "1e-3", "--warmup-steps", "3",
    "--freeze-layers", "0", "--article-length", "64", "--query-length", "16",
]  # fmt: skip
