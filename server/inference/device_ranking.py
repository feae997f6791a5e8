"""Ranking a query batch against a `DeviceIndex` in a fixed number of array calls.

For a batch, whatever the number of accounts in it:
1. one upload of the query vectors and one of a small integer plan (each account's
   segment start and length, which queries ask it, each query's locale and k);
2. gather the accounts' rows, padded to the longest account of the batch:
   [accounts, longest, dim]; one batched matmul with the queries of each account:
   [accounts, longest, queries per account] scores, float32 also for a float16 index;
3. mask padding and other locales, find each query's k-th best score (argpartition,
   then a sort of the k best), keep the rows at or above it: the k best plus any tied
   with the k-th, as `IndexRanker`'s `top_k` does;
4. copy back only those rows' (query, row, score); the host orders them by score desc,
   then article_id asc (each row's id rank), and cuts at k.
So ids and order are those of `server.inference.ranking.rank_batch`, ties included.

A batch whose gather would pass `max_gather_elements` is split into chunks of accounts of
similar sizes (memory, not the number of accounts, sets the number of chunks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from server.inference.array_modules import NUMPY, ArrayModule, gpu_arrays
from server.inference.device_index import DeviceIndex, Segment
from server.inference.index import ArticleIndex, VersionIndex
from server.inference.ranking import IndexRanker, RankRequest, ScoredArticle

# Elements of the gathered rows plus the scores of one chunk: 2**27 float32 = 512 MiB.
MAX_GATHER_ELEMENTS: Final = 1 << 27
NO_LOCALE_FILTER: Final = -1


@dataclass
class AccountGroup:
    """The requests of one batch that ask one account."""

    segment: Segment
    requests: list[int]  # indices into the batch


@dataclass(frozen=True)
class Candidates:
    """Rows that may be in a request's top k, as the device found them (host arrays)."""

    request: np.ndarray  # int64: index into the batch
    row: np.ndarray  # int64: row of the index array
    score: np.ndarray  # float32


def rank_on_device(
    index: DeviceIndex,
    vectors: np.ndarray,
    requests: Sequence[RankRequest],
    max_gather_elements: int = MAX_GATHER_ELEMENTS,
) -> list[list[ScoredArticle]]:
    """Top articles per request; row i of `vectors` is request i's query vector.

    The same results as `ranking.rank_batch` over a `VersionIndex` with the same articles.
    """
    candidates = device_candidates(index, vectors, requests, max_gather_elements)
    return ordered_results(index, candidates, requests)


def device_candidates(
    index: DeviceIndex,
    vectors: np.ndarray,
    requests: Sequence[RankRequest],
    max_gather_elements: int = MAX_GATHER_ELEMENTS,
) -> Candidates:
    """Steps 1-4 of the module: the candidate rows of every request, copied back."""
    if vectors.shape[0] != len(requests):
        raise ValueError(f"{vectors.shape[0]} vectors for {len(requests)} requests")
    groups, locale_codes = plan_groups(index, requests)
    if not groups:
        return empty_candidates()
    index.flush()
    xp = index.arrays.xp
    queries = xp.asarray(np.ascontiguousarray(vectors, dtype=np.float32))
    found = [
        score_chunk(index, queries, chunk, requests, locale_codes)
        for chunk in chunks(groups, index.dim, max_gather_elements)
    ]
    return Candidates(
        np.concatenate([c.request for c in found]),
        np.concatenate([c.row for c in found]),
        np.concatenate([c.score for c in found]),
    )


def plan_groups(
    index: DeviceIndex, requests: Sequence[RankRequest]
) -> tuple[list[AccountGroup], list[int]]:
    """Requests grouped by account (unknown accounts and locales have no result), and each
    request's locale code (NO_LOCALE_FILTER without a locale)."""
    groups: dict[str, AccountGroup] = {}
    codes = [NO_LOCALE_FILTER] * len(requests)
    for position, request in enumerate(requests):
        segment = index.account(request.account_id)
        if segment is None:
            continue
        if request.top_k <= 0:
            raise ValueError(f"k must be positive, got {request.top_k}")
        if request.locale is not None:
            code = index.locale_code(request.locale)
            if code is None:
                continue  # no article has this locale
            codes[position] = code
        group = groups.get(request.account_id)
        if group is None:
            group = groups[request.account_id] = AccountGroup(segment, [])
        group.requests.append(position)
    return list(groups.values()), codes


