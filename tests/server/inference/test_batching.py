"""MicroBatcher semantics with a fake backend: flushing, errors, cancellation, admission."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import pytest
from serving_helpers import FakeBackend

from server.errors import InvalidRequest, Overloaded
from server.inference.admission import DEADLINE_FACTOR
from server.inference.backends.base import BackendError, BackendUnavailable
from server.inference.batching import QUERY_CHARS_PER_TOKEN, BatchingConfig, MicroBatcher
from server.inference.compute_gate import ComputeGate, Lane

LONG_WAIT_MS = 30_000.0  # a flush that depended on this wait would time the test out
TEST_TIMEOUT_S = 10.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            await test()

    asyncio.run(bounded())


class EchoRanker:
    """Each query's result is (its payload, its vector)."""

    def rank_batch(
        self, vectors: np.ndarray, payloads: Sequence[object]
    ) -> list[tuple[object, np.ndarray]]:
        return [(payload, vector) for payload, vector in zip(payloads, vectors, strict=True)]


class NoResultsRanker:
    def rank_batch(self, vectors: np.ndarray, payloads: Sequence[object]) -> list[object]:
        return []


class LaneRecorder:
    def __init__(self, lanes: list[tuple[Lane, int]]) -> None:
        self.lanes = lanes

    def observe_batch(self, lane: Lane, rows: int, seconds: float) -> None:
        self.lanes.append((lane, rows))


echo_rows = EchoRanker()


