"""Helpers of the live-upgrade tests: versions to publish (valid, corrupt, Triton-ready),
an offline ranker per version, continuous recommendation traffic, and the scenario
that both the embedded and the Triton tests run against a live server.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from serving_helpers import (
    DIM,
    MAX_LENGTH,
    VOCAB_WORDS,
    build_bag_of_words,
    wait_until,
)

from conversion.convert import (
    PYCACHE_BLOCKER,
    PYCACHE_BLOCKER_TEXT,
    PYTHON_MODEL_FILE,
    PYTHON_MODEL_TEMPLATE,
)
from conversion.triton_config import render_config
from kbrec.records import Article, article_text
from kbrec.repository import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, model_dir, version_dir
from kbrec.repository import publish_version as publish
from kbrec.tokenization import TextTokenizer, pad_batch

Publisher = Callable[..., int]
STEADY = "steady"  # the account whose rankings are checked (never written during a test)
FRESH = "fresh"  # articles written while a backfill runs
BULK = "bulk"  # enough articles for a backfill to take a while


# --- versions ------------------------------------------------------------------


def add_python_backend_files(out: Path) -> None:
    """What `kbrec convert --backend python` adds to a version for the CPU Triton."""
    template = resources.files("conversion").joinpath(PYTHON_MODEL_TEMPLATE)
    (out / PYTHON_MODEL_FILE).write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    (out / PYCACHE_BLOCKER).write_text(PYCACHE_BLOCKER_TEXT, encoding="utf-8")


def version_publisher(repository: Path, *, triton: bool) -> Publisher:
    """publish(seed, kind="valid" | "truncated" | "wrong_dim") → version number.

    Every kind is published atomically (built aside, renamed into place), as
    `kbrec convert` does, so the watch never sees half a version.
    """
    if triton:
        config = render_config(model="encoder", backend="python", dim=DIM, max_length=MAX_LENGTH)
        model_dir(repository).mkdir(parents=True, exist_ok=True)
        (model_dir(repository) / CONFIG_FILE).write_text(config, encoding="utf-8")

    def publish_kind(seed: int, kind: str = "valid") -> int:
        def build(out: Path) -> None:
            build_bag_of_words(out, seed, metadata_dim=DIM // 2 if kind == "wrong_dim" else None)
            if kind == "truncated":  # after metadata.json recorded the full file's sha256
                data = (out / MODEL_FILE).read_bytes()
                (out / MODEL_FILE).write_bytes(data[: len(data) // 2])
            if triton:
                add_python_backend_files(out)

        return publish(repository, build)

    return publish_kind


# --- offline ranking -------------------------------------------------------------


class OfflineVersion:
    """A version's model and tokenizer run here, outside the server: the reference."""

    def __init__(self, repository: Path, number: int) -> None:
        path = version_dir(repository, number)
        self.session = ort.InferenceSession(str(path / MODEL_FILE))
        self.tokenizer = TextTokenizer(path / TOKENIZER_FILE, MAX_LENGTH)

    def embed(self, texts: list[str]) -> np.ndarray:
        ids = pad_batch(self.tokenizer.encode(texts))
        (vectors,) = self.session.run(None, {"input_ids": ids})
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def rank(self, text: str, articles: list[Article], top_k: int) -> list[tuple[str, float]]:
        matrix = self.embed([article_text(a) for a in articles])
        scores = matrix @ self.embed([text])[0]
        order = sorted(range(len(articles)), key=lambda i: (-scores[i], articles[i].article_id))
        return [(articles[i].article_id, float(scores[i])) for i in order[:top_k]]


# --- articles and traffic ----------------------------------------------------------


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(VOCAB_WORDS) for _ in range(count))


def make_articles(account: str, count: int, seed: int) -> list[Article]:
    rng = random.Random(seed)
    return [
        Article(account, f"{account}-{i:03d}", words(rng, 4), words(rng, 20), None)
        for i in range(count)
    ]


def import_articles(http: httpx.Client, articles: list[Article]) -> None:
    account = articles[0].account_id
    export = {
        "articles": [
            {"id": a.article_id, "title": a.title, "body": f"<p>{a.body}</p>"} for a in articles
        ]
    }
    response = http.post(f"/v1/accounts/{account}/articles/import", json=export, timeout=60)
    assert response.status_code == 200, response.text


@dataclass
class Response:
    status: int
    text: str
    version: int | None
    ranking: list[tuple[str, float]]


