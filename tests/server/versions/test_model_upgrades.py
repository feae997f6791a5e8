"""Live model upgrades on the embedded backend: real ONNX Runtime sessions of two
differently seeded models, a real SQLite file, HTTP on a free loopback port, and
recommendation traffic that never stops while versions come and go.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from serving_helpers import metric_value, serve_in_thread, wait_ready, wait_until
from upgrade_helpers import (
    BULK,
    STEADY,
    OfflineVersion,
    models,
    run_upgrade_scenario,
    seed_articles,
    stored_vector_counts,
    version_publisher,
    version_roles,
    wait_active,
)

from kbrec.repository import version_dir
from server.app import create_app
from server.settings import Settings

pytestmark = pytest.mark.slow


@contextmanager
def serving(repository: Path, db: Path, **overrides: object) -> Iterator[str]:
    options: dict[str, object] = {
        "repository_poll_s": 0.05,
        "backfill_share": 0.2,
        "backfill_step_tokens": 40,  # one article per step: the backfill takes a while
        **overrides,
    }
    settings = Settings.of(repository=repository, db=db, port=0, **options)  # type: ignore[arg-type]
    with serve_in_thread(create_app(settings)) as url:
        wait_ready(url)
        yield url


def test_upgrade_rollback_and_rejected_versions_under_traffic(tmp_path: Path) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish = version_publisher(repository, triton=False)
    assert publish(seed=0) == 1
    with serving(repository, db) as url:
        run_upgrade_scenario(url, repository, db, publish)


def test_a_restart_in_mid_backfill_resumes_it(tmp_path: Path) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish = version_publisher(repository, triton=False)
    publish(seed=0)
    with serving(repository, db, backfill_share=0.05) as url, httpx.Client(base_url=url) as http:
        corpus = seed_articles(http)
        publish(seed=1)

        def some_done() -> bool:
            upgrade = models(http)["upgrade"]
            return upgrade is not None and upgrade["articles_done"] >= 40

        wait_until(some_done, "part of the backfill")
    done_before = stored_vector_counts(db)[2]
    assert 40 <= done_before < corpus.total
    assert version_roles(db) == {1: "active", 2: "candidate"}

    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        first = models(http)
        assert first["active_version"] == 1
        if first["upgrade"] is not None:  # (a fast machine may already be done)
            assert first["upgrade"]["articles_done"] >= done_before
        wait_active(http, 2)
        metrics = http.get("/metrics").text
    # Only what was missing was embedded again.
    embedded = metric_value(metrics, "kbrec_embedded_rows_total", {"lane": "backfill"})
    assert embedded == corpus.total - done_before
    assert stored_vector_counts(db) == {1: corpus.total, 2: corpus.total}


def test_a_new_candidate_retires_the_previous_version_and_its_vectors(tmp_path: Path) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish = version_publisher(repository, triton=False)
    publish(seed=0)
    with serving(repository, db, backfill_share=1.0) as url, httpx.Client(base_url=url) as http:
        corpus = seed_articles(http, bulk=20)
        publish(seed=1)
        wait_active(http, 2)
        assert stored_vector_counts(db) == {1: corpus.total, 2: corpus.total}
        publish(seed=2)
        snapshot = wait_active(http, 3)
        states = {v["version"]: (v["state"], v["stored_vectors"]) for v in snapshot["versions"]}
        n = corpus.total
        assert states == {1: ("retired", 0), 2: ("previous", n), 3: ("active", n)}
        assert http.delete(f"/v1/accounts/{BULK}/articles/{BULK}-001").status_code == 204
    assert stored_vector_counts(db) == {2: corpus.total - 1, 3: corpus.total - 1}
    assert version_roles(db) == {1: "retired", 2: "previous", 3: "active"}


def test_startup_skips_a_version_that_fails_to_load(tmp_path: Path) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish = version_publisher(repository, triton=False)
    publish(seed=0)
    publish(seed=1, kind="wrong_dim")  # newest, valid files, but the model is not what it says
    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        snapshot = models(http)
        assert snapshot["active_version"] == 1
        assert [(v["version"], v["state"]) for v in snapshot["versions"]] == [
            (1, "active"),
            (2, "failed"),
        ]
        assert "expected" in snapshot["versions"][1]["error"]
    assert version_roles(db) == {1: "active", 2: "failed"}


def test_a_version_replaced_under_its_number_is_embedded_afresh(tmp_path: Path) -> None:
    """Version directories are immutable by contract; if one is replaced anyway, its
    stored vectors belong to another model and must not be ranked against."""
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish = version_publisher(repository, triton=False)
    publish(seed=0)
    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        corpus = seed_articles(http, bulk=10)
    shutil.rmtree(version_dir(repository, 1))
    assert publish(seed=7) == 1
    offline = OfflineVersion(repository, 1)
    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        query = corpus.steady[0].title
        body = {"account_id": STEADY, "text": query, "top_k": len(corpus.steady)}
        ranking = http.post("/v1/recommendations", json=body).json()["articles"]
        expected = offline.rank(query, corpus.steady, len(corpus.steady))
        assert [a["article_id"] for a in ranking] == [a for a, _ in expected]


@pytest.mark.parametrize(
    ("version", "status", "code"),
    [
        ("abc", 422, "validation_error"),
        ("0", 422, "validation_error"),
        ("7", 404, "version_not_found"),
    ],
)
def test_activate_rejects_what_it_cannot_activate(
    tmp_path: Path, version: str, status: int, code: str
) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    version_publisher(repository, triton=False)(seed=0)
    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        response = http.post(f"/v1/models/{version}/activate")
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
        assert activate_ok(http, 1) == {"active_version": 1, "switched": False}


def activate_ok(http: httpx.Client, number: int) -> dict:
    response = http.post(f"/v1/models/{number}/activate")
    assert response.status_code == 200, response.text
    return {key: response.json()[key] for key in ("active_version", "switched")}


def test_a_removed_active_version_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish = version_publisher(repository, triton=False)
    publish(seed=0)
    with serving(repository, db, backfill_share=1.0) as url, httpx.Client(base_url=url) as http:
        corpus = seed_articles(http, bulk=10)
        publish(seed=1)
        wait_active(http, 2)
    shutil.rmtree(version_dir(repository, 2))
    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        snapshot = models(http)
        assert snapshot["active_version"] == 1
        metrics = http.get("/metrics").text
    assert metric_value(metrics, "kbrec_embedded_rows_total", {"lane": "ingest"}) == 0
    assert version_roles(db) == {1: "active", 2: "retired"}
    assert stored_vector_counts(db) == {1: corpus.total}
