"""Every bad input gets the one error shape and the right status, never a 500.

The app runs on a real uvicorn on a free loopback port, with a fake backend
injected through `create_app(backends=...)`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_helpers import (
    FakeBackend,
    FakeProvider,
    metric_value,
    serve_in_thread,
    wait_ready,
    wait_until,
)

from kbrec.records import Article
from kbrec.repository import ModelVersion
from server.app import create_app
from server.settings import Settings
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import ArticleWrite, StoredArticle

BODY_LIMIT = 65536
QUERY_LIMIT = 16384  # the default --max-query-bytes
IMPORT_LIMIT = 262144
RECOMMEND = "/v1/recommendations"
ARTICLE = "/v1/accounts/acme/articles/a1"
IMPORT = "/v1/accounts/acme/articles/import"


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


@pytest.fixture(scope="module")
def client(
    bow_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    settings = Settings.of(
        repository=bow_repository,
        db=tmp_path_factory.mktemp("errors") / "kbrec.sqlite",
        port=0,
        max_body_bytes=BODY_LIMIT,
        max_import_bytes=IMPORT_LIMIT,
    )
    app = create_app(settings, backends=FakeProvider())
    with serve_in_thread(app) as url:
        wait_ready(url)
        # Every body is declared JSON: what a wrong type gets is in test_auth.py (415).
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
            seeded = http.put(ARTICLE, json={"title": "reset password", "body": "how to"})
            assert seeded.status_code == 201, seeded.text
            yield http


RECOMMEND_CASES = [
    (b"{", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b'{"account_id": "acme", "text": NaN}', 400, "invalid_json"),
    (b'{"account_id": "acme", "text": "\xff\xfe"}', 400, "invalid_utf8"),
    (b'{"account_id": "acme", "text": "\\ud800 lone"}', 400, "invalid_unicode"),
    (b'{"account_id": "acme", "text": "x", "top_k": 1' + b"0" * 5000 + b"}", 400, "invalid_json"),
    (b"[]", 422, "validation_error"),
    (b'"text"', 422, "validation_error"),
    (b"{}", 422, "validation_error"),
    (b'{"text": "reset password"}', 422, "validation_error"),
    (b'{"account_id": "acme"}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": 42}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": ""}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": " \\n\\t "}', 422, "validation_error"),
    (b'{"account_id": 7, "text": "reset"}', 422, "validation_error"),
    (b'{"account_id": "bad id!", "text": "reset"}', 422, "invalid_id"),
    (b'{"account_id": "..", "text": "reset"}', 422, "invalid_id"),
    (b'{"account_id": "acme", "text": "reset", "top_k": 0}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": "reset", "top_k": 1000}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": "reset", "top_k": "5"}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": "reset", "top_k": true}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": "reset", "top_k": 2.5}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": "reset", "locale": "???"}', 422, "validation_error"),
    (b'{"account_id": "acme", "text": "reset", "locale": 5}', 422, "validation_error"),
    (b'{"account_id": "nobody", "text": "reset"}', 404, "unknown_account"),
]


@pytest.mark.parametrize(("body", "status", "code"), RECOMMEND_CASES)
def test_recommendation_errors(client: httpx.Client, body: bytes, status: int, code: str) -> None:
    response = client.post(RECOMMEND, content=body, headers={"content-type": "application/json"})
    assert_error(response, status, code)


def test_a_good_recommendation_still_works(client: httpx.Client) -> None:
    response = client.post(RECOMMEND, json={"account_id": "acme", "text": "reset password"})
    assert response.status_code == 200
    assert [a["article_id"] for a in response.json()["articles"]] == ["a1"]


def test_a_long_ticket_is_truncated_not_rejected(client: httpx.Client) -> None:
    text = "reset password " * 1000  # 2,000 words, 15,000 bytes: far over 32 tokens
    response = client.post(RECOMMEND, json={"account_id": "acme", "text": text})
    assert response.status_code == 200, response.text
    assert response.json()["articles"][0]["article_id"] == "a1"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("x" * QUERY_LIMIT, 200),
        ("x" * (QUERY_LIMIT + 1), 413),
        ("é" * (QUERY_LIMIT // 2), 200),  # two bytes each: exactly the limit
        ("é" * (QUERY_LIMIT // 2 + 1), 413),  # fewer characters than the limit, more bytes
        ("reset " * 10_000, 413),  # 60 kB: within the body limit, over the text limit
    ],
)
def test_a_query_text_over_its_byte_limit_is_413(
    client: httpx.Client, text: str, status: int
) -> None:
    response = client.post(RECOMMEND, json={"account_id": "acme", "text": text})
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        body = assert_error(response, 413, "text_too_large")
        assert str(QUERY_LIMIT) in body["error"]["message"]


def test_body_over_the_limit_is_413_with_or_without_content_length(client: httpx.Client) -> None:
    big = b'{"account_id": "acme", "text": "' + b"x" * BODY_LIMIT + b'"}'
    assert_error(client.post(RECOMMEND, content=big), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to trust
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    assert_error(client.post(RECOMMEND, content=chunks()), 413, "body_too_large")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/v1/accounts/acme/preferences", 404, "not_found"),
        ("GET", RECOMMEND, 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("GET", IMPORT.replace("import", "import/extra"), 404, "not_found"),
    ],
)
def test_unknown_routes_and_methods(
    client: httpx.Client, method: str, path: str, status: int, code: str
) -> None:
    assert_error(client.request(method, path), status, code)


def test_a_wrong_method_lists_the_allowed_ones(client: httpx.Client) -> None:
    response = client.patch(ARTICLE, json={})
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "DELETE"}
    assert client.get(RECOMMEND).headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (ARTICLE, b"{", 400, "invalid_json"),
        (ARTICLE, b'{"body": "text"}', 422, "validation_error"),
        (ARTICLE, b'{"title": "", "body": "text"}', 422, "validation_error"),
        (ARTICLE, b'{"title": "t"}', 422, "validation_error"),
        (ARTICLE, b'{"title": "t", "body": ["text"]}', 422, "validation_error"),
        (ARTICLE, b'{"title": "t", "body": "b", "locale": "e"}', 422, "validation_error"),
        ("/v1/accounts/acme/articles/bad%20id", b'{"title": "t", "body": "b"}', 422, "invalid_id"),
        ("/v1/accounts/b%C3%A4d/articles/a1", b'{"title": "t", "body": "b"}', 422, "invalid_id"),
        (
            f"/v1/accounts/acme/articles/{'x' * 129}",
            b'{"title": "t", "body": "b"}',
            422,
            "invalid_id",
        ),
    ],
)
def test_article_write_errors(
    client: httpx.Client, path: str, body: bytes, status: int, code: str
) -> None:
    assert_error(client.put(path, content=body), status, code)


def test_absent_articles_are_404(client: httpx.Client) -> None:
    assert_error(client.get("/v1/accounts/acme/articles/absent"), 404, "article_not_found")
    assert_error(client.delete("/v1/accounts/acme/articles/absent"), 404, "article_not_found")
    assert_error(client.get("/v1/accounts/nobody/articles/a1"), 404, "article_not_found")
    assert_error(client.get("/v1/accounts/acme/articles/b%20d"), 422, "invalid_id")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[]", 422, "invalid_export"),
        (b'{"articles": {}}', 422, "invalid_export"),
        (b'{"articles": [{"id": 1, "title": "t"}]}', 422, "invalid_export"),
        (b'{"articles": [{"id": -1, "title": "t", "body": ""}]}', 422, "invalid_export"),
        (
            b'{"articles": [{"id": 1, "title": "t", "body": "", "locale": "?"}]}',
            422,
            "invalid_export",
        ),
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
        (b'{"articles": [{"id": 1, "title": "\\udfff", "body": ""}]}', 400, "invalid_unicode"),
        (b'{"articles": [], "padding": "' + b"x" * IMPORT_LIMIT + b'"}', 413, "body_too_large"),
    ],
)
def test_import_errors(client: httpx.Client, body: bytes, status: int, code: str) -> None:
    assert_error(client.post(IMPORT, content=body), status, code)


def test_openapi_and_metrics_are_served(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/v1/recommendations" in document["paths"]
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    labels = {"method": "POST", "route": "/v1/recommendations", "status": "422"}
    assert metric_value(metrics.text, "kbrec_http_requests_total", labels) >= 1
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert metric_value(metrics.text, "kbrec_http_requests_total", unmatched) >= 1
    assert metric_value(metrics.text, "kbrec_ready") == 1
    assert metric_value(metrics.text, "kbrec_articles", {"model_version": "1"}) == 1
    assert metric_value(metrics.text, "kbrec_accounts", {"model_version": "1"}) == 1
    assert "account_id=" not in metrics.text  # no series per account


class HeldBackend(FakeBackend):
    """Every embed call waits (in a thread) until the test releases it."""

    release: threading.Event

    async def embed(self, token_ids: np.ndarray) -> np.ndarray:
        self.calls.append(token_ids.shape)
        await asyncio.to_thread(self.release.wait)
        return await FakeBackend.embed(FakeBackend(self.model_version), token_ids)


def held_backends(release: threading.Event, backends: list[HeldBackend]) -> FakeProvider:
    def make(version: ModelVersion) -> HeldBackend:
        backend = HeldBackend(version.number, version.metadata.dim, version.metadata.max_length)
        backend.release = release
        return backend

    return FakeProvider(backends, make)  # type: ignore[arg-type]


def seed_store(path: Path, articles: list[Article], vectors: dict[int, np.ndarray]) -> None:
    async def write() -> None:
        store = await SqliteArticleStore.open(path)
        stored = [
            ArticleWrite(StoredArticle(a, "2026-01-01T00:00:00+00:00"), vectors) for a in articles
        ]
        await store.write_articles(stored)
        await store.close()

    asyncio.run(write())


def test_overload_is_an_immediate_503_with_retry_after(
    bow_repository: Path, tmp_path: Path
) -> None:
    db = tmp_path / "kbrec.sqlite"
    vector = np.ones(16, dtype=np.float32) / 4
    seed_store(db, [Article("acme", "a1", "reset password", "body")], {1: vector})
    release, backends = threading.Event(), []
    settings = Settings.of(  # one instance: the held query holds the backend
        repository=bow_repository,
        db=db,
        port=0,
        max_batch_size=1,
        max_queue=1,
        retry_after_s=7,
        model_instances=1,
    )
    app = create_app(settings, backends=held_backends(release, backends))
    query = {"account_id": "acme", "text": "reset password"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_ready(url)
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(http.post, RECOMMEND, json=query)
            wait_until(lambda: len(backends[0].calls) == 1, "the first batch in the backend")
            queued = pool.submit(http.post, RECOMMEND, json=query)
            wait_until(
                lambda: (
                    metric_value(http.get("/metrics").text, "kbrec_queue_depth", {"lane": "query"})
                    == 1
                ),
                "a query waiting in the queue",
            )
            rejected = http.post(RECOMMEND, json=query)
            assert_error(rejected, 503, "overloaded")
            assert rejected.headers["retry-after"] == "7"
            release.set()
            assert held.result().status_code == 200
            assert queued.result().status_code == 200


def test_not_ready_while_the_index_builds(bow_repository: Path, tmp_path: Path) -> None:
    db = tmp_path / "kbrec.sqlite"
    seed_store(db, [Article("acme", "a1", "reset password", "body")], {})  # no vector yet
    release, backends = threading.Event(), []
    settings = Settings.of(repository=bow_repository, db=db, port=0)
    app = create_app(settings, backends=held_backends(release, backends))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_until(lambda: len(backends[0].calls) == 1, "the index build in the backend")
        response = http.get("/readyz")
        assert_error(response, 503, "not_ready")
        assert response.headers["retry-after"] == "1"
        assert http.get("/healthz").status_code == 200
        query = {"account_id": "acme", "text": "reset password"}
        assert_error(http.post(RECOMMEND, json=query), 503, "not_ready")
        assert_error(http.put(ARTICLE, json={"title": "t", "body": "b"}), 503, "not_ready")
        release.set()
        wait_ready(url)
        assert http.post(RECOMMEND, json=query).json()["articles"][0]["article_id"] == "a1"


@pytest.mark.parametrize("fails", [False, True])
def test_until_ready_says_whether_the_first_index_was_built(
    bow_repository: Path, tmp_path: Path, fails: bool
) -> None:
    # What `kbrec serve` waits for before it freezes the heap (server/heap.py).
    from server.inference.backends.base import BackendError
    from server.service import RecommendationService
    from server.storage.opening import open_store

    db = tmp_path / "kbrec.sqlite"
    seed_store(db, [Article("acme", "a1", "reset password", "body")], {})  # the build embeds it
    failure = BackendError("device lost") if fails else None
    provider = FakeProvider(
        make=lambda v: FakeBackend(
            v.number, v.metadata.dim, v.metadata.max_length, fail_with=failure
        )
    )
    settings = Settings.of(repository=bow_repository, db=db, port=0)

    async def test() -> None:
        service = RecommendationService(settings, provider, open_store)
        await service.start()
        try:
            assert await asyncio.wait_for(service.until_ready(), 30) is not fails
            assert service.ready is not fails
        finally:
            await service.stop()

    asyncio.run(test())


def test_a_failing_backend_is_503_not_500(bow_repository: Path, tmp_path: Path) -> None:
    from server.inference.backends.base import BackendError

    backends: list[FakeBackend] = []
    settings = Settings.of(repository=bow_repository, db=tmp_path / "kbrec.sqlite", port=0)
    app = create_app(settings, backends=FakeProvider(backends))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_ready(url)
        assert http.put(ARTICLE, json={"title": "reset password", "body": ""}).status_code == 201
        backends[0].fail_with = BackendError("device lost")
        response = http.post(RECOMMEND, json={"account_id": "acme", "text": "reset"})
        assert_error(response, 503, "backend_unavailable")
        assert "retry-after" in response.headers
        assert_error(
            http.put(ARTICLE, json={"title": "t", "body": "b"}), 503, "backend_unavailable"
        )
        # The failed write left the stored article as it was.
        assert http.get(ARTICLE).json()["title"] == "reset password"