def make_batcher(
    backend: FakeBackend,
    lanes: list[tuple[Lane, int]] | None = None,
    gate: ComputeGate | None = None,
    **config: object,
) -> MicroBatcher:
    batcher = MicroBatcher(
        backend,
        BatchingConfig(**config),
        echo_rows,
        observer=None if lanes is None else LaneRecorder(lanes),
        gate=gate,
    )
    batcher.start()
    return batcher


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until `condition` holds (bounded by TEST_TIMEOUT_S)."""
    while not condition():
        await asyncio.sleep(0)


def test_flushes_when_the_batch_is_full() -> None:
    async def test() -> None:
        backend = FakeBackend(1)
        batcher = make_batcher(backend, max_batch_size=4, max_wait_ms=LONG_WAIT_MS)
        rows = [[2, 10, 3], [2, 11, 12, 3], [2, 3], [2, 13, 3]]
        results = await asyncio.gather(*(batcher.query(r, i) for i, r in enumerate(rows)))
        assert backend.calls == [(4, 4)]  # one call, padded to the longest row
        assert [payload for payload, _ in results] == [0, 1, 2, 3]
        await batcher.close()

    run(test)


def test_flushes_after_the_wait_when_not_full() -> None:
    async def test() -> None:
        backend = FakeBackend(1)
        batcher = make_batcher(backend, max_batch_size=32, max_wait_ms=10)
        results = await asyncio.gather(*(batcher.query([2, 10 + i, 3], i) for i in range(3)))
        assert backend.calls == [(3, 3)]
        vectors = np.stack([vector for _, vector in results])
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
        await batcher.close()

    run(test)


def test_a_batch_is_embedded_per_length_bucket_in_caller_order() -> None:
    async def test() -> None:
        backend = FakeBackend(1, max_length=128)
        batcher = make_batcher(backend, max_batch_size=4, max_wait_ms=LONG_WAIT_MS)
        long_row = [2, *range(20, 60), 3]  # 42 tokens: the 64-token bucket
        rows = [[2, 10, 3], long_row, [2, 11, 12, 3], [2, *range(30, 50), 3]]
        results = await asyncio.gather(*(batcher.query(r, i) for i, r in enumerate(rows)))
        # Short rows are not padded to the long ones: one padded group per length
        # class, all three in one backend call.
        assert sorted(backend.calls) == [(1, 22), (1, 42), (2, 4)]
        assert backend.group_calls == [3]
        assert [payload for payload, _ in results] == [0, 1, 2, 3]
        alone = FakeBackend(1, max_length=128)
        for (_, vector), row in zip(results, rows, strict=True):
            (expected,) = await alone.embed(np.asarray([row], dtype=np.int32))
            np.testing.assert_allclose(vector, expected, atol=1e-6)
        await batcher.close()

    run(test)


def test_an_error_reaches_every_caller_of_the_batch() -> None:
    async def test() -> None:
        backend = FakeBackend(1, fail_with=BackendError("model exploded"))
        batcher = make_batcher(backend, max_batch_size=3, max_wait_ms=LONG_WAIT_MS)
        outcomes = await asyncio.gather(
            *(batcher.query([2, 10, 3], i) for i in range(3)), return_exceptions=True
        )
        assert len(backend.calls) == 1
        assert all(isinstance(o, BackendError) and "exploded" in str(o) for o in outcomes)
        # The worker survives a failed batch.
        backend.fail_with = None
        assert (await asyncio.gather(*(batcher.query([2, 3], i) for i in range(3))))[2][0] == 2
        await batcher.close()

    run(test)


def test_a_result_count_mismatch_fails_the_whole_batch() -> None:
    class ShortBackend(FakeBackend):
        async def embed(self, token_ids: np.ndarray) -> np.ndarray:
            return (await super().embed(token_ids))[:-1]

    async def test() -> None:
        batcher = make_batcher(ShortBackend(1), max_batch_size=2, max_wait_ms=LONG_WAIT_MS)
        outcomes = await asyncio.gather(
            batcher.query([2, 3], "a"), batcher.query([2, 3], "b"), return_exceptions=True
        )
        assert all(
            isinstance(o, BackendError) and "1 vectors for a batch of 2" in str(o) for o in outcomes
        )
        await batcher.close()

    run(test)


def test_a_finisher_count_mismatch_fails_the_whole_batch() -> None:
    async def test() -> None:
        batcher = MicroBatcher(FakeBackend(1), BatchingConfig(max_batch_size=2), NoResultsRanker())
        batcher.start()
        outcomes = await asyncio.gather(
            batcher.query([2, 3], "a"), batcher.query([2, 3], "b"), return_exceptions=True
        )
        assert all(isinstance(o, BackendError) for o in outcomes)
        await batcher.close()

    run(test)


def test_callers_that_have_gone_are_skipped() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, max_batch_size=8, max_wait_ms=0)
        first = asyncio.create_task(batcher.query([2, 10, 3], "first"))
        await until(lambda: len(backend.calls) == 1)  # batch 1 is in the backend, held
        gone = asyncio.create_task(batcher.query([2, 11, 12, 13, 3], "gone"))
        stays = asyncio.create_task(batcher.query([2, 14, 3], "stays"))
        await until(lambda: batcher.depth(Lane.QUERY) == 2)
        gone.cancel()
        backend.gate.set()
        assert (await first)[0] == "first"
        assert (await stays)[0] == "stays"
        assert gone.cancelled()
        assert backend.calls == [(1, 3), (1, 3)]  # the gone row was neither sent nor padded for
        await batcher.close()

    run(test)


def test_a_full_queue_rejects_at_once() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, max_batch_size=2, max_queue=2, max_wait_ms=0)
        in_flight = [asyncio.create_task(batcher.query([2, 3], i)) for i in range(2)]
        await until(lambda: len(backend.calls) == 1)
        queued = [asyncio.create_task(batcher.query([2, 3], i)) for i in range(2, 4)]
        await until(lambda: batcher.depth(Lane.QUERY) == 2)
        with pytest.raises(Overloaded):
            await batcher.query([2, 3], "one too many")  # raises without waiting for the gate
        backend.gate.set()
        assert [r[0] for r in await asyncio.gather(*in_flight, *queued)] == [0, 1, 2, 3]
        await batcher.close()

    run(test)


def test_a_dead_worker_fails_its_batch_and_later_calls() -> None:
    class Fatal(BaseException):
        """Not an Exception: escapes the per-batch handler and kills the worker."""

    async def test() -> None:
        backend = FakeBackend(1, fail_with=Fatal())  # type: ignore[arg-type]
        batcher = make_batcher(backend, max_batch_size=2, max_wait_ms=LONG_WAIT_MS)
        outcomes = await asyncio.gather(
            batcher.query([2, 3], "a"), batcher.query([2, 3], "b"), return_exceptions=True
        )
        assert all(isinstance(o, BackendUnavailable) for o in outcomes)
        await until(lambda: not batcher.healthy)
        with pytest.raises(BackendUnavailable):
            await batcher.query([2, 3], "later")
        await batcher.close()

    run(test)


def test_close_fails_waiting_callers() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, max_batch_size=1, max_wait_ms=0)
        in_flight = asyncio.create_task(batcher.query([2, 3], "a"))
        await until(lambda: len(backend.calls) == 1)
        queued = asyncio.create_task(batcher.query([2, 3], "b"))
        await until(lambda: batcher.depth(Lane.QUERY) == 1)
        await batcher.close()
        for task in (in_flight, queued):
            with pytest.raises(BackendUnavailable):
                await task

    run(test)


def test_queries_go_first_but_articles_get_a_bounded_share() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        lanes: list[tuple[Lane, int]] = []
        batcher = make_batcher(
            backend, lanes, max_batch_size=2, ingest_max_batch_size=2, ingest_every=2, max_wait_ms=0
        )
        held = asyncio.create_task(batcher.query([2, 3], "held"))
        await until(lambda: len(backend.calls) == 1)
        documents = asyncio.create_task(batcher.embed_documents([[2, 20, 21, 3]] * 4))
        queries = [asyncio.create_task(batcher.query([2, 3], i)) for i in range(6)]
        await until(lambda: batcher.depth(Lane.QUERY) == 6 and batcher.depth(Lane.INGEST) == 4)
        backend.gate.set()
        await asyncio.gather(held, documents, *queries)
        q, i = Lane.QUERY, Lane.INGEST
        assert lanes == [(q, 1), (q, 2), (i, 2), (q, 2), (q, 2), (i, 2)]
        await batcher.close()

    run(test)


def test_articles_are_embedded_in_order_in_small_batches() -> None:
    async def test() -> None:
        backend = FakeBackend(1)
        batcher = make_batcher(backend, ingest_max_batch_size=2, ingest_max_queue=2)
        documents = [[2, 10 + i, 3] for i in range(5)]
        with pytest.raises(Overloaded):
            await batcher.embed_documents(documents)  # 5 rows never fit a queue of 2
        vectors = await batcher.embed_documents(documents, wait_for_room=True)
        assert vectors.shape == (5, backend.dim) and vectors.dtype == np.float32
        assert [rows for rows, _ in backend.calls] == [2, 2, 1]
        np.testing.assert_allclose(vectors[3], (await backend.embed(np.array([[2, 13, 3]])))[0])
        await batcher.close()

    run(test)


def test_a_single_article_is_admitted_while_a_bulk_import_waits() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, ingest_max_batch_size=2, ingest_max_queue=4)
        bulk = asyncio.create_task(batcher.embed_documents([[2, 10, 3]] * 10, wait_for_room=True))
        await until(lambda: len(backend.calls) == 1 and batcher.depth(Lane.INGEST) == 2)
        single = asyncio.create_task(batcher.embed_documents([[2, 11, 3]]))  # no waiting
        await until(lambda: batcher.depth(Lane.INGEST) == 3)
        backend.gate.set()
        assert (await bulk).shape == (10, backend.dim)
        assert (await single).shape == (1, backend.dim)
        await batcher.close()

    run(test)


@pytest.mark.parametrize(
    "config",
    [
        {"max_batch_size": 0},
        {"max_batch_size": 2.5},
        {"max_wait_ms": -1},
        {"max_wait_ms": float("nan")},
        {"max_queue": 4, "max_batch_size": 8},
        {"ingest_max_batch_size": 0},
        {"ingest_max_queue": 1, "ingest_max_batch_size": 2},
        {"ingest_every": 0},
        {"max_queue_ms": -1},
        {"max_queue_ms": float("inf")},
        {"max_queue_ms": float("nan")},
    ],
)
def test_bad_settings_are_rejected(config: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BatchingConfig(**config)


def test_the_constructor_wants_a_config() -> None:
    with pytest.raises(TypeError):
        MicroBatcher(FakeBackend(1), {"max_batch_size": 2}, echo_rows)  # type: ignore[arg-type]


def test_the_compute_gate_serves_queries_then_writes_then_backfill() -> None:
    async def test() -> None:
        gate = ComputeGate()
        order: list[str] = []
        release = asyncio.Event()

        async def hold(lane: Lane, name: str) -> None:
            async with gate.hold(lane):
                order.append(name)
                if name == "first":
                    await release.wait()

        first = asyncio.create_task(hold(Lane.BACKFILL, "first"))
        await until(lambda: order == ["first"])
        waiting = [
            asyncio.create_task(hold(lane, name))
            for lane, name in [
                (Lane.BACKFILL, "backfill"),
                (Lane.INGEST, "ingest"),
                (Lane.QUERY, "query 1"),
                (Lane.QUERY, "query 2"),
            ]
        ]
        gone = asyncio.create_task(hold(Lane.QUERY, "cancelled"))
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        await asyncio.gather(first, *waiting)
        assert order == ["first", "query 1", "query 2", "ingest", "backfill"]
        async with gate.hold(Lane.BACKFILL):  # free again: no waiter left holding it
            pass

    run(test)


def test_background_embedding_waits_for_queries_of_another_version() -> None:
    """Two versions' batchers share one gate: a query batch of the active version runs
    before a re-embedding step of the candidate that asked later."""

    async def test() -> None:
        gate = ComputeGate()
        active, candidate = FakeBackend(1, gate=asyncio.Event()), FakeBackend(2)
        order: list[str] = []
        serving = MicroBatcher(active, BatchingConfig(max_wait_ms=0), echo_rows, gate=gate)
        upgrading = MicroBatcher(candidate, BatchingConfig(), echo_rows, gate=gate)
        serving.start()
        upgrading.start()

        async def query(name: str) -> None:
            await serving.query([2, 10, 3], name)
            order.append(name)

        async def backfill() -> None:
            await upgrading.embed_background([[2, 11, 3]])
            order.append("backfill")

        q1 = asyncio.create_task(query("query 1"))
        await until(lambda: len(active.calls) == 1)  # holds the gate, stalled in the backend
        q2 = asyncio.create_task(query("query 2"))  # queued in its batcher, not at the gate
        await until(lambda: serving.depth(Lane.QUERY) == 1)
        step = asyncio.create_task(backfill())
        await asyncio.sleep(0.01)
        assert active.gate is not None
        active.gate.set()
        await asyncio.gather(q1, q2, step)
        assert order == ["query 1", "query 2", "backfill"]
        await serving.close()
        await upgrading.close()

    run(test)


class WordTokenizer:
    """Token ids from word lengths (2 = [CLS], 3 = [SEP]); records each call's texts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def encode(self, texts: Sequence[str]) -> list[list[int]]:
        self.calls.append(list(texts))
        return [
            [2, *(10 + len(word) for word in text.split()), 3] if text else [] for text in texts
        ]