@dataclass
class Traffic:
    """Threads sending recommendations for STEADY without pause until stopped."""

    base_url: str
    queries: list[str]
    top_k: int
    threads: int = 3
    responses: list[Response] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for n in range(self.threads):
            worker = threading.Thread(target=self._send, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def _send(self, n: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            i = n
            while not self._stop.is_set():
                text = self.queries[i % len(self.queries)]
                i += self.threads
                body = {"account_id": STEADY, "text": text, "top_k": self.top_k}
                reply = http.post("/v1/recommendations", json=body)
                data = reply.json() if reply.status_code == 200 else {}
                ranking = [(a["article_id"], a["score"]) for a in data.get("articles", [])]
                self.responses.append(
                    Response(reply.status_code, text, data.get("model_version"), ranking)
                )

    def wait_for(self, count: int) -> None:
        start = len(self.responses)
        wait_until(lambda: len(self.responses) >= start + count, f"{count} responses")


def models(http: httpx.Client) -> dict:
    response = http.get("/v1/models")
    assert response.status_code == 200, response.text
    return response.json()


def version_entry(snapshot: dict, number: int) -> dict:
    return next(v for v in snapshot["versions"] if v["version"] == number)


@dataclass
class ModelsWatcher:
    """Polls /v1/models in a thread, keeping every snapshot (what an operator would see)."""

    base_url: str
    snapshots: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ModelsWatcher:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self._stop.wait(0.02):
                self.snapshots.append(models(http))


def check_rankings(responses: list[Response], offline: dict[int, OfflineVersion], articles, k):
    """Every response is a 200 whose ranking is what its reported version computes."""
    failed = [r for r in responses if r.status != 200]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[0]}"
    cache: dict[tuple[int, str], list[tuple[str, float]]] = {}
    for response in responses:
        assert response.version in offline, response
        key = (response.version, response.text)
        if key not in cache:
            cache[key] = offline[response.version].rank(response.text, articles, k)
        expected = cache[key]
        assert [a for a, _ in response.ranking] == [a for a, _ in expected], response
        np.testing.assert_allclose(
            [s for _, s in response.ranking], [s for _, s in expected], atol=1e-5
        )


def stored_vector_counts(db: Path) -> dict[int, int]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT model_version, count(*) FROM embeddings GROUP BY model_version"
        )
        return dict(rows.fetchall())