def chunks(groups: list[AccountGroup], dim: int, max_elements: int) -> list[list[AccountGroup]]:
    """Accounts by size into chunks whose padded gather and scores fit `max_elements`."""
    ordered = sorted(groups, key=lambda group: group.segment.length)
    result: list[list[AccountGroup]] = []
    current: list[AccountGroup] = []
    most_requests = 0
    for group in ordered:
        longest = group.segment.length  # ascending: the longest of the chunk so far
        requests = max(most_requests, len(group.requests))
        size = (len(current) + 1) * longest * (dim + requests)
        if current and size > max_elements:
            result.append(current)
            current, requests = [], len(group.requests)
        current.append(group)
        most_requests = requests
    result.append(current)
    return result


def score_chunk(
    index: DeviceIndex,
    queries: Any,
    groups: list[AccountGroup],
    requests: Sequence[RankRequest],
    locale_codes: list[int],
) -> Candidates:
    """The device work of one chunk: gather, matmul, mask, k-th score, candidates."""
    xp, to_host = index.arrays.xp, index.arrays.to_host
    accounts = len(groups)
    per_account = max(len(group.requests) for group in groups)
    longest = max(group.segment.length for group in groups)
    batch = [position for group in groups for position in group.requests]
    k_max = max(requests[position].top_k for position in batch)
    kept = min(k_max, longest)  # candidates looked at per request before ties
    starts = np.array([group.segment.start for group in groups], dtype=np.int64)
    lengths = np.array([group.segment.length for group in groups], dtype=np.int64)
    query_rows = np.zeros((accounts, per_account), dtype=np.int64)
    account_of = np.empty(len(batch), dtype=np.int64)
    slot_of = np.empty(len(batch), dtype=np.int64)
    at = 0
    for number, group in enumerate(groups):
        count = len(group.requests)
        query_rows[number, :count] = group.requests
        account_of[at : at + count] = number
        slot_of[at : at + count] = np.arange(count)
        at += count
    wanted = np.array([locale_codes[position] for position in batch], dtype=np.int64)
    kth_column = np.array([min(requests[p].top_k, kept) - 1 for p in batch], dtype=np.int64)
    # One upload for the whole plan, sliced on the device.
    parts = [starts, lengths, query_rows.ravel(), account_of, slot_of, wanted, kth_column]
    plan = xp.asarray(np.concatenate(parts))
    starts_d, lengths_d, query_rows_d, account_d, slot_d, wanted_d, kth_column_d = (
        plan[end - len(part) : end]
        for part, end in zip(parts, np.cumsum([len(part) for part in parts]).tolist(), strict=True)
    )
    query_rows_d = query_rows_d.reshape(accounts, per_account)

    position = xp.arange(longest)
    valid = position[None, :] < lengths_d[:, None]  # [accounts, longest]
    rows = xp.where(valid, starts_d[:, None] + position[None, :], 0)
    gathered = index.vectors[rows]  # [accounts, longest, dim]
    if gathered.dtype != np.float32:
        gathered = gathered.astype(np.float32)  # float32 scores from float16 vectors
    # [accounts, longest, queries per account]: the gathered rows stay the left operand,
    # contiguous, so the matmul never copies them.
    scores = xp.matmul(gathered, queries[query_rows_d].transpose(0, 2, 1))
    if per_account == 1:  # one query per account: the batch is in account order already
        scores, keep, codes = scores[:, :, 0], valid, index.locale_codes[rows]
    else:  # [batch, longest]
        scores = scores.transpose(0, 2, 1)[account_d, slot_d]
        keep, codes = valid[account_d], index.locale_codes[rows][account_d]
    if (wanted != NO_LOCALE_FILTER).any():  # else no array work for locales at all
        keep = keep & ((wanted_d[:, None] == NO_LOCALE_FILTER) | (codes == wanted_d[:, None]))
    scores = xp.where(keep, scores, -xp.inf)
    best = scores
    if kept < longest:
        best = xp.take_along_axis(scores, xp.argpartition(-scores, kept - 1, axis=1), axis=1)
        best = best[:, :kept]
    best = xp.sort(best, axis=1)[:, ::-1]
    kth = best[xp.arange(len(batch)), kth_column_d]
    chosen = (scores >= kth[:, None]) & (scores > -xp.inf)
    request_d, column_d = xp.nonzero(chosen)
    # One copy back: float64 holds the int indices and the float32 scores exactly.
    packed = to_host(
        xp.stack(
            [
                request_d.astype(np.float64),
                column_d.astype(np.float64),
                scores[request_d, column_d].astype(np.float64),
            ]
        )
    )
    request_in_chunk = packed[0].astype(np.int64)
    return Candidates(
        np.asarray(batch, dtype=np.int64)[request_in_chunk],
        starts[account_of[request_in_chunk]] + packed[1].astype(np.int64),
        packed[2].astype(np.float32),
    )