def make_text_batcher(
    backend: FakeBackend, tokenizer: WordTokenizer, **config: object
) -> MicroBatcher:
    batcher = MicroBatcher(backend, BatchingConfig(**config), echo_rows, tokenizer=tokenizer)
    batcher.start()
    return batcher


def test_query_texts_are_tokenized_once_per_batch() -> None:
    async def test() -> None:
        backend, tokenizer = FakeBackend(1), WordTokenizer()
        batcher = make_text_batcher(backend, tokenizer, max_batch_size=3, max_wait_ms=LONG_WAIT_MS)
        texts = ["reset my password", "printer", "page numbers please"]
        results = await asyncio.gather(*(batcher.query_text(t, i) for i, t in enumerate(texts)))
        assert tokenizer.calls == [texts]  # one call for the whole batch
        assert [payload for payload, _ in results] == [0, 1, 2]
        assert backend.calls == [(3, 5)]  # one backend call, padded to the longest row
        await batcher.close()

    run(test)


def test_a_text_without_tokens_fails_only_its_caller() -> None:
    async def test() -> None:
        backend, tokenizer = FakeBackend(1), WordTokenizer()
        batcher = make_text_batcher(backend, tokenizer, max_batch_size=3, max_wait_ms=LONG_WAIT_MS)
        outcomes = await asyncio.gather(
            batcher.query_text("reset", 0),
            batcher.query_text("", 1),
            batcher.query_text("print it", 2),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], InvalidRequest)
        assert [outcome[0] for outcome in (outcomes[0], outcomes[2])] == [0, 2]
        assert backend.calls == [(2, 4)]  # the empty text never reached the backend
        await batcher.close()

    run(test)