def version_roles(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT version, role FROM model_versions").fetchall())


def snapshots_by_active(snapshots: list[dict]) -> Iterator[tuple[int, dict | None]]:
    for snapshot in snapshots:
        yield snapshot["active_version"], snapshot["upgrade"]


@dataclass(frozen=True)
class Corpus:
    steady: list[Article]
    bulk: list[Article]
    fresh: list[Article]

    @property
    def total(self) -> int:
        return len(self.steady) + len(self.bulk)


def seed_articles(http: httpx.Client, bulk: int = 300) -> Corpus:
    corpus = Corpus(
        make_articles(STEADY, 24, seed=1), make_articles(BULK, bulk, 2), make_articles(FRESH, 5, 3)
    )
    import_articles(http, corpus.steady)
    import_articles(http, corpus.bulk)
    return corpus


def put_article(http: httpx.Client, article: Article) -> None:
    body = {"title": article.title, "body": article.body}
    response = http.put(
        f"/v1/accounts/{article.account_id}/articles/{article.article_id}", json=body
    )
    assert response.status_code in (200, 201), response.text


def check_fresh(http: httpx.Client, corpus: Corpus, reference: OfflineVersion, version: int):
    """Articles written during a backfill rank, on `version`, exactly as offline."""
    for article in corpus.fresh:
        body = {"account_id": FRESH, "text": article.title, "top_k": len(corpus.fresh)}
        response = http.post("/v1/recommendations", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["model_version"] == version
        expected = reference.rank(article.title, corpus.fresh, len(corpus.fresh))
        assert [a["article_id"] for a in data["articles"]] == [a for a, _ in expected]


def activate(http: httpx.Client, number: int) -> httpx.Response:
    return http.post(f"/v1/models/{number}/activate")


def wait_active(http: httpx.Client, number: int) -> dict:
    snapshot: dict = {}

    def switched() -> bool:
        nonlocal snapshot
        snapshot = models(http)
        return snapshot["active_version"] == number

    wait_until(switched, f"version {number} active", deadline_s=120)
    return snapshot


def wait_state(http: httpx.Client, number: int, state: str) -> dict:
    entry: dict = {}

    def reached() -> bool:
        nonlocal entry
        found = [v for v in models(http)["versions"] if v["version"] == number]
        entry = found[0] if found else {}
        return entry.get("state") == state

    wait_until(reached, f"version {number} {state}", deadline_s=120)
    return entry


def run_upgrade_scenario(base_url: str, repository: Path, db: Path, publish_kind: Publisher):
    """Upgrade 1 → 2 under traffic, writes during the backfill, rollback to 1 and back,
    corrupt versions 3 (truncated) and 4 (wrong dimension) rejected while 2 serves."""
    with httpx.Client(base_url=base_url, timeout=60) as http:
        corpus = seed_articles(http)
        queries = [words(random.Random(i), 3) for i in range(12)]
        top_k = len(corpus.steady)  # the whole account: a missing vector would show
        offline = {1: OfflineVersion(repository, 1)}
        with ModelsWatcher(base_url) as watcher, Traffic(base_url, queries, top_k) as traffic:
            traffic.wait_for(20)
            assert publish_kind(seed=1) == 2
            offline[2] = OfflineVersion(repository, 2)
            wait_until(lambda: models(http)["upgrade"] is not None, "the upgrade to start")
            for article in corpus.fresh:  # written while version 2 is being backfilled
                put_article(http, article)
            assert http.delete(f"/v1/accounts/{BULK}/articles/{BULK}-000").status_code == 204
            upgrade_seen = models(http)["upgrade"]
            after = wait_active(http, 2)
            traffic.wait_for(20)
        check_rankings(traffic.responses, offline, corpus.steady, top_k)
        assert {r.version for r in traffic.responses} == {1, 2}
        # The upgrade was visible, and the switch came only once every article had a vector.
        assert upgrade_seen is not None and upgrade_seen["version"] == 2
        for active, upgrade in snapshots_by_active(watcher.snapshots):
            if upgrade is not None and upgrade["articles_remaining"] > 0:
                assert active == 1, upgrade
        total = corpus.total - 1 + len(corpus.fresh)
        assert after["upgrade"] is None
        assert version_entry(after, 2)["stored_vectors"] == total
        assert version_entry(after, 1)["stored_vectors"] == total  # writes reached it too
        assert version_entry(after, 1)["state"] == "previous"
        # Articles written during the backfill are recommendable on the new version ...
        check_fresh(http, corpus, offline[2], 2)
        # Two versions serve at once: the previous one answers when asked by number.
        pinned = Response(0, queries[0], None, [])
        body = {"account_id": STEADY, "text": pinned.text, "top_k": top_k, "model_version": 1}
        reply = http.post("/v1/recommendations", json=body)
        pinned.status, pinned.version = reply.status_code, reply.json()["model_version"]
        pinned.ranking = [(a["article_id"], a["score"]) for a in reply.json()["articles"]]
        assert pinned.version == 1
        check_rankings([pinned], offline, corpus.steady, top_k)

        # ... and on the previous one: a rollback is instant and complete.
        with Traffic(base_url, queries, top_k) as traffic:
            traffic.wait_for(10)
            rollback = activate(http, 1)
            traffic.wait_for(10)
        assert rollback.status_code == 200, rollback.text
        assert rollback.json()["switched"] is True and rollback.json()["seconds"] < 1
        check_rankings(traffic.responses, offline, corpus.steady, top_k)
        assert traffic.responses[-1].version == 1
        check_fresh(http, corpus, offline[1], 1)
        forward = activate(http, 2)
        assert forward.status_code == 200 and forward.json()["switched"] is True

        # Broken versions are rejected with the reason; version 2 serves on, unharmed.
        with Traffic(base_url, queries, top_k) as traffic:
            traffic.wait_for(10)
            assert publish_kind(seed=3, kind="truncated") == 3
            truncated = wait_state(http, 3, "failed")
            assert publish_kind(seed=4, kind="wrong_dim") == 4
            wrong_dim = wait_state(http, 4, "failed")
            traffic.wait_for(10)
        check_rankings(traffic.responses, offline, corpus.steady, top_k)
        assert {r.version for r in traffic.responses} == {2}
        assert "sha256" in truncated["error"]
        # Named differently by each backend, but both say the model's 16 is not the 8 declared.
        assert str(DIM) in wrong_dim["error"] and str(DIM // 2) in wrong_dim["error"], wrong_dim
        again = activate(http, 3)
        assert again.status_code == 422 and again.json()["error"]["code"] == "version_rejected"
        assert activate(http, 99).status_code == 404
        body = {"account_id": STEADY, "text": "x", "model_version": 3}
        not_serving = http.post("/v1/recommendations", json=body)
        assert not_serving.status_code == 409, not_serving.text
        assert not_serving.json()["error"]["code"] == "version_not_serving"
        final = models(http)
        assert final["active_version"] == 2
        assert version_entry(final, 1)["state"] == "previous"  # kept: the failures retired nothing
    assert version_roles(db) == {1: "previous", 2: "active", 3: "failed", 4: "failed"}
    assert stored_vector_counts(db) == {1: total, 2: total}