def ordered_results(
    index: DeviceIndex, candidates: Candidates, requests: Sequence[RankRequest]
) -> list[list[ScoredArticle]]:
    """Per request: candidates by score desc, article_id asc, cut at k (host, vectorised)."""
    if candidates.request.size == 0:
        return [[] for _ in requests]
    id_rank = index.id_ranks[candidates.row]
    order = np.lexsort((id_rank, -candidates.score, candidates.request))
    request = candidates.request[order]
    first_of_request = np.searchsorted(request, request, side="left")
    top_k = np.array([r.top_k for r in requests], dtype=np.int64)
    keep = np.arange(request.size) - first_of_request < top_k[request]
    chosen = order[keep]
    entries = index.row_entries
    made = [
        ScoredArticle(entry.article_id, entry.title, score)  # type: ignore[union-attr]
        for entry, score in zip(
            map(entries.__getitem__, candidates.row[chosen].tolist()),
            candidates.score[chosen].tolist(),
            strict=True,
        )
    ]
    # `made` is in request order: one slice per request.
    ends = np.cumsum(np.bincount(request[keep], minlength=len(requests))).tolist()
    return [made[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def empty_candidates() -> Candidates:
    none = np.zeros(0, dtype=np.int64)
    return Candidates(none, none, np.zeros(0, dtype=np.float32))


class DeviceRanker:
    """The batcher's `BatchRanker` over a `DeviceIndex`."""

    def __init__(self, index: DeviceIndex, max_gather_elements: int = MAX_GATHER_ELEMENTS) -> None:
        self.index = index
        self.max_gather_elements = max_gather_elements

    def rank_batch(
        self, vectors: np.ndarray, requests: Sequence[RankRequest]
    ) -> list[list[ScoredArticle]]:
        return rank_on_device(self.index, vectors, requests, self.max_gather_elements)


@dataclass(frozen=True)
class RankingConfig:
    """How a `ModelLoader` builds each version's index and ranker.

    `arrays` None: a host matrix per account (`VersionIndex`, `IndexRanker`); else one
    `DeviceIndex` on that array module (CuPy: the GPU) in `dtype`.
    """

    arrays: ArrayModule | None = None
    dtype: str = "float32"

    @classmethod
    def from_settings(cls, device: str, dtype: str) -> RankingConfig:
        """`--ranking-device` cpu, cuda (NoGpu when CuPy finds none) or auto."""
        return cls(gpu_arrays(device), dtype)

    @property
    def device(self) -> str:
        if self.arrays is None:
            return "cpu"
        return "cuda" if self.arrays.name == "cupy" else self.arrays.name

    def open(self, model_version: int, dim: int) -> tuple[ArticleIndex, IndexRanker | DeviceRanker]:
        """A new, empty index of one version and its ranker: never shared by two versions."""
        if self.arrays is None:
            host = VersionIndex(model_version, dim)
            return host, IndexRanker(host)
        index = DeviceIndex(model_version, dim, self.arrays, self.dtype)
        return index, DeviceRanker(index)


HOST_RANKING: Final = RankingConfig()
BATCHED_NUMPY_RANKING: Final = RankingConfig(NUMPY)