def test_a_refused_query_text_is_never_tokenized() -> None:
    async def test() -> None:
        backend, tokenizer = FakeBackend(1), WordTokenizer()
        backend.gate = asyncio.Event()
        batcher = make_text_batcher(
            backend, tokenizer, max_batch_size=1, max_queue=1, max_wait_ms=0
        )
        running = asyncio.create_task(batcher.query_text("first", 0))
        await until(lambda: len(backend.calls) == 1)
        queued = asyncio.create_task(batcher.query_text("second", 1))
        await until(lambda: batcher.depth(Lane.QUERY) == 1)
        with pytest.raises(Overloaded):
            await batcher.query_text("x" * 100_000, 2)
        backend.gate.set()
        await asyncio.gather(running, queued)
        assert tokenizer.calls == [["first"], ["second"]]
        await batcher.close()

    run(test)


def test_a_query_expected_to_wait_too_long_is_refused_at_once() -> None:
    async def test() -> None:
        backend, tokenizer = FakeBackend(1, gate=asyncio.Event()), WordTokenizer()
        batcher = make_text_batcher(
            backend, tokenizer, max_batch_size=2, max_wait_ms=0, max_queue_ms=1000
        )
        batcher.admission.observe(2, 1.0)  # served so far: 2 rows/s
        in_flight = [asyncio.create_task(batcher.query_text("reset", i)) for i in range(2)]
        await until(lambda: len(backend.calls) == 1)
        # What is left of the running batch of 2: under 1 s, not over the limit.
        queued = asyncio.create_task(batcher.query_text("printer", 2))
        await until(lambda: batcher.depth(Lane.QUERY) == 1)
        with pytest.raises(Overloaded, match=r"expected wait 1\d{3} ms"):
            await batcher.query_text("refused text", 3)  # and one queued: 0.5 s more
        backend.gate.set()
        assert [r[0] for r in await asyncio.gather(*in_flight, queued)] == [0, 1, 2]
        assert "refused text" not in [text for call in tokenizer.calls for text in call]
        await batcher.close()

    run(test)


