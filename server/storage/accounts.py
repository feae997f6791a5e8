"""Accounts and their API keys, as the store keeps them.

An account exists once created (`kbrec accounts create`, the admin API, its first
key, or, when the service runs without authentication, its first write), with
optional quotas (None: the server's defaults).

An API key is `kb_<key id>.<secret>`: the key id (16 hex digits) names it in
listings and revocations, the secret is 256 random bits. The store keeps only the
SHA-256 digest of the whole key, never the key: a fast hash is enough for secrets
of that entropy (a slow password hash protects guessable passwords; nobody can
search 2^256 secrets), and it lets a request find its key by an indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from server.storage.store import ArticleStore, utc_now

KEY_PATTERN: Final = re.compile(r"kb_([0-9a-f]{16})\.[A-Za-z0-9_-]{43}")
MAX_LABEL_LENGTH: Final = 100
MAX_QUOTA: Final = 1 << 31  # larger quotas are a typo, not a plan


@dataclass(frozen=True)
class Account:
    account_id: str
    created_at: str  # ISO 8601, UTC
    max_articles: int | None = None  # None: the server's default quota
    max_article_bytes: int | None = None  # title and body, UTF-8


@dataclass(frozen=True)
class ApiKey:
    """A key's record, without the key itself."""

    key_id: str
    account_id: str
    created_at: str
    label: str = ""
    revoked_at: str | None = None


# The columns both stores read records from, in the order the functions below take them.
ACCOUNT_COLUMNS: Final = "account_id, created_at, max_articles, max_article_bytes"
KEY_COLUMNS: Final = "key_id, account_id, created_at, label, revoked_at"


def account_of(row: Sequence[Any]) -> Account:
    return Account(*row)


def api_key_of(row: Sequence[Any]) -> ApiKey:
    return ApiKey(*row)


def new_key() -> tuple[str, str]:
    """(key id, key): a fresh random key, shown once to whoever asked for it."""
    key_id = secrets.token_hex(8)
    return key_id, f"kb_{key_id}.{secrets.token_urlsafe(32)}"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_key_shaped(token: str) -> bool:
    """Whether `token` can be a key at all (anything else needs no lookup)."""
    return KEY_PATTERN.fullmatch(token) is not None


def check_label(label: str) -> str:
    """A key's label as given; ValueError if too long or not printable."""
    if len(label) > MAX_LABEL_LENGTH or not label.isprintable():
        raise ValueError(f"a key label is at most {MAX_LABEL_LENGTH} printable characters")
    return label


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKey
    key: str  # the only time the key exists outside its holder's hands
    account_created: bool


async def issue_key(store: ArticleStore, account_id: str, label: str = "") -> IssuedKey:
    """A new key of the account, creating the account (default quotas) if it does not
    exist, in one transaction."""
    key_id, key = new_key()
    now = utc_now()
    record = ApiKey(key_id, account_id, now, check_label(label))
    created = await store.create_api_key(record, key_digest(key), Account(account_id, now))
    return IssuedKey(record, key, created)
