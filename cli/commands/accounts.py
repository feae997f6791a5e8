"""`kbrec accounts create`: an account, with its quotas, directly in the article store."""

from __future__ import annotations

import argparse

from cli.commands.keys import add_db, checked_account, with_store
from kbrec.errors import CommandError


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "accounts",
        help="create accounts (with authentication, only created accounts take articles)",
    )
    commands = parser.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    create = commands.add_parser(
        "create", help="create an account; its quotas default to the server's"
    )
    create.add_argument("account", help="the account id")
    create.add_argument(
        "--max-articles",
        type=positive,
        help="articles it may hold (default: --max-account-articles)",
    )
    create.add_argument(
        "--max-article-bytes",
        type=positive,
        help="title and body bytes of one article (default: the server's --max-article-bytes)",
    )
    add_db(create)
    create.set_defaults(func=run_create)


def run_create(args: argparse.Namespace) -> int:
    from server.storage.accounts import Account
    from server.storage.store import utc_now

    account = Account(
        checked_account(args.account), utc_now(), args.max_articles, args.max_article_bytes
    )
    (created,) = with_store(args.db, lambda store: store.create_accounts([account]))
    if not created:
        raise CommandError(f"account {account.account_id!r} exists (left as it is)")
    print(f"account {account.account_id} created")
    return 0
