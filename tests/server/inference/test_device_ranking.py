"""The batched ranker over one device array against the host ranker (`IndexRanker`).

Every test runs twice: with NumPy (the same code, on the CPU, everywhere) and with
CuPy on a CUDA GPU (marked `gpu`; skipped with the reason where CuPy or a GPU is
missing). Vectors whose dot products are exact in float32 and float16 (small multiples
of 1/16, word counts) make "the same ids in the same order" a sharp check, ties included.

Self-contained (no conftest fixtures): bench/gpu_check.sh runs this file with
`--noconftest` on a GPU machine that lacks the service's dependencies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest

from server.inference.array_modules import NUMPY, ArrayModule, NoGpu, cupy_arrays
from server.inference.device_index import DeviceIndex
from server.inference.device_ranking import (
    DeviceRanker,
    RankingConfig,
    device_candidates,
    rank_on_device,
)
from server.inference.index import IndexEntry, VersionIndex
from server.inference.ranking import RankRequest, ScoredArticle, rank_batch

LOCALES = (None, "en-us", "de", "pt-br")


@pytest.fixture(
    params=[pytest.param("numpy"), pytest.param("cupy", marks=pytest.mark.gpu)],
)
def arrays(request: pytest.FixtureRequest) -> ArrayModule:
    if request.param == "numpy":
        return NUMPY
    try:
        return cupy_arrays()
    except NoGpu as exc:
        pytest.skip(f"needs CuPy and a CUDA GPU: {exc}")


@pytest.fixture(params=["float32", "float16"])
def dtype(request: pytest.FixtureRequest) -> str:
    return request.param


class Both:
    """The same articles in the host index and in a device index."""

    def __init__(self, arrays: ArrayModule, dtype: str, dim: int, min_rows: int = 64) -> None:
        self.host = VersionIndex(1, dim)
        self.device = DeviceIndex(1, dim, arrays, dtype, min_rows=min_rows)

    def upsert(self, account_id: str, entry: IndexEntry, vector: np.ndarray) -> None:
        self.host.upsert(account_id, entry, vector)
        self.device.upsert(account_id, entry, vector)

    def remove(self, account_id: str, article_id: str) -> bool:
        removed = self.host.remove(account_id, article_id)
        assert self.device.remove(account_id, article_id) == removed
        return removed

    def assert_same_ranking(
        self, vectors: np.ndarray, requests: list[RankRequest], **options: int
    ) -> list[list[ScoredArticle]]:
        expected = rank_batch(self.host, vectors, requests)
        got = rank_on_device(self.device, vectors, requests, **options)
        for request, want, have in zip(requests, expected, got, strict=True):
            assert have == want, request
        assert dict(self.device.article_counts()) == dict(self.host.article_counts())
        return got


def dyadic(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Multiples of 1/16 in [-2, 2]: exact in float16, and so are their dot products."""
    return (rng.integers(-32, 33, size=shape) / 16).astype(np.float32)


def random_requests(rng: np.random.Generator, accounts: list[str], count: int) -> list[RankRequest]:
    names = [*accounts, "nobody"]
    locales = [*LOCALES, "fr"]  # fr: no article has it
    return [
        RankRequest(
            names[rng.integers(len(names))],
            int(rng.choice([1, 2, 5, 10, 37, 100])),
            locales[rng.integers(len(locales))] if rng.random() < 0.4 else None,
        )
        for _ in range(count)
    ]


def fill_random(both: Both, rng: np.random.Generator, sizes: dict[str, int], dim: int) -> None:
    for account_id, size in sizes.items():
        vectors = dyadic(rng, size, dim)
        if size > 3:  # duplicated vectors: exact ties, broken by article_id
            vectors[1::3] = vectors[0]
        for i, vector in enumerate(vectors):
            article_id = f"{rng.integers(10**9):09d}-{i}"
            both.upsert(
                account_id,
                IndexEntry(article_id, f"title {i}", LOCALES[rng.integers(len(LOCALES))]),
                vector,
            )


