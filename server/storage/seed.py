"""Seed the article store from a corpus directory (articles.jsonl), before serving.

Only new or changed articles are written: rewriting an unchanged article would
drop its stored vectors and force the server to embed it again at start. The
server embeds whatever lacks a vector of its active version when it starts.
The corpus's accounts are created (existing ones are left as they are).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kbrec.locales import with_normalized_locale
from kbrec.records import Article
from server.storage.accounts import Account
from server.storage.opening import open_store
from server.storage.store import ArticleWrite, StoredArticle, utc_now


@dataclass(frozen=True)
class SeedResult:
    written: int
    unchanged: int


async def seed_store(db: str | Path, articles: Sequence[Article]) -> SeedResult:
    """`db`: a SQLite file (created with its folder) or a postgresql:// URL."""
    store = await open_store(db)
    try:
        now = utc_now()
        changed: list[ArticleWrite] = []
        for article in map(with_normalized_locale, articles):
            stored = await store.get_article(article.account_id, article.article_id)
            if stored is None or stored.article != article:
                changed.append(ArticleWrite(StoredArticle(article, now)))
        if changed:
            await store.write_articles(changed)
        # Seeding is an operator's act: the corpus's accounts exist from now on.
        accounts = sorted({article.account_id for article in articles})
        await store.create_accounts([Account(account_id, now) for account_id in accounts])
        return SeedResult(written=len(changed), unchanged=len(articles) - len(changed))
    finally:
        await store.close()
