"""`kbrec serve --workers N`: N processes accept on one port, share the SQLite store,
follow each other's writes through the change feed, and a killed worker is replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
from serving_helpers import ServeProcess, wait_until
from upgrade_helpers import FRESH, put_article, version_publisher

from kbrec.records import Article

pytestmark = pytest.mark.slow


def workers_of(parent: int) -> set[int]:
    """The worker processes of a `kbrec serve --workers` parent (its spawned children;
    not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    found = set()
    for pid in map(int, children):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile (ESRCH while it is being reaped)
        if b"spawn_main" in command and b"resource_tracker" not in command:
            found.add(pid)
    return found


def recommended(url: str, text: str) -> list[str]:
    # A new connection each time: the kernel gives it to any of the workers.
    body = {"account_id": FRESH, "text": text, "top_k": 5}
    response = httpx.post(f"{url}/v1/recommendations", json=body, timeout=30)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [article["article_id"] for article in response.json()["articles"]]


def test_workers_share_the_port_the_store_and_the_writes(tmp_path: Path) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    version_publisher(repository, triton=False)(seed=0)
    args = ("--repository", str(repository), "--db", str(db), "--workers", "3")
    with ServeProcess(*args, "--feed-wait-s", "0.2") as server:
        wait_until(lambda: len(workers_of(server.process.pid)) == 3, "3 workers")
        wait_until(lambda: server.output().count("kbrec ready on") == 3, "every worker ready", 120)
        article = Article(FRESH, "new-1", "printer prints blank pages", "words " * 5, None)
        with httpx.Client(base_url=server.url) as http:
            put_article(http, article)
        # Consecutive answers from fresh connections all have it: every worker does.
        streak = 0

        def seen_everywhere() -> bool:
            nonlocal streak
            streak = streak + 1 if recommended(server.url, article.title) == ["new-1"] else 0
            return streak >= 20

        wait_until(seen_everywhere, "the article on every worker")

        # A worker killed is replaced, and the port keeps answering.
        before = workers_of(server.process.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: (
                len(workers_of(server.process.pid) - before) == 1
                and victim not in workers_of(server.process.pid)
            ),
            "a replacement worker",
        )
        wait_until(
            lambda: server.output().count("kbrec ready on") == 4, "the replacement ready", 120
        )
        for _ in range(10):
            assert recommended(server.url, article.title) == ["new-1"]
        assert server.stop() in (0, -signal.SIGTERM)