def test_random_batches_give_the_host_rankers_ids_order_and_scores(
    arrays: ArrayModule, dtype: str
) -> None:
    rng = np.random.default_rng(7)
    dim = 24
    both = Both(arrays, dtype, dim)
    sizes = {"one": 1, "two": 2, "big": 5000}
    sizes |= {f"acct{i}": int(rng.integers(1, 400)) for i in range(40)}
    fill_random(both, rng, sizes, dim)
    for batch in (1, 7, 64, 256):
        requests = random_requests(rng, list(sizes), batch)
        both.assert_same_ranking(dyadic(rng, batch, dim), requests)
    # One query per account (the batch in account order), with and without locales.
    for locale in (None, "de"):
        requests = [RankRequest(account, 10, locale) for account in sizes]
        both.assert_same_ranking(dyadic(rng, len(requests), dim), requests)


def test_a_batch_of_one_account_and_every_k_up_to_100(arrays: ArrayModule, dtype: str) -> None:
    rng = np.random.default_rng(1)
    dim = 8
    both = Both(arrays, dtype, dim)
    fill_random(both, rng, {"acme": 150}, dim)
    requests = [RankRequest("acme", k) for k in range(1, 101)]
    got = both.assert_same_ranking(dyadic(rng, 100, dim), requests)
    assert [len(result) for result in got] == list(range(1, 101))


def test_ties_break_by_article_id_also_at_the_kth_place(arrays: ArrayModule, dtype: str) -> None:
    both = Both(arrays, dtype, dim=3)
    same = np.array([1, 0, 0], dtype=np.float32)
    for article_id in ["d", "b", "e", "a", "c", "f"]:
        vector = same if article_id != "f" else np.array([0.5, 0, 0], dtype=np.float32)
        both.upsert("acme", IndexEntry(article_id, article_id, None), vector)
    for k in range(1, 7):
        (result,) = both.assert_same_ranking(same[None], [RankRequest("acme", k)])
        assert [r.article_id for r in result] == ["a", "b", "c", "d", "e", "f"][:k]
    assert both.remove("acme", "a") and both.remove("acme", "d")  # rows move, ids re-rank
    both.upsert("acme", IndexEntry("0", "0", None), same)
    (result,) = both.assert_same_ranking(same[None], [RankRequest("acme", 3)])
    assert [r.article_id for r in result] == ["0", "b", "c"]


def test_locale_filters(arrays: ArrayModule) -> None:
    both = Both(arrays, "float32", dim=3)
    rows = [
        ("en-best", [1, 0, 0], "en-us"),
        ("de-best", [1, 0.25, 0], "de"),
        ("en-other", [0, 1, 0], "en-us"),
        ("no-locale", [1, 0, 0.25], None),
    ]
    for article_id, vector, locale in rows:
        both.upsert("acme", IndexEntry(article_id, article_id, locale), np.array(vector, "f4"))
    query = np.array([[1, 0, 0]] * 4, dtype=np.float32)
    requests = [
        RankRequest("acme", 5, "en-us"),
        RankRequest("acme", 5, "fr"),
        RankRequest("acme", 1, "de"),
        RankRequest("acme", 5),
    ]
    got = both.assert_same_ranking(query, requests)
    assert [[r.article_id for r in result] for result in got] == [
        ["en-best", "en-other"],
        [],
        ["de-best"],
        ["de-best", "en-best", "no-locale", "en-other"],  # three tie at 1.0: by id
    ]


def help_center(rng: np.random.Generator) -> Iterator[tuple[str, str, str, str | None]]:
    """(account, article_id, title, locale) of a help center: repeated title words."""
    words = ["print", "page", "table", "font", "margin", "chart", "filter", "password"]
    for account, size in (("writer", 400), ("calc", 120), ("draw", 9), ("base", 1)):
        for i in range(size):
            title = " ".join(rng.choice(words, size=int(rng.integers(1, 5))))
            yield account, f"{account}-{i:04d}", title, ("en-us", "de")[i % 7 == 0]


def word_counts(text: str, dim: int) -> np.ndarray:
    """A bag of words: hashed word counts (integers: exact dot products)."""
    vector = np.zeros(dim, dtype=np.float32)
    for word in text.split():
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1
    return vector


def test_real_batches_of_text_embeddings(arrays: ArrayModule, dtype: str) -> None:
    rng = np.random.default_rng(3)
    dim = 32
    both = Both(arrays, dtype, dim)
    for account, article_id, title, locale in help_center(rng):
        both.upsert(account, IndexEntry(article_id, title, locale), word_counts(title, dim))
    queries = ["print page", "chart", "password export style", "table font font", "margin"]
    for batch in (1, 32, 256):
        texts = [queries[i % len(queries)] for i in range(batch)]
        accounts = ["writer", "calc", "draw", "base", "nobody"]
        requests = [
            RankRequest(accounts[i % 5], (5, 10, 100)[i % 3], (None, "de")[i % 4 == 0])
            for i in range(batch)
        ]
        vectors = np.stack([word_counts(text, dim) for text in texts])
        both.assert_same_ranking(vectors, requests)


