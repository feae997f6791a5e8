"""The experiment, feedback and account-settings routes on a real uvicorn, with a fake
backend per version (`create_app(backends=...)`): validation in the one error shape,
an experiment's whole life (waiting, running, sticky arms, feedback, report, metrics,
stop with activation), the model changes it refuses meanwhile, and the minimum score."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from serving_helpers import (
    DIM,
    FakeBackend,
    FakeProvider,
    embedding_table,
    metric_value,
    publish_bag_of_words_version,
    serve_in_thread,
    vocab_size,
    wait_ready,
    wait_until,
)

from kbrec.repository import ModelVersion
from server.app import create_app
from server.settings import Settings

EXPERIMENTS = "/v1/experiments"
RECOMMEND = "/v1/recommendations"
FEEDBACK = "/v1/feedback"
SETTINGS = "/v1/accounts/acme/settings"
TITLES = (
    "reset password", "billing invoice refund", "printer page numbers", "fonts tables",
    "charts formulas", "calendar contacts sync", "dark mode theme", "api token webhook",
)  # fmt: skip


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def per_version_backend(version: ModelVersion) -> FakeBackend:
    """Each version its own vectors, as two trained models would have."""
    table = embedding_table(vocab_size(), DIM, seed=version.number)
    return FakeBackend(version.number, version.metadata.dim, version.metadata.max_length, table)


@dataclass
class Server:
    http: httpx.Client
    repository: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repository = tmp_path_factory.mktemp("repository")
    publish_bag_of_words_version(repository, seed=1)
    settings = Settings.of(
        repository=repository,
        db=tmp_path_factory.mktemp("db") / "kbrec.sqlite",
        port=0,
        repository_poll_s=0,  # versions come only when asked for
        leader_check_s=0.1,
        log_flush_ms=50,
    )
    app = create_app(settings, backends=FakeProvider(make=per_version_backend))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_ready(url)
        for i, title in enumerate(TITLES):
            put = http.put(f"/v1/accounts/acme/articles/a{i}", json={"title": title, "body": ""})
            assert put.status_code == 201, put.text
        yield Server(http, repository)


def recommend(http: httpx.Client, text: str, **fields: object) -> dict:
    response = http.post(RECOMMEND, json={"account_id": "acme", "text": text, **fields})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "validation_error"),
        ({"treatment_version": 0}, "validation_error"),
        ({"treatment_version": "2"}, "validation_error"),
        ({"treatment_version": 2, "treatment_share": 1}, "validation_error"),
        ({"treatment_version": 2, "treatment_share": True}, "validation_error"),
        ({"treatment_version": 2, "unit": "user"}, "validation_error"),
        ({"treatment_version": 2, "colour": "red"}, "validation_error"),
        ({"treatment_version": 1}, "validation_error"),  # the active version
        ({"treatment_version": 2, "control_version": 2}, "validation_error"),
        ([], "validation_error"),
    ],
)
def test_bad_experiment_starts_are_422(server: Server, body: object, code: str) -> None:
    assert_error(server.http.post(EXPERIMENTS, json=body), 422, code)


def test_bad_ids_and_bodies(server: Server) -> None:
    http = server.http
    assert_error(http.post(EXPERIMENTS, json={"treatment_version": 9}), 404, "version_not_found")
    assert_error(http.get(f"{EXPERIMENTS}/exp-000000000000"), 404, "experiment_not_found")
    assert_error(http.get(f"{EXPERIMENTS}/bad%20id"), 422, "invalid_id")
    stop = f"{EXPERIMENTS}/exp-000000000000/stop"
    assert_error(http.post(stop, json={}), 404, "experiment_not_found")
    assert_error(http.post(stop), 415, "unsupported_media_type")  # JSON only, as every POST
    assert_error(
        http.post(f"{EXPERIMENTS}/exp-1/stop", json={"winner": "both"}), 422, "validation_error"
    )
    json_type = {"content-type": "application/json"}
    assert_error(http.post(EXPERIMENTS, content=b"{", headers=json_type), 400, "invalid_json")
    request_id = recommend(http, "reset password")["request_id"]
    for body, status, code in [
        ({"request_id": request_id}, 422, "validation_error"),  # no event
        ({"request_id": request_id, "event": "liked"}, 422, "validation_error"),
        ({"request_id": "r1", "event": "clicked"}, 422, "validation_error"),
        ({"request_id": request_id, "event": "clicked"}, 422, "validation_error"),  # no article
        ({"request_id": request_id, "article_id": "a/1", "event": "clicked"}, 422, "invalid_id"),
        (
            {"request_id": request_id, "article_id": "zz", "event": "clicked"},
            422,
            "article_not_in_response",
        ),
        ({"request_id": "f" * 32, "event": "ticket_solved"}, 404, "request_not_found"),
    ]:
        assert_error(http.post(FEEDBACK, json=body), status, code)
    for body in ({}, {"min_score": 2}, {"min_score": "0.5"}, {"min_score": 0.5, "x": 1}):
        assert_error(http.put(SETTINGS, json=body), 422, "validation_error")
    assert_error(http.get("/v1/accounts/a%20b/settings"), 422, "invalid_id")


def test_feedback_is_idempotent_per_request_article_and_event(server: Server) -> None:
    http = server.http
    answer = recommend(http, "billing invoice refund", top_k=3)
    assert "arm" not in answer and "experiment_id" not in answer  # no experiment runs
    first = answer["articles"][0]["article_id"]
    event = {"request_id": answer["request_id"], "article_id": first, "event": "clicked"}
    response = http.post(FEEDBACK, json=event)
    assert response.status_code == 201, response.text
    assert response.json() == {**event, "duplicate": False}
    again = http.post(FEEDBACK, json=event)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    helpful = http.post(FEEDBACK, json={**event, "event": "helpful"})
    assert helpful.status_code == 201
    solved = http.post(
        FEEDBACK, json={"request_id": answer["request_id"], "event": "ticket_solved"}
    )
    assert solved.status_code == 201 and solved.json()["article_id"] is None


def test_the_minimum_score_filters_what_is_returned(server: Server) -> None:
    http = server.http
    all_scores = [a["score"] for a in recommend(http, "reset password", top_k=8)["articles"]]
    assert len(all_scores) == 8
    best_first = sorted(all_scores, reverse=True)
    cut = (best_first[3] + best_first[4]) / 2  # keeps the 4 best
    response = http.put(SETTINGS, json={"min_score": cut})
    assert response.json() == {"account_id": "acme", "min_score": cut, "effective_min_score": cut}
    kept = recommend(http, "reset password", top_k=8)["articles"]
    assert [a["score"] for a in kept] == best_first[:4]
    http.put(SETTINGS, json={"min_score": 1.0})
    assert recommend(http, "reset password", top_k=8)["articles"] == []  # a valid answer
    assert http.put(SETTINGS, json={"min_score": None}).json()["min_score"] is None
    assert len(recommend(http, "reset password", top_k=8)["articles"]) == 8


def test_an_experiment_from_start_to_stop(server: Server) -> None:
    http = server.http
    assert publish_bag_of_words_version(server.repository, seed=2) == 2
    started = http.post(EXPERIMENTS, json={"treatment_version": 2, "unit": "key"})
    assert started.status_code in (201, 202), started.text
    experiment = started.json()
    experiment_id = experiment["experiment_id"]
    assert (experiment["control_version"], experiment["treatment_version"]) == (1, 2)
    assert experiment["treatment_share"] == 0.5 and experiment["unit"] == "key"

    def state() -> str:
        return http.get(f"{EXPERIMENTS}/{experiment_id}").json()["experiment"]["state"]

    wait_until(lambda: state() == "running", "the experiment running")
    assert_error(http.post(EXPERIMENTS, json={"treatment_version": 2}), 409, "experiment_open")
    assert_error(http.post("/v1/models/2/activate"), 409, "experiment_running")
    versions = {v["version"]: v["state"] for v in http.get("/v1/models").json()["versions"]}
    assert versions == {1: "active", 2: "trial"}

    # Sticky arms by key, each answered by its arm's version.
    arms: dict[str, str] = {}
    for round_ in range(2):
        for i in range(40):
            answer = recommend(http, TITLES[i % len(TITLES)], assignment_key=f"ticket-{i}")
            assert answer["experiment_id"] == experiment_id
            assert answer["model_version"] == {"control": 1, "treatment": 2}[answer["arm"]]
            assert arms.setdefault(f"ticket-{i}", answer["arm"]) == answer["arm"]
            if round_ == 0 and answer["arm"] == "treatment":
                click = {
                    "request_id": answer["request_id"],
                    "article_id": answer["articles"][0]["article_id"],
                    "event": "clicked",
                }
                assert http.post(FEEDBACK, json=click).status_code == 201
    assert set(arms.values()) == {"control", "treatment"}
    pinned = recommend(http, "reset password", model_version=1)
    assert "arm" not in pinned  # a pinned version is outside the experiment

    treated = sum(arm == "treatment" for arm in arms.values())
    report = http.get(f"{EXPERIMENTS}/{experiment_id}").json()["report"]
    assert report["arms"]["treatment"]["requests"] == 2 * treated
    assert report["arms"]["control"]["requests"] == 2 * (40 - treated)
    assert report["arms"]["treatment"]["metrics"]["ctr@1"]["value"] == pytest.approx(0.5)
    assert report["arms"]["control"]["metrics"]["ctr@1"]["value"] == 0
    assert report["primary_metric"] == "ctr@3"
    metrics = http.get("/metrics").text
    labels = {"experiment_id": experiment_id, "arm": "treatment"}
    assert metric_value(metrics, "kbrec_experiment_requests_total", labels) == 2 * treated
    clicks = metric_value(
        metrics, "kbrec_experiment_feedback_total", {**labels, "event": "clicked"}
    )
    assert clicks == treated
    assert metric_value(metrics, "kbrec_recommendation_log_dropped_total") == 0

    stopped = http.post(
        f"{EXPERIMENTS}/{experiment_id}/stop",
        json={"winner": "treatment", "activate_winner": True},
    )
    assert stopped.status_code == 200, stopped.text
    record = stopped.json()["experiment"]
    assert (record["state"], record["winner"], record["activated"]) == (
        "stopped",
        "treatment",
        True,
    )
    assert http.get("/v1/models").json()["active_version"] == 2
    versions = {v["version"]: v["state"] for v in http.get("/v1/models").json()["versions"]}
    assert versions == {1: "previous", 2: "active"}
    after = recommend(http, "reset password", assignment_key="ticket-0")
    assert "arm" not in after and after["model_version"] == 2
    stop_again = http.post(f"{EXPERIMENTS}/{experiment_id}/stop", json={})
    assert_error(stop_again, 409, "experiment_stopped")
    listed = http.get(EXPERIMENTS).json()["experiments"]
    assert [e["experiment_id"] for e in listed] == [experiment_id]
