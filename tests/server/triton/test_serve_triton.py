"""`kbrec serve --triton-url` end to end: real Triton, real `kbrec serve` processes.

The same articles and queries through Triton and through the embedded ONNX Runtime
backend give the same recommendations; Triton going away turns recommendations
into 503s and /readyz false, and its return heals both without restarting kbrec.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_helpers import REPO_ROOT, ServeProcess, wait_until
from triton_helpers import RestartableTriton

from kbrec.records import QUERIES_FILE
from local_triton.launcher import TritonServer

pytestmark = pytest.mark.triton


def seeded_db(corpus: Path, db: Path) -> Path:
    command = [sys.executable, "-m", "cli.main", "store", "import"]
    subprocess.run(
        [*command, "--corpus", str(corpus), "--db", str(db)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return db


def queries(corpus: Path) -> list[dict]:
    lines = (corpus / QUERIES_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def recommend(http: httpx.Client, account: str, text: str) -> httpx.Response:
    body = {"account_id": account, "text": text, "top_k": 5}
    return http.post("/v1/recommendations", json=body)


def ranked(response: httpx.Response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(a["article_id"], a["score"]) for a in response.json()["articles"]]


@pytest.fixture
def serve_on(tiny_model_repository: Path, tiny_corpus: Path, tmp_path: Path):
    """`kbrec serve` on a freshly seeded store, through Triton when given a URL."""
    started: list[ServeProcess] = []

    def start(name: str, *extra: str) -> ServeProcess:
        db = seeded_db(tiny_corpus, tmp_path / f"{name}.sqlite")
        process = ServeProcess("--repository", str(tiny_model_repository), "--db", str(db), *extra)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def http_of() -> Iterator:
    clients: list[httpx.Client] = []

    def client(url: str) -> httpx.Client:
        clients.append(httpx.Client(base_url=url, timeout=30))
        return clients[-1]

    yield client
    for client in clients:
        client.close()


def test_same_recommendations_as_the_embedded_backend(
    triton_server: TritonServer, tiny_corpus: Path, serve_on, http_of
) -> None:
    embedded = http_of(serve_on("embedded").url)
    through_triton = serve_on("triton", "--triton-url", triton_server.grpc_url)
    remote = http_of(through_triton.url)
    assert "Triton backend: grpc://" in through_triton.output()
    assert remote.get("/readyz").json() == {"status": "ready", "model_version": 1}
    for query in queries(tiny_corpus)[::3]:
        expected = ranked(recommend(embedded, query["account_id"], query["text"]))
        actual = ranked(recommend(remote, query["account_id"], query["text"]))
        assert [a for a, _ in actual] == [a for a, _ in expected], query
        assert [s for _, s in actual] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_triton_away_is_a_503_and_its_return_heals_without_restart(
    own_triton: RestartableTriton, tiny_corpus: Path, serve_on, http_of
) -> None:
    serve = serve_on("restart", "--triton-url", own_triton.launch.grpc_url, "--retry-after-s", "3")
    http = http_of(serve.url)
    query = queries(tiny_corpus)[0]
    before = ranked(recommend(http, query["account_id"], query["text"]))

    own_triton.stop()
    response = recommend(http, query["account_id"], query["text"])
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    error = response.json()["error"]
    assert error["code"] == "backend_unavailable" and "UNAVAILABLE" in error["message"]
    ready = http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert http.get("/v1/models").json()["active_version"] == 1  # still up, just not ready
    assert http.get("/healthz").status_code == 200  # alive: a restart would not help

    own_triton.start()  # same ports
    wait_until(lambda: http.get("/readyz").status_code == 200, "/readyz after Triton is back")
    assert ranked(recommend(http, query["account_id"], query["text"])) == before
    assert serve.process.poll() is None  # the same kbrec process throughout
