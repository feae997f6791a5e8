"""Overload over real HTTP: refusals by expected wait, deadlines, clients that leave,
and uvicorn's connection limit.

The app runs on a real uvicorn on a free loopback port with a fake backend whose
calls the test holds (and slows) from its own thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from serving_helpers import (
    DEADLINE_S,
    FakeBackend,
    FakeProvider,
    loopback_listener,
    metric_value,
    serve_in_thread,
    wait_ready,
    wait_until,
)
from starlette.applications import Starlette

from cli.commands.serve import uvicorn_config
from kbrec.repository import ModelVersion
from server.app import create_app
from server.inference.admission import DEADLINE_FACTOR
from server.settings import Settings

RECOMMEND = "/v1/recommendations"
ARTICLE = "/v1/accounts/acme/articles/a1"
QUERY = {"account_id": "acme", "text": "reset password"}


@dataclass
class ControlledBackend(FakeBackend):
    """Each call waits (in a thread) until `release` is set, then takes `delay_s`."""

    release: threading.Event = field(default_factory=threading.Event)
    delay_s: float = 0.0
    started: int = 0  # calls that reached the backend

    async def embed(self, token_ids: np.ndarray) -> np.ndarray:
        self.started += 1

        def wait() -> None:
            self.release.wait(DEADLINE_S)
            time.sleep(self.delay_s)

        await asyncio.to_thread(wait)
        return await super().embed(token_ids)


@dataclass
class Served:
    http: httpx.Client
    backend: ControlledBackend

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return metric_value(self.http.get("/metrics").text, name, labels)

    def query_rows_embedded(self) -> float:
        return self.metric("kbrec_embedded_rows_total", {"lane": "query"})

    def queued_queries(self) -> float:
        return self.metric("kbrec_queue_depth", {"lane": "query"})


def controlled_app(
    tmp_path: Path, repository: Path, **knobs: object
) -> tuple[Starlette, list[ControlledBackend]]:
    backends: list[ControlledBackend] = []

    def make(version: ModelVersion) -> ControlledBackend:
        backend = ControlledBackend(version.number, version.metadata.dim)
        backend.release.set()
        return backend

    settings = Settings.of(
        repository=repository, db=tmp_path / "kbrec.sqlite", port=0, max_wait_ms=0, **knobs
    )
    return create_app(settings, backends=FakeProvider(backends, make)), backends


@pytest.fixture
def served(
    request: pytest.FixtureRequest, bow_repository: Path, tmp_path: Path
) -> Iterator[Served]:
    """A server with one article, batches of one query on one model instance (a held
    query holds the backend); more knobs by indirect parameter."""
    knobs = getattr(request, "param", {})
    app, backends = controlled_app(
        tmp_path, bow_repository, max_batch_size=1, model_instances=1, **knobs
    )
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=DEADLINE_S) as http:
        wait_ready(url)
        put = http.put(ARTICLE, json={"title": "reset password", "body": "how to"})
        assert put.status_code == 201, put.text
        yield Served(http, backends[0])
        backends[0].release.set()  # nothing may stay held when the server stops


def hold_one_query(served: Served, pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    """A query that is in the backend, held there until the test releases it."""
    served.backend.release.clear()
    before = served.backend.started
    held = pool.submit(served.http.post, RECOMMEND, json=QUERY)
    wait_until(lambda: served.backend.started == before + 1, "the held query in the backend")
    return held


@pytest.mark.parametrize("served", [{"max_queue_ms": 100, "retry_after_s": 3}], indirect=True)
def test_a_query_expected_to_wait_too_long_is_refused_at_once(served: Served) -> None:
    # One query batch that takes a second: the served rate is at most one row a second,
    # so a running batch of one is expected to hold the next query for up to a second.
    served.backend.delay_s = 1.0
    assert served.http.post(RECOMMEND, json=QUERY).status_code == 200
    served.backend.delay_s = 0.0
    with ThreadPoolExecutor(1) as pool:
        held = hold_one_query(served, pool)  # nothing ahead of it: admitted
        started = time.perf_counter()
        refused = served.http.post(RECOMMEND, json=QUERY)
        refused_s = time.perf_counter() - started
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert "expected wait" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "3"
        assert refused_s < 1.0  # answered without waiting for the held batch
        served.backend.release.set()
        assert held.result().status_code == 200
    assert served.query_rows_embedded() == 2  # the refused one never reached the backend


@pytest.mark.parametrize("served", [{"max_queue_ms": 50}], indirect=True)
def test_a_query_past_its_deadline_gets_503_and_is_not_embedded(served: Served) -> None:
    with ThreadPoolExecutor(2) as pool:
        held = hold_one_query(served, pool)
        late = pool.submit(served.http.post, RECOMMEND, json=QUERY)
        wait_until(lambda: served.queued_queries() == 1, "a query waiting in the queue")
        time.sleep(50 * DEADLINE_FACTOR / 1000)  # its deadline passes while it waits
        served.backend.release.set()
        assert held.result().status_code == 200
        response = late.result()
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "overloaded"
        assert "waited over 100 ms" in response.json()["error"]["message"]
        assert "retry-after" in response.headers
    assert served.query_rows_embedded() == 1


def raw_request(url: str, body: bytes) -> socket.socket:
    """A recommendation POST on a connection of its own, sent but not read."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    head = (
        f"POST {RECOMMEND} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body)
    return connection


def test_a_query_whose_client_left_is_not_embedded(served: Served) -> None:
    gone_label = {"method": "POST", "route": RECOMMEND, "status": "499"}
    with ThreadPoolExecutor(1) as pool:
        held = hold_one_query(served, pool)
        leaving = raw_request(
            str(served.http.base_url), httpx.Request("POST", "/", json=QUERY).content
        )
        wait_until(lambda: served.queued_queries() == 1, "the leaving client's query queued")
        leaving.close()
        wait_until(
            lambda: served.metric("kbrec_http_requests_total", gone_label) == 1,
            "the handler of the client that left to end",
        )
        served.backend.release.set()
        assert held.result().status_code == 200
    # A later query runs after the one that left would have: it was dropped, not embedded.
    assert served.http.post(RECOMMEND, json=QUERY).status_code == 200
    assert served.query_rows_embedded() == 2


def test_connections_over_the_limit_get_503_from_uvicorn(
    bow_repository: Path, tmp_path: Path
) -> None:
    app, backends = controlled_app(tmp_path, bow_repository, limit_concurrency=2)
    server = uvicorn.Server(uvicorn_config(app, app.state.settings))
    listener = loopback_listener()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        wait_until(lambda: server.started, "uvicorn start")
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=DEADLINE_S) as http:
            assert http.put(ARTICLE, json={"title": "reset", "body": "b"}).status_code == 201
        wait_until(lambda: not server.server_state.connections, "idle connections to close")
        served = Served(httpx.Client(base_url=url, timeout=DEADLINE_S), backends[0])
        with served.http, ThreadPoolExecutor(1) as pool:
            held = hold_one_query(served, pool)  # its connection is the first of two
            with httpx.Client(base_url=url, timeout=DEADLINE_S) as other:
                refused = other.post(RECOMMEND, json=QUERY)
            assert refused.status_code == 503
            backends[0].release.set()
            assert held.result().status_code == 200
    finally:
        backends[0].release.set()
        server.should_exit = True
        thread.join(DEADLINE_S)
        listener.close()
