"""The precision knob end to end: `kbrec serve` (real ONNX Runtime, bag-of-words encoder,
SQLite) answers a corpus's test queries, the help desk's feedback judges every answer,
`kbrec threshold suggest` reads the log and suggests a minimum score for a target
precision, and with that score set for the account the same queries are answered
again: the precision of what is still answered (judged by the known right article, not
by feedback) is within 0.02 of the target, and fewer tickets are answered.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import httpx
import pytest
from helpdesk import ask_all, topic_corpus
from serving_helpers import ServeProcess, publish_bag_of_words_version, wait_until

from cli.main import main as kbrec
from kbrec.records import QUERIES_FILE, read_queries

pytestmark = pytest.mark.slow

ACCOUNT = "acme"
TARGET = 0.8


def logged_requests(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM recommendation_log").fetchone()[0]


def test_the_suggested_threshold_reaches_the_target_precision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = topic_corpus(tmp_path / "corpus", ACCOUNT, articles=30, queries_per_article=16, seed=3)
    tests = [q for q in read_queries(corpus / QUERIES_FILE) if q.split == "test"]
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish_bag_of_words_version(repository)
    assert kbrec(["store", "import", "--corpus", str(corpus), "--db", str(db)]) == 0
    args = ("--repository", str(repository), "--db", str(db), "--log-flush-ms", "50")
    with ServeProcess(*args) as server:
        judged = ask_all(server.url, tests, judge=True)
        assert all(a.status == 200 for a in judged)
        right = [a.body["articles"][0]["article_id"] == a.query.article_id for a in judged]
        base_precision = sum(right) / len(right)
        assert 0.4 < base_precision < TARGET - 0.1  # the knob has something to do
        wait_until(lambda: logged_requests(db) == len(tests), "every request in the log")

        capsys.readouterr()
        suggest = ["threshold", "suggest", "--account", ACCOUNT, "--precision", str(TARGET)]
        assert kbrec([*suggest, "--db", str(db)]) == 0
        printed = capsys.readouterr().out
        match = re.search(r"Suggested min_score (\S+): precision ([\d.]+)", printed)
        assert match is not None, printed
        min_score = float(match[1])
        assert f"{len(tests)} judged of {len(tests)} logged" in printed

        with httpx.Client(base_url=server.url, timeout=30) as http:
            put = http.put(f"/v1/accounts/{ACCOUNT}/settings", json={"min_score": min_score})
            assert put.status_code == 200, put.text
        again = ask_all(server.url, tests, judge=False)
    answered = [a for a in again if a.body["articles"]]
    assert all(a["score"] >= min_score for r in answered for a in r.body["articles"])
    precision = sum(a.body["articles"][0]["article_id"] == a.query.article_id for a in answered)
    precision /= len(answered)
    assert abs(precision - TARGET) <= 0.02, (precision, len(answered))
    assert 0.2 * len(tests) < len(answered) < len(tests)  # fewer tickets, but many
    assert precision == pytest.approx(float(match[2]), abs=1e-3)  # what the CLI promised