def test_the_rate_comes_from_query_batches_and_frees_room_as_they_speed_up() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, max_batch_size=1, max_wait_ms=0, max_queue_ms=100)
        batcher.admission.observe(1, 1.0)  # one row a second: one row ahead is too many
        held = asyncio.create_task(batcher.query([2, 3], "held"))
        await until(lambda: len(backend.calls) == 1)
        with pytest.raises(Overloaded):
            await batcher.query([2, 3], "refused")
        before = batcher.admission.rows_per_s
        backend.gate.set()
        await held
        await batcher.embed_documents([[2, 10, 3]])  # article batches do not count
        assert batcher.admission.rows_per_s is not None and before is not None
        # The query batch ran in far less than a second: the rate went up.
        assert batcher.admission.rows_per_s > before
        rate_after_query = batcher.admission.rows_per_s
        await batcher.embed_documents([[2, 11, 3]] * 3)
        assert batcher.admission.rows_per_s == rate_after_query
        await batcher.close()

    run(test)


def test_before_any_batch_was_measured_only_the_row_cap_counts() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, max_batch_size=1, max_queue=3, max_queue_ms=1000)
        held = asyncio.create_task(batcher.query([2, 3], "held"))
        await until(lambda: len(backend.calls) == 1)
        queued = [asyncio.create_task(batcher.query([2, 3], i)) for i in range(3)]
        await until(lambda: batcher.depth(Lane.QUERY) == 3)
        with pytest.raises(Overloaded, match="full"):
            await batcher.query([2, 3], "fourth")
        assert batcher.admission.rows_per_s is None  # so no wait was estimated
        backend.gate.set()
        await asyncio.gather(held, *queued)
        await batcher.close()

    run(test)


