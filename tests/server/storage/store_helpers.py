"""Records the store tests write."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from kbrec.records import Article
from server.storage.store import ArticleWrite, StoredArticle

NOW = "2026-11-27T12:00:00.000+00:00"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def write(
    article_id: str, title: str, vectors: dict[int, np.ndarray] | None = None, account: str = "acme"
) -> ArticleWrite:
    article = Article(account, article_id, title, f"body of {title}", "en-us")
    return ArticleWrite(StoredArticle(article, NOW), vectors or {})


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)
