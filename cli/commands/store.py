"""`kbrec store import`: load a corpus's articles into the server's article store."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("store", help="manage the article store (SQLite or PostgreSQL)")
    commands = parser.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    seed = commands.add_parser(
        "import",
        help="write a corpus's articles (articles.jsonl) into the store; unchanged ones are kept",
        description="Write new or changed articles of a corpus into the article store. "
        "`kbrec serve` embeds every article that lacks a vector of its model version when "
        "it starts.",
    )
    seed.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    seed.add_argument(
        "--db",
        default="data/kbrec.sqlite",
        help="article store: a SQLite file or a postgresql:// URL (default: %(default)s)",
    )
    seed.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    import asyncio
    from collections import Counter

    from kbrec.errors import CommandError
    from kbrec.records import ARTICLES_FILE, read_articles
    from server.storage.opening import describe, store_location
    from server.storage.seed import seed_store
    from server.storage.store import StoreError

    path = args.corpus / ARTICLES_FILE
    if not path.is_file():
        raise CommandError(f"{path} not found: run `kbrec corpus fetch --out {args.corpus}`")
    articles = read_articles(path)
    try:
        result = asyncio.run(seed_store(store_location(args.db), articles))
    except StoreError as exc:
        raise CommandError(str(exc)) from exc
    accounts = Counter(article.account_id for article in articles)
    print(
        f"{len(articles)} articles in {len(accounts)} accounts → {describe(args.db)}: "
        f"{result.written} written, {result.unchanged} unchanged"
    )
    return 0