def test_a_query_past_its_deadline_is_dropped_when_its_batch_is_taken() -> None:
    async def test() -> None:
        backend, tokenizer = FakeBackend(1, gate=asyncio.Event()), WordTokenizer()
        max_queue_ms = 20.0
        batcher = make_text_batcher(
            backend, tokenizer, max_batch_size=1, max_wait_ms=0, max_queue_ms=max_queue_ms
        )
        loop = asyncio.get_running_loop()
        held = asyncio.create_task(batcher.query_text("held", 0))
        await until(lambda: len(backend.calls) == 1)
        late = asyncio.create_task(batcher.query_text("too late", 1))
        await until(lambda: batcher.depth(Lane.QUERY) == 1)
        deadline = loop.time() + max_queue_ms * DEADLINE_FACTOR / 1000
        while loop.time() <= deadline:  # the queued query's deadline passes
            await asyncio.sleep(0.005)
        backend.gate.set()
        assert (await held)[0] == 0
        with pytest.raises(Overloaded, match="waited over 40 ms"):
            await late
        assert tokenizer.calls == [["held"]]  # never tokenized, never embedded
        assert len(backend.calls) == 1
        # The next query is admitted and answered as usual.
        assert (await batcher.query_text("fresh", 2))[0] == 2
        await batcher.close()

    run(test)


def test_without_max_queue_ms_nothing_expires() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, max_batch_size=1, max_wait_ms=0, max_queue_ms=0)
        batcher.admission.observe(1, 10.0)  # very slow: would refuse anything queued
        held = asyncio.create_task(batcher.query([2, 3], "held"))
        await until(lambda: len(backend.calls) == 1)
        queued = asyncio.create_task(batcher.query([2, 3], "queued"))
        await asyncio.sleep(0.01)
        backend.gate.set()
        assert [(await held)[0], (await queued)[0]] == ["held", "queued"]
        await batcher.close()

    run(test)


class TruncatingTokenizer(WordTokenizer):
    """Cuts rows to the fake backend's max length, as the version's tokenizer does."""

    async def encode(self, texts: Sequence[str]) -> list[list[int]]:
        rows = await super().encode(texts)
        return [[*row[: FakeBackend.max_length - 1], 3] for row in rows]


def test_a_long_query_text_is_cut_before_it_is_tokenized() -> None:
    async def test() -> None:
        backend, tokenizer = FakeBackend(1), TruncatingTokenizer()
        batcher = make_text_batcher(backend, tokenizer, max_batch_size=1, max_wait_ms=0)
        text = "printer " * 131_072  # 1 MiB
        payload, _ = await batcher.query_text(text, "long")
        assert payload == "long"
        ((seen,),) = tokenizer.calls
        assert len(seen) == backend.max_length * QUERY_CHARS_PER_TOKEN
        assert text.startswith(seen)
        await batcher.close()

    run(test)


class SlowFirstObserver:
    """Blocks the event loop for 50 ms after the first batch, as a busy process would."""

    def __init__(self) -> None:
        self.batches = 0

    def observe_batch(self, lane: Lane, rows: int, seconds: float) -> None:
        self.batches += 1
        if self.batches == 1:
            time.sleep(0.05)


def test_the_served_rate_is_how_fast_a_backlog_drains_gaps_included() -> None:
    """Through a backlog the time between batches counts (the process was busy
    elsewhere for 50 ms); an idle worker's wait for the next query does not."""

    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        config = BatchingConfig(max_batch_size=1, max_wait_ms=0, max_queue_ms=1000)
        batcher = MicroBatcher(backend, config, echo_rows, observer=SlowFirstObserver())
        batcher.start()
        first = asyncio.create_task(batcher.query([2, 3], 0))
        await until(lambda: len(backend.calls) == 1)
        queued = [asyncio.create_task(batcher.query([2, 3], i)) for i in (1, 2)]
        await until(lambda: batcher.depth(Lane.QUERY) == 2)
        backend.gate.set()
        await asyncio.gather(first, *queued)
        busy_rate = batcher.admission.rows_per_s
        # About 3 rows in 50 ms (weighted); thousands a second had the gap not counted.
        assert busy_rate is not None and busy_rate < 100
        await asyncio.sleep(0.05)  # idle: not a backlog
        await batcher.query([2, 3], 3)
        assert (batcher.admission.rows_per_s or 0) > busy_rate
        await batcher.close()

    run(test)


