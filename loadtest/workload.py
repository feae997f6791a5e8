"""What to send: recommendation queries (and optional article writes) spread over accounts.

A `Workload` is a fixed tuple of distinct items; a run draws item indexes from it
with a seeded generator, so the same seed always gives the same request sequence.
Accounts are chosen by a Zipf law over their rank (the account with the most texts
is rank 1): weight 1 / rank**s, so s = 0 is uniform over accounts and larger s
concentrates traffic on the biggest tenants, as in a real multi-tenant service.
Within an account, texts are chosen uniformly, so text lengths are the real ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

RECOMMEND: Final = "recommend"
WRITE: Final = "write"
# Writes go to a small, fixed set of article ids per account, so a long run overwrites
# the same few articles instead of growing the customer's help center without bound.
WRITE_SLOTS: Final = 8
WRITE_ID_PREFIX: Final = "kbrec-loadtest-"
_CHUNK: Final = 4096


@dataclass(frozen=True)
class Query:
    account_id: str
    text: str


@dataclass(frozen=True)
class ArticleWrite:
    account_id: str
    article_id: str
    title: str
    body: str


Item = Query | ArticleWrite


def op_of(item: Item) -> str:
    return WRITE if isinstance(item, ArticleWrite) else RECOMMEND


@dataclass(frozen=True)
class Workload:
    """Distinct items: every query grouped by account (rank order), then the writes."""

    items: tuple[Item, ...]
    accounts: tuple[str, ...]  # rank order: index 0 is rank 1
    query_start: tuple[int, ...]  # per account: first query index
    query_count: tuple[int, ...]
    write_start: int  # index of the first write; accounts × WRITE_SLOTS of them
    description: str

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(op_of(item) for item in self.items)


def build_workload(
    queries: Sequence[Query],
    write_content: dict[str, Sequence[tuple[str, str]]],
    description: str,
) -> Workload:
    """Group queries by account (most texts first) and add WRITE_SLOTS writes per account.

    `write_content` gives (title, body) pairs per account for the writes; an account
    without any gets its own queries joined as a stand-in article.
    """
    if not queries:
        raise ValueError("the workload has no queries")
    by_account: dict[str, list[Query]] = {}
    for query in queries:
        by_account.setdefault(query.account_id, []).append(query)
    accounts = sorted(by_account, key=lambda a: (-len(by_account[a]), a))
    items: list[Item] = []
    starts, counts = [], []
    for account in accounts:
        starts.append(len(items))
        counts.append(len(by_account[account]))
        items.extend(by_account[account])
    write_start = len(items)
    for account in accounts:
        items.extend(_writes(account, write_content.get(account), by_account[account]))
    return Workload(
        tuple(items), tuple(accounts), tuple(starts), tuple(counts), write_start, description
    )


def _writes(
    account: str, content: Sequence[tuple[str, str]] | None, queries: Sequence[Query]
) -> list[ArticleWrite]:
    if not content:
        texts = [q.text for q in queries]
        content = [(texts[i % len(texts)], " ".join(texts[i : i + 12])) for i in range(WRITE_SLOTS)]
    return [
        ArticleWrite(account, f"{WRITE_ID_PREFIX}{slot}", *content[slot % len(content)])
        for slot in range(WRITE_SLOTS)
    ]


def zipf_weights(count: int, s: float) -> np.ndarray:
    """P(rank r) ∝ 1 / r**s for r = 1..count; s = 0 is uniform."""
    if s < 0:
        raise ValueError(f"zipf exponent must be >= 0, got {s}")
    weights = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** s
    return weights / weights.sum()


def pick_items(
    workload: Workload, seed: int, zipf_s: float, write_fraction: float
) -> Iterator[int]:
    """An endless, deterministic sequence of item indexes (drawn in vectorised chunks)."""
    if not 0 <= write_fraction <= 1:
        raise ValueError(f"write fraction must be in [0, 1], got {write_fraction}")
    rng = np.random.default_rng(seed)
    weights = zipf_weights(len(workload.accounts), zipf_s)
    starts = np.asarray(workload.query_start)
    counts = np.asarray(workload.query_count)
    while True:
        account = rng.choice(len(weights), size=_CHUNK, p=weights)
        within = (rng.random(_CHUNK) * counts[account]).astype(np.int64)
        picks = starts[account] + within
        writes = rng.random(_CHUNK) < write_fraction
        slots = rng.integers(0, WRITE_SLOTS, size=_CHUNK)
        picks = np.where(writes, workload.write_start + account * WRITE_SLOTS + slots, picks)
        yield from picks.tolist()


def in_order(workload: Workload, items: Sequence[Item]) -> Iterator[int]:
    """Endless picks that send `items` (all in `workload`) in the given order, round and
    round: for benchmarks that compare systems on one fixed sequence, not a random draw."""
    index = {item: k for k, item in enumerate(workload.items)}
    return itertools.cycle([index[item] for item in items])
