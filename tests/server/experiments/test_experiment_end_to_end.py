"""An A/B experiment end to end, under concurrent traffic: `kbrec serve` as a process on
the real ONNX Runtime and a real SQLite file; version 1 a deliberately weak model,
version 2 the tiny trained encoder of the test session. A simulated help desk asks the
corpus's test queries (whose right article is known), each ticket twice, and clicks
when the right article is in the top 3. The experiment splits the tickets 50/50 by
key; the report must find the trained version better (p < 0.05), every ticket must
stay in its arm, no request may fail while the experiment starts and stops (with the
winner activated), and the log and the feedback must survive a restart.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpdesk import HelpDesk, click_rate, publish_copy, publish_weak_version
from serving_helpers import ServeProcess, wait_until

from cli.main import main as kbrec
from kbrec.records import QUERIES_FILE, read_queries

pytestmark = pytest.mark.slow

PER_ARM = 150  # requests in each arm before the stop


def serve(repository: Path, db: Path) -> ServeProcess:
    return ServeProcess(
        "--repository", str(repository), "--db", str(db), "--repository-poll-s", "0",
        "--leader-check-s", "0.2", "--log-flush-ms", "100",
    )  # fmt: skip


def test_an_experiment_under_traffic(
    tiny_corpus: Path,
    tiny_model_repository: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    assert publish_weak_version(repository) == 1
    assert kbrec(["store", "import", "--corpus", str(tiny_corpus), "--db", str(db)]) == 0
    tests = [q for q in read_queries(tiny_corpus / QUERIES_FILE) if q.split == "test"]
    assert len(tests) >= 30

    with serve(repository, db) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        assert publish_copy(repository, tiny_model_repository) == 2
        with HelpDesk(server.url, tests) as desk:
            wait_until(lambda: len(desk.answers) >= 40, "traffic before the experiment")
            started = http.post(
                "/v1/experiments",
                json={"treatment_version": 2, "treatment_share": 0.5, "unit": "key"},
            )
            assert started.status_code in (201, 202), started.text
            experiment_id = started.json()["experiment_id"]
            wait_until(
                lambda: http.get("/v1/experiments").json()["experiments"][0]["state"] == "running",
                "the experiment running",
            )
            desk.wait_for_arms(experiment_id, PER_ARM)
            running = http.get(f"/v1/experiments/{experiment_id}").json()["report"]
            stopped = http.post(
                f"/v1/experiments/{experiment_id}/stop", json={"activate_winner": True}
            )
            assert stopped.status_code == 200, stopped.text
            after_stop = len(desk.answers)
            wait_until(lambda: len(desk.answers) >= after_stop + 40, "traffic after the stop")

        assert not desk.errors, desk.errors[:5]
        failed = [a for a in desk.answers if a.status != 200]
        assert not failed, f"{len(failed)} failed requests, e.g. {failed[0]}"

        # The trained version wins, by the report and by the clicks the desk counted.
        assert running["winner"] == "treatment", running
        assert running["comparisons"]["ctr@3"]["p_value"] < 0.05
        arms = desk.in_arms(experiment_id)
        assert click_rate(arms["treatment"]) > click_rate(arms["control"]) + 0.2
        record = stopped.json()["experiment"]
        assert (record["winner"], record["activated"], record["state"]) == (
            "treatment",
            True,
            "stopped",
        )
        assert http.get("/v1/models").json()["active_version"] == 2

        # Sticky: both asks of a ticket in the same arm, answered by the arm's version.
        arm_of: dict[str, set[str]] = {}
        for answer in arms["control"] + arms["treatment"]:
            arm_of.setdefault(answer.key, set()).add(answer.body["arm"])
            assert (
                answer.body["model_version"] == {"control": 1, "treatment": 2}[answer.body["arm"]]
            )
        assert all(len(seen) == 1 for seen in arm_of.values())
        # Before the experiment ran and after it stopped: no arm, the active version.
        outside = [a for a in desk.answers if "arm" not in a.body]
        assert {a.body["model_version"] for a in outside} == {1, 2}

        def logged_requests() -> tuple[int, int]:
            logged = http.get(f"/v1/experiments/{experiment_id}").json()["report"]["arms"]
            return logged["control"]["requests"], logged["treatment"]["requests"]

        wanted = (len(arms["control"]), len(arms["treatment"]))
        wait_until(lambda: logged_requests() == wanted, "every answer in the log")
        report = http.get(f"/v1/experiments/{experiment_id}").json()
        one_click = next(a for a in arms["treatment"] if a.clicked)
        server.stop()

    with serve(repository, db) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.get(f"/v1/experiments/{experiment_id}").json() == report
        again = http.post(
            "/v1/feedback",
            json={
                "request_id": one_click.body["request_id"],
                "article_id": one_click.query.article_id,
                "event": "clicked",
            },
        )
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert http.get("/v1/models").json()["active_version"] == 2

    out = tmp_path / "report"
    capsys.readouterr()
    args = ["experiment", "report", "--db", str(db), "--id", experiment_id, "--out", str(out)]
    assert kbrec(args) == 0
    printed = capsys.readouterr().out
    assert "The treatment (model version 2) is better" in printed
    assert f"| {len(arms['control'])} (" in printed  # the control's requests
    assert (out / "report.md").read_text(encoding="utf-8") in printed
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
