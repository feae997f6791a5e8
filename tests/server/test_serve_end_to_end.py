"""End to end: `kbrec serve` as a process, the real ONNX Runtime backend on the tiny
trained encoder, a real SQLite file, HTTP over a free loopback port.

A model trained for seconds does not rank by meaning, but an article's own title
shares all its tokens with the article, so used verbatim as the query it ranks the
article first among distinct articles.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serving_helpers import ServeProcess, metric_value, wait_until

pytestmark = pytest.mark.slow

TOPICS = [
    "Add page numbers to a document",
    "Insert a table with borders",
    "Change the default fonts",
    "Print a document on both sides",
    "Adjust the page margins",
    "Check spelling as you type",
    "Create a chart from your data",
    "Enter formulas in spreadsheet cells",
    "Merge cells in a row",
    "Protect a file with a password",
]


def article_body(title: str) -> str:
    return f"This article explains how to {title.lower()}. Follow the steps below."


def put(
    http: httpx.Client, account: str, article_id: str, title: str, **extra: str
) -> httpx.Response:
    body = {"title": title, "body": article_body(title), **extra}
    return http.put(f"/v1/accounts/{account}/articles/{article_id}", json=body)


def recommend(http: httpx.Client, account: str, text: str, top_k: int = 5, **extra: str) -> dict:
    response = http.post(
        "/v1/recommendations", json={"account_id": account, "text": text, "top_k": top_k, **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


def top_ids(result: dict) -> list[str]:
    return [article["article_id"] for article in result["articles"]]


@pytest.fixture(scope="module")
def process(
    tiny_model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    db = tmp_path_factory.mktemp("e2e") / "kbrec.sqlite"
    with ServeProcess("--repository", str(tiny_model_repository), "--db", str(db)) as process:
        yield process


@pytest.fixture(scope="module")
def server(process: ServeProcess) -> str:
    return process.url


def test_cpu_ranking_holds_numpys_blas_to_one_thread(process: ServeProcess) -> None:
    # The default, --ranking-threads 1, as the pool reports it after the cap (two idle
    # threads of its own would spin on the cores the encoder needs).
    assert "ranking on cpu (float32; BLAS threads: 1)" in process.output()


def test_serve_settles_its_garbage_collector_once_ready(process: ServeProcess) -> None:
    # server/heap.py: startup's and the index's objects frozen (so collections skip
    # them), in the serving process only.
    frozen = re.compile(r"garbage collector: (\d+) objects frozen once ready")
    wait_until(lambda: frozen.search(process.output()) is not None, "the heap settled")
    found = frozen.search(process.output())
    assert found is not None and int(found.group(1)) > 10_000


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def test_titles_rank_their_own_article_first_in_every_account(http: httpx.Client) -> None:
    accounts = {"writer": TOPICS[:7], "calc": TOPICS[3:], "draw": TOPICS[::2]}
    for account, titles in accounts.items():
        for i, title in enumerate(titles):
            assert put(http, account, f"{account}-{i}", title).status_code == 201
    for account, titles in accounts.items():
        for i, title in enumerate(titles):
            result = recommend(http, account, title)
            assert result["model_version"] == 1
            assert result["request_id"]
            assert top_ids(result)[0] == f"{account}-{i}", (account, title, result)
            assert result["articles"][0]["title"] == title
            scores = [article["score"] for article in result["articles"]]
            assert scores == sorted(scores, reverse=True)


def test_an_account_never_sees_another_accounts_articles(http: httpx.Client) -> None:
    for i, title in enumerate(TOPICS):
        assert put(http, "tenant-a", f"a{i}", title).status_code == 201
    assert put(http, "tenant-b", "b0", TOPICS[0]).status_code == 201
    for title in TOPICS:
        assert top_ids(recommend(http, "tenant-b", title, top_k=100)) == ["b0"]
        assert all(i.startswith("a") for i in top_ids(recommend(http, "tenant-a", title, 100)))
    assert len(recommend(http, "tenant-a", TOPICS[0], top_k=100)["articles"]) == len(TOPICS)


def test_a_put_is_recommendable_when_it_returns_and_a_delete_removes(http: httpx.Client) -> None:
    for i, title in enumerate(TOPICS[:5]):
        put(http, "live", f"old{i}", title)
    created = put(http, "live", "new", "Export contacts to a spreadsheet")
    assert created.status_code == 201
    assert created.json()["title"] == "Export contacts to a spreadsheet"
    assert top_ids(recommend(http, "live", "Export contacts to a spreadsheet"))[0] == "new"

    replaced = put(http, "live", "new", "Record a macro for repeated tasks")
    assert replaced.status_code == 200
    assert top_ids(recommend(http, "live", "Record a macro for repeated tasks"))[0] == "new"
    stored = http.get("/v1/accounts/live/articles/new").json()
    assert stored["title"] == "Record a macro for repeated tasks"
    assert stored["body"] == article_body("Record a macro for repeated tasks")

    assert http.delete("/v1/accounts/live/articles/new").status_code == 204
    assert "new" not in top_ids(recommend(http, "live", "Record a macro for repeated tasks", 100))
    assert http.get("/v1/accounts/live/articles/new").status_code == 404


def test_deleting_the_last_article_makes_the_account_unknown(http: httpx.Client) -> None:
    put(http, "short-lived", "only", TOPICS[0])
    assert top_ids(recommend(http, "short-lived", TOPICS[0])) == ["only"]
    assert http.delete("/v1/accounts/short-lived/articles/only").status_code == 204
    response = http.post("/v1/recommendations", json={"account_id": "short-lived", "text": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_account"


def test_locale_filter(http: httpx.Client) -> None:
    put(http, "intl", "en", TOPICS[0], locale="en-US")
    put(http, "intl", "de", TOPICS[1], locale="de")
    assert http.get("/v1/accounts/intl/articles/en").json()["locale"] == "en-us"
    assert top_ids(recommend(http, "intl", TOPICS[1], locale="en-us")) == ["en"]
    assert top_ids(recommend(http, "intl", TOPICS[0], locale="de")) == ["de"]
    assert top_ids(recommend(http, "intl", TOPICS[0], locale="fr")) == []


def test_zendesk_import(http: httpx.Client) -> None:
    export = {
        "articles": [
            {
                "id": 1000 + i,
                "title": title,
                "body": f"<p>This article explains how to <b>{title.lower()}</b>.</p>"
                "<p>Follow the steps below.</p><script>tracking()</script>",
                "locale": "en-us",
                "draft": False,
                "html_url": "https://example.zendesk.com/hc/articles/1",
            }
            for i, title in enumerate(TOPICS)
        ]
        + [{"id": 9999, "title": "Unpublished draft", "body": "<p>secret</p>", "draft": True}],
        "count": 11,
    }
    response = http.post("/v1/accounts/zendesk-co/articles/import", json=export)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "account_id": "zendesk-co",
        "mode": "upsert",
        "imported": 10,
        "created": 10,
        "updated": 0,
        "deleted": 0,
    }
    for i, title in enumerate(TOPICS):
        assert top_ids(recommend(http, "zendesk-co", title))[0] == str(1000 + i)
    stored = http.get("/v1/accounts/zendesk-co/articles/1000").json()
    assert stored["body"] == article_body(TOPICS[0]).replace(". ", ".\n")
    assert http.get("/v1/accounts/zendesk-co/articles/9999").status_code == 404
    again = http.post("/v1/accounts/zendesk-co/articles/import", json=export).json()
    assert (again["created"], again["updated"]) == (0, 10)


def test_concurrent_queries_are_batched_and_all_answered(http: httpx.Client) -> None:
    for i, title in enumerate(TOPICS):
        put(http, "busy", f"busy{i}", title)
    before = metric_value(http.get("/metrics").text, "kbrec_batch_size_sum", {"lane": "query"})
    queries = [TOPICS[i % len(TOPICS)] for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda text: recommend(http, "busy", text, top_k=1), queries))
    assert [top_ids(r) for r in results] == [[f"busy{i % len(TOPICS)}"] for i in range(64)]
    metrics = http.get("/metrics").text
    assert metric_value(metrics, "kbrec_batch_size_sum", {"lane": "query"}) - before == 64


def test_operational_endpoints(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready", "model_version": 1}
    models = http.get("/v1/models").json()
    assert models["active_version"] == 1
    assert [(v["version"], v["state"]) for v in models["versions"]] == [(1, "active")]
    assert http.get("/openapi.json").json()["info"]["title"] == "kbrec"


def test_a_restart_keeps_everything_without_re_embedding(
    tiny_model_repository: Path, tmp_path: Path
) -> None:
    db = tmp_path / "kbrec.sqlite"
    args = ("--repository", str(tiny_model_repository), "--db", str(db))
    with ServeProcess(*args) as first, httpx.Client(base_url=first.url, timeout=30) as http:
        for i, title in enumerate(TOPICS):
            assert put(http, "kept", f"k{i}", title).status_code == 201
        embedded = metric_value(
            http.get("/metrics").text, "kbrec_embedded_rows_total", {"lane": "ingest"}
        )
        assert embedded == len(TOPICS)
    assert first.stop() == -signal.SIGTERM
    assert "Application shutdown complete" in first.output()  # the store closed cleanly

    with ServeProcess(*args) as second, httpx.Client(base_url=second.url, timeout=30) as http:
        metrics = http.get("/metrics").text
        assert metric_value(metrics, "kbrec_embedded_rows_total", {"lane": "ingest"}) == 0
        assert metric_value(metrics, "kbrec_articles", {"model_version": "1"}) == 10
        for i, title in enumerate(TOPICS):
            assert top_ids(recommend(http, "kept", title))[0] == f"k{i}"
        assert http.get("/v1/accounts/kept/articles/k3").json()["title"] == TOPICS[3]
    assert "10 stored vectors, 0 articles to embed" in second.output()


def test_two_model_instances_answer_concurrent_queries(
    tiny_model_repository: Path, tmp_path: Path
) -> None:
    args = ["--repository", str(tiny_model_repository), "--db", str(tmp_path / "kbrec.sqlite")]
    with (
        ServeProcess(*args, "--model-instances", "2") as process,
        httpx.Client(base_url=process.url, timeout=30) as http,
    ):
        for i, title in enumerate(TOPICS):
            assert put(http, "pair", f"pair{i}", title).status_code == 201
        queries = [TOPICS[i % len(TOPICS)] for i in range(48)]
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda text: recommend(http, "pair", text, top_k=1), queries))
        assert [top_ids(r) for r in results] == [[f"pair{i % len(TOPICS)}"] for i in range(48)]
        # Each instance with its share of the cores (one on CI's two; at least one), and
        # a batch that runs alone with all of them.
        assert "2 instance(s) of 1 intra-op thread(s), a batch alone on 2" in process.output()
