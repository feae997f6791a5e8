"""`kbrec keys create|list|revoke`: API keys of accounts, directly in the article store
(like `kbrec store import`; a running server sees a new key at once and a revocation
within its --key-cache-s)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from kbrec.errors import CommandError

if TYPE_CHECKING:
    from server.storage.store import ArticleStore

T = TypeVar("T")
DEFAULT_DB = "data/kbrec.sqlite"


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help="article store: a SQLite file or a postgresql:// URL (default: %(default)s)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="create, list and revoke accounts' API keys",
        description="An API key reaches one account's routes (`Authorization: Bearer KEY`). "
        "The store keeps only its SHA-256 digest: the key is shown once, at creation.",
    )
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = commands.add_parser(
        "create", help="a new key of an account (created, default quotas, if it does not exist)"
    )
    create.add_argument("--account", required=True, help="the account the key reaches")
    create.add_argument("--label", default="", help="what the key is for (shown in listings)")
    create.add_argument("--quiet", action="store_true", help="print the key only")
    add_db(create)
    create.set_defaults(func=run_create)
    listing = commands.add_parser("list", help="keys (ids, labels, revocations; never the keys)")
    listing.add_argument("--account", help="only this account's keys")
    add_db(listing)
    listing.set_defaults(func=run_list)
    revoke = commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id `keys list` shows")
    add_db(revoke)
    revoke.set_defaults(func=run_revoke)


def with_store(location: str, use: Callable[[ArticleStore], Awaitable[T]]) -> T:
    """`cli.store_access.with_store`; keys go with articles: the store must exist."""
    from cli.store_access import with_store as open_and_use

    return open_and_use(location, use, "`kbrec store import` creates one (or pass --db)")


def checked_account(account_id: str) -> str:
    from kbrec.records import check_id

    try:
        check_id(account_id, "account id")
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return account_id


def run_create(args: argparse.Namespace) -> int:
    from server.storage.accounts import check_label, issue_key

    account_id = checked_account(args.account)
    try:
        label = check_label(args.label)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    issued = with_store(args.db, lambda store: issue_key(store, account_id, label))
    if args.quiet:
        print(issued.key)
        return 0
    created = " (account created)" if issued.account_created else ""
    print(f"key {issued.record.key_id} of account {account_id}{created}; shown this once:")
    print(issued.key)
    return 0


def run_list(args: argparse.Namespace) -> int:
    account_id = None if args.account is None else checked_account(args.account)
    keys = with_store(args.db, lambda store: store.api_keys(account_id))
    print("| key id | account | label | created | revoked |")
    print("|---|---|---|---|---|")
    for key in keys:
        revoked = key.revoked_at or ""
        print(f"| {key.key_id} | {key.account_id} | {key.label} | {key.created_at} | {revoked} |")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from server.storage.store import utc_now

    revoked = with_store(args.db, lambda store: store.revoke_api_key(args.key_id, utc_now()))
    if revoked is None:
        raise CommandError(f"no key {args.key_id!r} (see `kbrec keys list`)")
    print(f"key {revoked.key_id} of account {revoked.account_id} revoked at {revoked.revoked_at}")
    return 0
