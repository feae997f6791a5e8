"""`kbrec corpus`: build the article and query files that training and evaluation read."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from kbrec.errors import CommandError

if TYPE_CHECKING:
    from kbrec.records import Article, Query

DEFAULT_OUT = Path("data/corpus")

_R = TypeVar("_R", "Article", "Query")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("corpus", help="fetch or import help-center articles")
    actions = parser.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")

    fetch = actions.add_parser(
        "fetch",
        help="download the LibreOffice help (apt-get) as articles and index queries",
        description="Download libreoffice-help-<LANG> with apt-get (nothing is installed) and "
        "write articles.jsonl (one account per help module) and queries.jsonl (the help "
        "index as query → article pairs) into --out.",
    )
    fetch.add_argument("--lang", default="en-us", help="help language, e.g. en-us, de, pt-br")
    fetch.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    fetch.set_defaults(func=fetch_command)

    zendesk = actions.add_parser(
        "import-zendesk",
        help="import a Zendesk Help Center articles export for one account",
        description="Replace ACCOUNT's articles in --out/articles.jsonl with those of a "
        'Zendesk Help Center export ({"articles": [...]}); other accounts are kept.',
    )
    zendesk.add_argument("file", type=Path, metavar="FILE", help="the export's JSON file")
    zendesk.add_argument("--account", required=True, help="account id for these articles")
    zendesk.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    zendesk.set_defaults(func=import_zendesk_command)


def fetch_command(args: argparse.Namespace) -> int:
    import logging
    import tempfile
    from collections import Counter

    from kbrec.records import (
        ARTICLES_FILE,
        QUERIES_FILE,
        SPLITS,
        read_articles,
        read_queries,
    )
    from training.corpus import libreoffice

    log = logging.getLogger(__name__)
    with tempfile.TemporaryDirectory(prefix="kbrec-help-") as workdir:
        lang_dir = libreoffice.download_help(args.lang, Path(workdir))
        log.info("parsing the help pages under %s", lang_dir.name)
        articles = libreoffice.parse_help_tree(lang_dir)
        bookmarks = lang_dir / libreoffice.BOOKMARKS_FILE
        if not bookmarks.is_file():
            raise CommandError(f"the package has no {libreoffice.BOOKMARKS_FILE} index")
        entries = libreoffice.parse_bookmarks(bookmarks.read_text(encoding="utf-8"))
    if not articles:
        raise CommandError("the package's help pages held no article text")
    queries = libreoffice.build_queries(entries, articles)

    # Accounts imported from elsewhere (import-zendesk) survive a re-fetch.
    accounts = set(libreoffice.MODULE_ACCOUNTS.values())
    _replace_accounts(args.out / ARTICLES_FILE, read_articles, accounts, articles)
    _replace_accounts(args.out / QUERIES_FILE, read_queries, accounts, queries)

    per_account = Counter(article.account_id for article in articles)
    per_split = Counter(query.split for query in queries)
    print(f"{len(articles)} articles in {len(per_account)} accounts → {args.out / ARTICLES_FILE}")
    print("  " + ", ".join(f"{acc} {n}" for acc, n in sorted(per_account.items())))
    print(f"{len(queries)} queries from {len(entries)} index entries → {args.out / QUERIES_FILE}")
    print("  " + ", ".join(f"{split} {per_split[split]}" for split in SPLITS))
    return 0


def import_zendesk_command(args: argparse.Namespace) -> int:
    import json

    from kbrec.records import ARTICLES_FILE, read_articles
    from kbrec.zendesk import ZendeskExportError, parse_zendesk_export

    try:
        payload = json.loads(args.file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CommandError(f"{args.file} is not a JSON file: {exc}") from exc
    try:
        imported = parse_zendesk_export(payload, args.account)
    except ZendeskExportError as exc:
        raise CommandError(f"{args.file}: {exc}") from exc

    articles_path = args.out / ARTICLES_FILE
    result = _replace_accounts(articles_path, read_articles, {args.account}, imported)
    print(
        f"imported {len(imported)} articles for account {args.account} "
        f"(replacing {result.replaced}); {result.total} articles in {articles_path}"
    )
    return 0


def _write(path: Path, records: Sequence[Article | Query]) -> None:
    from kbrec.records import write_jsonl

    try:
        write_jsonl(path, records)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc


class _Replaced(NamedTuple):
    replaced: int
    total: int


def _replace_accounts(
    path: Path,
    read: Callable[[Path], list[_R]],
    accounts: set[str],
    records: Sequence[_R],
) -> _Replaced:
    """Rewrite `path` with `records` in place of the listed accounts' old records."""
    try:
        existing = read(path) if path.exists() else []
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CommandError(f"cannot update {path}: {exc}") from exc
    kept = [record for record in existing if record.account_id not in accounts]
    _write(path, [*kept, *records])
    return _Replaced(replaced=len(existing) - len(kept), total=len(kept) + len(records))
