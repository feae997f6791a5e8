"""An experiment across two `kbrec serve` processes on one store (SQLite or PostgreSQL):
the leader starts and stops it, the follower learns both through the change feed,
loads the trial and splits its traffic the same way (a key gets the same arm from
either process), takes feedback about requests the other answered, and switches with
the leader when the winner is activated."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serving_helpers import ServeProcess, publish_bag_of_words_version, wait_until

from kbrec.repository import version_dir

pytestmark = pytest.mark.slow

TITLES = ("reset password", "billing invoice refund", "printer page numbers", "dark mode theme")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "kbrec.sqlite")
    return request.getfixturevalue("postgres_url")


def serve(repository: Path, store: str) -> ServeProcess:
    return ServeProcess(
        "--repository", str(repository), "--db", store, "--repository-poll-s", "0",
        "--feed-wait-s", "0.2", "--leader-check-s", "0.2", "--log-flush-ms", "50",
    )  # fmt: skip


def ask(http: httpx.Client, key: str) -> dict:
    body = {"account_id": "acme", "text": "reset password", "assignment_key": key}
    response = http.post("/v1/recommendations", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_follower_splits_like_the_leader(tmp_path: Path, store: str) -> None:
    repository = tmp_path / "repository"
    publish_bag_of_words_version(repository, seed=1)
    with (
        serve(repository, store) as first,
        serve(repository, store) as second,
        httpx.Client(base_url=first.url, timeout=30) as leader,
        httpx.Client(base_url=second.url, timeout=30) as follower,
    ):
        assert leader.get("/v1/models").json()["leader"] is True
        for i, title in enumerate(TITLES):
            put = leader.put(f"/v1/accounts/acme/articles/a{i}", json={"title": title, "body": ""})
            assert put.status_code == 201, put.text
        publish_bag_of_words_version(repository, seed=2)
        start = {"treatment_version": 2, "unit": "key"}
        response = follower.post("/v1/experiments", json=start)
        assert response.status_code == 503 and response.json()["error"]["code"] == "not_leader"
        started = leader.post("/v1/experiments", json=start)
        assert started.status_code in (201, 202), started.text
        experiment_id = started.json()["experiment_id"]

        wait_until(lambda: "arm" in ask(follower, "probe"), "the follower in the experiment")
        arms = {}
        for i in range(30):
            from_leader, from_follower = ask(leader, f"t-{i}"), ask(follower, f"t-{i}")
            assert from_leader["arm"] == from_follower["arm"], i
            assert from_leader["model_version"] == from_follower["model_version"]
            arms[i] = from_leader
        assert {a["arm"] for a in arms.values()} == {"control", "treatment"}
        assert version_dir(repository, 2).is_dir()

        # Feedback through the follower about a request the leader answered (and logged).
        answer = next(a for a in arms.values() if a["arm"] == "treatment")
        event = {
            "request_id": answer["request_id"],
            "article_id": answer["articles"][0]["article_id"],
            "event": "clicked",
        }
        clicked = follower.post("/v1/feedback", json=event)
        assert clicked.status_code == 201, clicked.text

        stopped = leader.post(
            f"/v1/experiments/{experiment_id}/stop",
            json={"winner": "treatment", "activate_winner": True},
        )
        assert stopped.status_code == 200, stopped.text

        def follower_switched() -> bool:
            after = ask(follower, "t-0")
            return "arm" not in after and after["model_version"] == 2

        wait_until(follower_switched, "the follower out of the experiment, on version 2")
        report = follower.get(f"/v1/experiments/{experiment_id}").json()
        assert report == leader.get(f"/v1/experiments/{experiment_id}").json()
        assert report["report"]["arms"]["treatment"]["metrics"]["ctr@1"]["value"] > 0