def test_float16_scores_are_within_1e3_of_float32(arrays: ArrayModule) -> None:
    rng = np.random.default_rng(5)
    dim = 384
    index = DeviceIndex(1, dim, arrays, "float16")
    vectors = rng.standard_normal((2000, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, vector in enumerate(vectors):
        index.upsert("acme", IndexEntry(f"a{i:05d}", "", None), vector)
    queries = rng.standard_normal((64, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = queries @ vectors.T
    k = 10
    results = rank_on_device(index, queries, [RankRequest("acme", k)] * 64)
    for row, result in enumerate(results):
        assert len(result) == k
        true_scores = np.array([exact[row, int(r.article_id[1:])] for r in result])
        assert np.abs(true_scores - [r.score for r in result]).max() <= 1e-3
        # Only near-ties (within the rounding) may change places with the true top k.
        kth_true = np.sort(exact[row])[-k]
        assert true_scores.min() >= kth_true - 2e-3


def test_puts_and_deletes_show_in_the_next_ranking(arrays: ArrayModule, dtype: str) -> None:
    rng = np.random.default_rng(11)
    dim = 8
    both = Both(arrays, dtype, dim, min_rows=16)  # small: growth and compaction happen
    accounts = [f"a{i}" for i in range(12)]
    ids: dict[str, list[str]] = {account: [] for account in accounts}
    peak = 0
    for step in range(60):
        for _ in range(int(rng.integers(1, 40))):
            account = accounts[rng.integers(len(accounts))]
            action = rng.random()
            if action < 0.55 or not ids[account]:  # a new article
                article_id = f"{account}-{step}-{rng.integers(10**6)}"
                ids[account].append(article_id)
            elif action < 0.75:  # an update of one it has
                article_id = ids[account][rng.integers(len(ids[account]))]
            else:  # a delete
                article_id = ids[account].pop(int(rng.integers(len(ids[account]))))
                assert both.remove(account, article_id)
                continue
            locale = LOCALES[rng.integers(len(LOCALES))]
            both.upsert(account, IndexEntry(article_id, str(step), locale), dyadic(rng, dim))
        if step % 15 == 14:  # an account emptied, then refilled later
            for article_id in ids[accounts[step % 12]]:
                assert both.remove(accounts[step % 12], article_id)
            ids[accounts[step % 12]] = []
            assert both.device.account(accounts[step % 12]) is None
        assert not both.remove(accounts[0], "never-there")
        requests = random_requests(rng, accounts, 48)
        both.assert_same_ranking(dyadic(rng, 48, dim), requests)
        live = sum(len(v) for v in ids.values())
        peak = max(peak, live)
        for account in accounts:
            assert both.device.account_entries(account) == (
                both.host.account(account).entries if ids[account] else []
            )
    # Moves and deletes leave dead rows; compaction keeps the array near the peak size.
    assert both.device.allocated_rows <= 8 * max(peak, 16)


def test_dead_rows_are_compacted_so_churn_does_not_grow_the_array(
    arrays: ArrayModule, dtype: str
) -> None:
    rng = np.random.default_rng(13)
    dim = 8
    both = Both(arrays, dtype, dim, min_rows=64)
    fill_random(both, rng, {"steady": 100}, dim)
    for cycle in range(300):  # an account comes, grows (its segment moves), and goes
        account = f"passing{cycle}"
        for i in range(20):
            both.upsert(account, IndexEntry(f"{i:02d}", "", None), dyadic(rng, dim))
        if cycle % 50 == 0:
            requests = random_requests(rng, ["steady", account], 16)
            both.assert_same_ranking(dyadic(rng, 16, dim), requests)
        for i in range(20):
            assert both.remove(account, f"{i:02d}")
    # Without compaction the dead segments alone would take about 300 * 56 rows.
    assert both.device.allocated_rows <= 1024
    both.assert_same_ranking(dyadic(rng, 8, dim), [RankRequest("steady", 100)] * 8)


def test_a_bulk_load_ranks_and_takes_writes_as_upserts_do(arrays: ArrayModule, dtype: str) -> None:
    rng = np.random.default_rng(17)
    dim = 8
    both = Both(arrays, dtype, dim, min_rows=16)
    loaded: list[tuple[str, list[IndexEntry]]] = []
    rows: list[np.ndarray] = []
    for account, size in (("a", 30), ("b", 1), ("c", 200)):
        entries = [
            IndexEntry(f"{rng.integers(10**6):06d}-{i}", "", LOCALES[i % 4]) for i in range(size)
        ]
        vectors = dyadic(rng, size, dim)
        vectors[::5] = vectors[0]  # ties
        for entry, vector in zip(entries, vectors, strict=True):
            both.host.upsert(account, entry, vector)
        loaded.append((account, entries))
        rows.append(vectors)
    both.device.upsert("gone", IndexEntry("x", "", None), dyadic(rng, dim))  # replaced
    both.device.load_accounts(loaded, np.concatenate(rows))
    assert both.device.account("gone") is None
    both.assert_same_ranking(dyadic(rng, 40, dim), random_requests(rng, ["a", "b", "c"], 40))
    both.upsert("b", IndexEntry("new", "", None), dyadic(rng, dim))  # into its room
    assert both.remove("c", loaded[2][1][0].article_id)
    both.upsert("a", loaded[0][1][3], dyadic(rng, dim))
    both.assert_same_ranking(dyadic(rng, 40, dim), random_requests(rng, ["a", "b", "c"], 40))
    with pytest.raises(ValueError, match="shape"):
        both.device.load_accounts(loaded, np.zeros((3, dim), dtype=np.float32))


def test_writes_after_a_bulk_load_fit_in_the_room_it_left(arrays: ArrayModule, dtype: str) -> None:
    # A start or a reload loads every account; the writes that follow must not move
    # each account they touch (a copy of its rows) nor grow the whole array.
    rng = np.random.default_rng(23)
    dim = 8
    index = DeviceIndex(1, dim, arrays, dtype, min_rows=16)
    sizes = {"a": 40, "b": 1, "c": 0, "d": 300}
    loaded = [(a, [IndexEntry(f"{a}{i}", "", None) for i in range(n)]) for a, n in sizes.items()]
    index.load_accounts(loaded, dyadic(rng, sum(sizes.values()), dim))
    starts = {a: index.account(a).start for a in ("a", "b", "d")}  # type: ignore[union-attr]
    rows = index.allocated_rows
    for account, count in (("a", 10), ("b", 6), ("d", 75)):  # a quarter more, at least 8
        for i in range(count):
            index.upsert(account, IndexEntry(f"new{i}", "", None), dyadic(rng, dim))
    index.upsert("e", IndexEntry("first", "", None), dyadic(rng, dim))  # a new account
    assert {a: index.account(a).start for a in starts} == starts  # type: ignore[union-attr]
    assert index.allocated_rows == rows
    assert index.dead_rows == 0
    assert [len(index.account_entries(a)) for a in "abde"] == [50, 7, 375, 1]


def test_bulk_loads_of_both_indexes_hold_what_upserts_in_that_order_hold(
    arrays: ArrayModule, dtype: str
) -> None:
    """`load_accounts` of the host and the device index (a start's or a reload's load,
    server.versions.live_set.load_index) against an upsert per row: same accounts,
    rows in the same order, same ranking, and the same after later writes."""
    rng = np.random.default_rng(19)
    dim = 8
    loaded: list[tuple[str, list[IndexEntry]]] = []
    for account, size in (("a", 70), ("b", 1), ("c", 0), ("d", 300), ("e", 9)):
        ids = rng.permutation(size)  # rows not in id order: the tie-break sorts them
        loaded.append((account, [IndexEntry(f"{i:04d}", "", LOCALES[i % 4]) for i in ids]))
    vectors = dyadic(rng, sum(len(entries) for _, entries in loaded), dim)
    vectors[1::3] = vectors[0]  # ties
    upserted = DeviceIndex(1, dim, arrays, dtype, min_rows=16)  # segments move and grow
    rows = iter(vectors)
    for account, entries in loaded:
        for entry in entries:
            upserted.upsert(account, entry, next(rows))
    both = Both(arrays, dtype, dim, min_rows=16)
    both.host.load_accounts(loaded, vectors.copy())  # the host keeps what it is given
    both.device.load_accounts(loaded, vectors)
    assert list(both.device.article_counts()) == list(upserted.article_counts())
    assert list(both.host.article_counts()) == list(upserted.article_counts())
    for account, _ in upserted.article_counts():
        assert both.device.account_entries(account) == upserted.account_entries(account)
        assert both.host.account_entries(account) == upserted.account_entries(account)
        np.testing.assert_array_equal(
            both.device.account_matrix(account), upserted.account_matrix(account)
        )
    names = ["a", "b", "c", "d", "e"]
    queries, requests = dyadic(rng, 64, dim), random_requests(rng, names, 64)
    got = both.assert_same_ranking(queries, requests)
    assert got == rank_on_device(upserted, queries, requests)
    new, first = dyadic(rng, 2, dim)
    for index in (both, upserted):
        index.upsert("b", IndexEntry("new", "", "de"), new)  # the loaded segment moves
        index.upsert("c", IndexEntry("first", "", None), first)
        assert index.remove("d", "0000")
    got = both.assert_same_ranking(queries, requests)
    assert got == rank_on_device(upserted, queries, requests)


def test_an_article_written_and_deleted_before_any_ranking(arrays: ArrayModule) -> None:
    both = Both(arrays, "float32", dim=3)
    both.upsert("acme", IndexEntry("kept", "", None), np.array([1, 0, 0], dtype=np.float32))
    both.assert_same_ranking(np.ones((1, 3), "f4"), [RankRequest("acme", 5)])
    both.upsert("acme", IndexEntry("brief", "", None), np.array([0, 1, 0], dtype=np.float32))
    assert both.remove("acme", "brief")  # its vector never reached the device
    (result,) = both.assert_same_ranking(np.ones((1, 3), "f4"), [RankRequest("acme", 5)])
    assert [r.article_id for r in result] == ["kept"]


def test_small_gather_budget_splits_the_batch_not_the_results(arrays: ArrayModule) -> None:
    rng = np.random.default_rng(2)
    dim = 8
    both = Both(arrays, "float32", dim)
    sizes = {f"acct{i}": int(rng.integers(1, 300)) for i in range(30)}
    fill_random(both, rng, sizes, dim)
    requests = random_requests(rng, list(sizes), 100)
    vectors = dyadic(rng, 100, dim)
    both.assert_same_ranking(vectors, requests, max_gather_elements=3000)
    both.assert_same_ranking(vectors, requests, max_gather_elements=1)


def test_only_candidates_come_back(arrays: ArrayModule) -> None:
    rng = np.random.default_rng(4)
    index = DeviceIndex(1, 16, arrays)
    for i, vector in enumerate(rng.standard_normal((3000, 16)).astype(np.float32)):
        index.upsert("acme", IndexEntry(f"a{i}", "", None), vector)
    requests = [RankRequest("acme", 10)] * 32
    candidates = device_candidates(index, rng.standard_normal((32, 16)).astype("f4"), requests)
    assert candidates.row.size == 32 * 10  # no ties among random scores: exactly k each


def test_a_non_positive_k_is_refused(arrays: ArrayModule) -> None:
    index = DeviceIndex(1, 3, arrays)
    index.upsert("acme", IndexEntry("x", "x", None), np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError):
        DeviceRanker(index).rank_batch(np.ones((1, 3), "f4"), [RankRequest("acme", 0)])
    with pytest.raises(ValueError):
        index.upsert("acme", IndexEntry("y", "y", None), np.ones(4, dtype=np.float32))


def test_each_version_gets_its_own_device_array(arrays: ArrayModule, dtype: str) -> None:
    config = RankingConfig(arrays, dtype)
    one, ranker_one = config.open(1, 4)
    two, ranker_two = config.open(2, 4)
    assert isinstance(one, DeviceIndex) and isinstance(two, DeviceIndex)
    assert (one.model_version, two.model_version) == (1, 2)
    assert not arrays.xp.shares_memory(one.vectors, two.vectors)
    one.upsert("acme", IndexEntry("x", "x", None), np.ones(4, dtype=np.float32))
    query = np.ones((1, 4), dtype=np.float32)
    (result,) = ranker_one.rank_batch(query, [RankRequest("acme", 1)])
    assert [r.article_id for r in result] == ["x"]
    assert ranker_two.rank_batch(query, [RankRequest("acme", 1)]) == [[]]
    assert two.account("acme") is None
