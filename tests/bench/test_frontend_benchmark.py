"""The front-end benchmark's parts that can go wrong quietly: stage rules, the anchor."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from bench.anchor_app import create_app
from bench.frontend_benchmark import (
    BATCHER,
    EVENT_LOOP,
    HANDOFF,
    HTTP,
    JSON_DECODE,
    METRICS,
    RESPONSE,
    STAGE_RULES,
    STARLETTE,
    TOKENIZATION,
    VALIDATION,
    Row,
    median_of,
    rounds_table,
    run_label,
    target_lines,
)
from loadtest.stack_profile import stage_of

LOOP = "Runner.run (asyncio/runners.py:118)"
ROUTE = (
    LOOP,
    "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422)",
    "Starlette.__call__ (starlette/applications.py:107)",
    "MetricsMiddleware.__call__ (server/http/metrics.py:168)",
    "Route.handle (starlette/routing.py:290)",
    "recommend (server/http/routes/recommendations.py:19)",
)
WORKER = (
    "Thread._bootstrap (threading.py:1002)",
    "_worker (concurrent/futures/thread.py:83)",
    "_WorkItem.run (concurrent/futures/thread.py:58)",
)


@pytest.mark.parametrize(
    ("frames", "stage"),
    [
        ((LOOP,), EVENT_LOOP),  # uvloop's own C code: no frame below the entry
        ((LOOP, "HttpToolsProtocol.data_received (uvicorn/protocols/http/h.py:174)"), HTTP),
        ((*ROUTE[:5],), STARLETTE),  # below the metrics middleware: not metrics
        ((*ROUTE[:4],), METRICS),
        ((*ROUTE, "read_json (server/http/payloads.py:45)"), JSON_DECODE),
        ((*ROUTE, "loads (json/__init__.py:359)", "JSONDecoder.decode (json/d.py:1)"), JSON_DECODE),
        ((*ROUTE, "parse_recommendation (server/http/payloads.py:167)"), VALIDATION),
        ((*ROUTE, "uuid4 (uuid.py:723)"), RESPONSE),
        ((*WORKER, "TextTokenizer.encode (kbrec/tokenization.py:48)"), TOKENIZATION),
        ((*WORKER[:2],), HANDOFF),  # an executor thread taking its next work item
        ((LOOP, "_chain_future.<locals>._set_state (asyncio/futures.py:383)"), HANDOFF),
        (
            (LOOP, "MicroBatcher._embed (server/inference/batching.py:396)", "pad_batch (k:65)"),
            BATCHER,
        ),
    ],
)
def test_stacks_get_their_stage(frames: tuple[str, ...], stage: str) -> None:
    assert stage_of(frames, STAGE_RULES) == stage


def test_the_anchor_answers_five_articles_and_checks_three_fields() -> None:
    client = TestClient(create_app())
    path = "/v1/recommendations"
    answer = client.post(path, json={"account_id": "writer", "text": "page numbers", "top_k": 5})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"request_id", "model_version", "articles"}
    assert [set(a) for a in body["articles"]] == [{"article_id", "title", "score"}] * 5
    for bad in (
        {"text": "x", "top_k": 5},
        {"account_id": "a", "text": "  ", "top_k": 5},
        {"account_id": "a", "text": "x", "top_k": 0},
        {"account_id": "a", "text": "x", "top_k": True},
        [1, 2],
    ):
        assert client.post(path, json=bad).status_code == 422
    assert client.post(path, content=b"{nope").status_code == 422
    assert client.get("/readyz").status_code == 200


class FakeWindow:
    def __init__(self, throughput: float) -> None:
        self.throughput = throughput


class FakeMeasured:
    """What a Row reads of a level: its throughput and the server's CPU per request."""

    def __init__(self, throughput: float, cpu_us: float) -> None:
        self.window = FakeWindow(throughput)
        self._cpu_us = cpu_us

    def ms_per_request(self, counter: str) -> float:
        return self._cpu_us / 1000


def row(system: str, c: int, throughput: float, cpu_us: float) -> Row:
    return Row(system, c, FakeMeasured(throughput, cpu_us))  # type: ignore[arg-type]


def test_rounds_are_judged_by_their_medians() -> None:
    rows = [
        row("anchor", 32, 10_000, 100),
        row("kbrec", 32, 2_000, 500),
        row("kbrec #2", 32, 6_000, 170),  # one lucky run must not pass the target
        row("kbrec #3", 32, 3_000, 330),
        row("kbrec", 8, 1_000, 900),
        row("kbrec #2", 8, 1_200, 800),
        row("kbrec #3", 8, 1_100, 850),
    ]
    runs = {"kbrec": [run_label("kbrec", i) for i in range(3)]}
    assert runs == {"kbrec": ["kbrec", "kbrec #2", "kbrec #3"]}
    assert median_of(rows, runs["kbrec"], 32) == (3_000, 330, pytest.approx(1e6 / 330))
    (line,) = target_lines(rows, runs, "anchor", 32)
    assert "30% of the anchor's req/s" in line and "median of 3 runs" in line
    assert "misses" in line
    table = rounds_table(rows, runs, [8, 32]).splitlines()
    assert table[2] == "| kbrec | closed c=8 | 3 | 1100 | 850 | 900, 800, 850 |"
    assert table[3] == "| kbrec | closed c=32 | 3 | 3000 | 330 | 500, 170, 330 |"
