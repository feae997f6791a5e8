"""The corpus record types, their JSON Lines files, and the deterministic split."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final, TypeVar

from kbrec.atomic import write_text_atomic

# Account and article ids appear in HTTP paths
# (/v1/accounts/{account_id}/articles/{article_id}), so they must be URL-safe as is.
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]+")
MAX_ID_LENGTH: Final = 128

_Record = TypeVar("_Record", "Article", "Query")

SPLITS: Final = ("train", "validation", "test")
ARTICLES_FILE: Final = "articles.jsonl"
QUERIES_FILE: Final = "queries.jsonl"


def is_valid_id(value: object) -> bool:
    """Whether `value` can be an account or article id."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and ID_PATTERN.fullmatch(value) is not None
        # "." and ".." are dot-segments: HTTP clients rewrite them out of paths.
        and value.strip(".") != ""
    )


def check_id(value: object, what: str) -> None:
    """Raise ValueError naming `what` unless `value` is a valid id."""
    if not is_valid_id(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-{MAX_ID_LENGTH} characters from "
            "A-Z a-z 0-9 . _ - (not only dots)"
        )


@dataclasses.dataclass(frozen=True)
class Article:
    """One help-center article of one account; `body` is plain text."""

    account_id: str
    article_id: str
    title: str
    body: str
    locale: str | None = None

    def __post_init__(self) -> None:
        check_id(self.account_id, "account id")
        check_id(self.article_id, "article id")


def article_text(article: Article) -> str:
    """How an article is shown to the encoder: title, then body (truncated by the tokenizer).

    Training, evaluation and the server's embedding of articles all go through here, so a
    served article vector is computed from the same text the encoder was trained on.
    """
    return f"{article.title}\n{article.body}"


@dataclasses.dataclass(frozen=True)
class Query:
    """A query text answered by one article of the same account."""

    account_id: str
    text: str
    article_id: str
    split: str

    def __post_init__(self) -> None:
        check_id(self.account_id, "account id")
        check_id(self.article_id, "article id")
        if self.split not in SPLITS:
            raise ValueError(f"invalid split {self.split!r}: expected one of {SPLITS}")


def assign_split(key: str) -> str:
    """Map `key` to "train" (80%), "validation" (10%) or "test" (10%), stably.

    Uses SHA-256 rather than `hash()`, which is salted per process.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    if bucket < 80:
        return "train"
    return "validation" if bucket < 90 else "test"


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Article | Query]) -> int:
    """Write records as JSON Lines, atomically (readers see the old or the new file).

    Returns the number of records written.
    """
    lines = [
        json.dumps(dataclasses.asdict(record), ensure_ascii=False) + "\n" for record in records
    ]
    write_text_atomic(Path(path), "".join(lines))
    return len(lines)


def read_articles(path: str | os.PathLike[str]) -> list[Article]:
    """Read articles written by `write_jsonl`; ValueError names the bad line."""
    return _read_records(path, Article)


def read_queries(path: str | os.PathLike[str]) -> list[Query]:
    """Read queries written by `write_jsonl`; ValueError names the bad line."""
    return _read_records(path, Query)


def _read_records(path: str | os.PathLike[str], record_type: type[_Record]) -> list[_Record]:
    fields = dataclasses.fields(record_type)
    names = {field.name for field in fields}
    required = {field.name for field in fields if field.default is dataclasses.MISSING}
    records: list[_Record] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
                if not (
                    isinstance(values, dict)
                    and required <= values.keys() <= names
                    and all(_string_or_optional(values[name], name in required) for name in values)
                ):
                    raise ValueError(f"expected a {record_type.__name__} object of strings")
                records.append(record_type(**values))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                raise ValueError(f"{path}:{number}: {exc}") from exc
    return records


def _string_or_optional(value: object, required: bool) -> bool:
    return isinstance(value, str) or (value is None and not required)