def test_the_compute_gate_lets_its_capacity_of_calls_run_at_once() -> None:
    async def test() -> None:
        gate = ComputeGate(capacity=2)
        inside: list[str] = []
        release = asyncio.Event()

        async def hold(lane: Lane, name: str) -> None:
            async with gate.hold(lane):
                inside.append(name)
                await release.wait()

        holders = [
            asyncio.create_task(hold(lane, name))
            for lane, name in [
                (Lane.BACKFILL, "first"),
                (Lane.BACKFILL, "second"),
                (Lane.INGEST, "ingest"),
                (Lane.QUERY, "query"),
            ]
        ]
        await until(lambda: len(inside) == 2)
        for _ in range(10):  # the other two stay out while both slots are held
            await asyncio.sleep(0)
        assert inside == ["first", "second"]
        release.set()
        await asyncio.gather(*holders)
        assert inside[2:] == ["query", "ingest"]  # the waiters by priority

    run(test)
    with pytest.raises(ValueError, match="capacity"):
        ComputeGate(capacity=0)


def test_with_two_instances_two_batches_run_at_once_and_answer_their_own_callers() -> None:
    async def test() -> None:
        release = asyncio.Event()
        backend = FakeBackend(1, gate=release)
        batcher = make_batcher(backend, gate=ComputeGate(2), max_batch_size=1, max_wait_ms=0)
        queries = [asyncio.create_task(batcher.query([2, n], f"q{n}")) for n in (10, 11, 12)]
        await until(lambda: len(backend.calls) == 2)  # two batches in the backend at once
        await until(lambda: batcher.depth(Lane.QUERY) == 1)  # the third waits for a slot
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(backend.calls) == 2
        release.set()
        results = await asyncio.gather(*queries)
        assert [payload for payload, _ in results] == ["q10", "q11", "q12"]
        for (_, vector), n in zip(results, (10, 11, 12), strict=True):
            expected = await FakeBackend(1).embed(np.array([[2, n]], dtype=np.int32))
            np.testing.assert_allclose(vector, expected[0], atol=1e-6)
        await batcher.close()

    run(test)


def test_close_fails_the_callers_of_every_batch_in_flight() -> None:
    async def test() -> None:
        backend = FakeBackend(1, gate=asyncio.Event())
        batcher = make_batcher(backend, gate=ComputeGate(2), max_batch_size=1, max_wait_ms=0)
        queries = [asyncio.create_task(batcher.query([2, 3], name)) for name in "ab"]
        await until(lambda: len(backend.calls) == 2)
        await batcher.close()
        for task in queries:
            with pytest.raises(BackendUnavailable):
                await task

    run(test)


@pytest.mark.parametrize(("instances", "batches"), [(1, [4]), (2, [2, 2]), (3, [2, 1, 1])])
def test_queries_that_arrive_together_are_shared_among_idle_instances(
    instances: int, batches: list[int]
) -> None:
    async def test() -> None:
        release = asyncio.Event()
        backend = FakeBackend(1, gate=release)
        batcher = make_batcher(
            backend, gate=ComputeGate(instances), max_batch_size=8, max_wait_ms=0
        )
        # All four are queued before the worker runs: clients in step, or a burst.
        queries = [asyncio.create_task(batcher.query([2, 3], n)) for n in range(4)]
        await until(lambda: len(backend.calls) == len(batches))
        assert [rows for rows, _ in backend.calls] == batches
        release.set()
        assert [payload for payload, _ in await asyncio.gather(*queries)] == [0, 1, 2, 3]
        await batcher.close()

    run(test)
