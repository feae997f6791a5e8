"""Where the workload's texts come from: `corpus:DIR`, `file:PATH` or `tickets[:DIR]`.

- corpus:DIR — the corpus's held-out queries (validation and test splits by default:
  real index entries the model was not trained on) with their accounts; writes copy
  real articles of the same account (articles.jsonl) under load-test ids.
- file:PATH — JSON lines {"account_id", "text"} (other fields ignored).
- tickets[:DIR] — the realistic support tickets of loadtest/tickets.py (hand-written
  and templated from DIR's test queries); the benchmarks in bench/ send the same ones,
  so both measure the same texts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from kbrec.records import (
    ARTICLES_FILE,
    QUERIES_FILE,
    SPLITS,
    check_id,
    read_articles,
    read_queries,
)
from loadtest.tickets import ticket_texts
from loadtest.workload import Query, Workload, build_workload

DEFAULT_CORPUS: Final = Path("data/corpus")
DEFAULT_SPLITS: Final = ("validation", "test")
# Long enough to cost a real embedding call; the server cuts articles to the model length.
WRITE_BODY_CHARS: Final = 4000


class WorkloadError(Exception):
    """A workload spec or file that cannot be used; the message says why."""


def load_workload(spec: str, splits: Sequence[str] = DEFAULT_SPLITS) -> Workload:
    kind, _, arg = spec.partition(":")
    if kind == "corpus":
        return corpus_workload(Path(arg) if arg else DEFAULT_CORPUS, splits)
    if kind == "file" and arg:
        return file_workload(Path(arg))
    if kind == "tickets":
        return tickets_workload(Path(arg) if arg else DEFAULT_CORPUS)
    raise WorkloadError(f"unknown workload {spec!r}: use corpus:DIR, file:PATH or tickets[:DIR]")


def corpus_workload(corpus: Path, splits: Sequence[str]) -> Workload:
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise WorkloadError(f"unknown split(s) {sorted(unknown)}: expected some of {SPLITS}")
    records = _read(read_queries, corpus / QUERIES_FILE)
    queries = [Query(q.account_id, q.text) for q in records if q.split in splits]
    if not queries:
        raise WorkloadError(f"{corpus / QUERIES_FILE} has no {'/'.join(splits)} queries")
    description = f"corpus {corpus} ({'+'.join(splits)} queries)"
    return build_workload(queries, article_content(corpus), description)


def article_content(corpus: Path) -> dict[str, list[tuple[str, str]]]:
    """(title, body) of the corpus's articles per account, for writes; empty if absent."""
    path = corpus / ARTICLES_FILE
    if not path.is_file():
        return {}
    content: dict[str, list[tuple[str, str]]] = {}
    for article in _read(read_articles, path):
        body = article.body[:WRITE_BODY_CHARS]
        content.setdefault(article.account_id, []).append((article.title, body))
    return content


def file_workload(path: Path) -> Workload:
    queries = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    queries.append(_query_line(line, f"{path}:{number}"))
    except OSError as exc:
        raise WorkloadError(f"cannot read {path}: {exc}") from exc
    if not queries:
        raise WorkloadError(f"{path} has no queries")
    return build_workload(queries, {}, f"file {path}")


def _query_line(line: str, where: str) -> Query:
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("expected a JSON object")
        account, text = record.get("account_id"), record.get("text")
        check_id(account, "account id")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise WorkloadError(f"{where}: {exc}") from exc
    return Query(account, text)


def tickets_workload(corpus: Path) -> Workload:
    path = corpus / QUERIES_FILE
    if not path.is_file():
        raise WorkloadError(f"{path} not found: the templated tickets need the corpus queries")
    return build_workload(ticket_texts(path), article_content(corpus), "tickets (loadtest.tickets)")


def _read(reader: Callable[[Path], list], path: Path) -> list:
    if not path.is_file():
        raise WorkloadError(f"{path} not found: run `kbrec corpus fetch --out {path.parent}`")
    try:
        return reader(path)
    except ValueError as exc:
        raise WorkloadError(str(exc)) from exc
