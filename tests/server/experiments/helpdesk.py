"""A simulated help desk for the experiment tests: tickets whose right article is known
(a corpus's queries) sent by threads, each with its own ticket key, and the customer's
feedback as a click when the right article is in the top 3; a deliberately weak model
version to test against; a corpus the bag-of-words encoder answers partly right.
"""

from __future__ import annotations

import itertools
import random
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from serving_helpers import (
    MAX_LENGTH,
    VOCAB_WORDS,
    embedding_table,
    wait_until,
    write_bag_of_words_onnx,
    write_metadata,
    write_word_tokenizer,
)

from kbrec.records import ARTICLES_FILE, QUERIES_FILE, Article, Query, write_jsonl
from kbrec.repository import MODEL_FILE, TOKENIZER_FILE, publish_version, version_dir

# A vocabulary of words that say nothing about a topic: every topic word is [UNK], so
# this version ranks a ticket's articles nearly at random (a deliberately weak model).
STOP_WORDS = ("how", "do", "i", "the", "to", "with", "and", "in", "of", "a", "is", "not")
WEAK_DIM = 16
CLICK_DEPTH = 3  # the customer clicks the right article if it is in the top 3


def publish_weak_version(repository: Path, seed: int = 5) -> int:
    def build(out: Path) -> None:
        write_word_tokenizer(out / TOKENIZER_FILE, STOP_WORDS)
        table = embedding_table(4 + len(STOP_WORDS), WEAK_DIM, seed)
        write_bag_of_words_onnx(out / MODEL_FILE, table)
        write_metadata(out, WEAK_DIM, MAX_LENGTH)

    return publish_version(repository, build)


def publish_copy(repository: Path, source_repository: Path, source_version: int = 1) -> int:
    """Publish another repository's version here (the next number)."""
    source = version_dir(source_repository, source_version)

    def build(out: Path) -> None:
        for path in source.iterdir():
            if path.is_file():
                shutil.copy2(path, out / path.name)

    return publish_version(repository, build)


@dataclass
class Answer:
    status: int
    key: str
    query: Query
    body: dict
    clicked: bool = False


@dataclass
class HelpDesk:
    """Threads sending `queries` round and round until stopped; every ticket is asked
    twice (a customer asking again), so stickiness can be checked on every key."""

    base_url: str
    queries: Sequence[Query]
    threads: int = 4
    top_k: int = 5
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _tickets: itertools.count = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> HelpDesk:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._work, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)

    def _work(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            while not self._stop.is_set():
                with self._lock:
                    ticket = next(self._tickets)
                query = self.queries[ticket % len(self.queries)]
                for _ in range(2):
                    try:
                        self._ask(http, f"ticket-{ticket}", query)
                    except httpx.HTTPError as exc:
                        self.errors.append(f"ticket-{ticket}: {exc!r}")

    def _ask(self, http: httpx.Client, key: str, query: Query) -> None:
        body = {
            "account_id": query.account_id,
            "text": query.text,
            "top_k": self.top_k,
            "assignment_key": key,
        }
        response = http.post("/v1/recommendations", json=body)
        answer = Answer(response.status_code, key, query, response.json())
        if response.status_code == 200:
            ranked = [a["article_id"] for a in answer.body["articles"]]
            if query.article_id in ranked[:CLICK_DEPTH]:
                event = {
                    "request_id": answer.body["request_id"],
                    "article_id": query.article_id,
                    "event": "clicked",
                }
                clicked = http.post("/v1/feedback", json=event)
                if clicked.status_code != 201:
                    self.errors.append(f"feedback {clicked.status_code}: {clicked.text}")
                answer.clicked = True
        self.answers.append(answer)

    def in_arms(self, experiment_id: str) -> dict[str, list[Answer]]:
        arms: dict[str, list[Answer]] = {"control": [], "treatment": []}
        for answer in list(self.answers):
            if answer.body.get("experiment_id") == experiment_id:
                arms[answer.body["arm"]].append(answer)
        return arms

    def wait_for_arms(self, experiment_id: str, each: int) -> None:
        wait_until(
            lambda: min(len(a) for a in self.in_arms(experiment_id).values()) >= each,
            f"{each} answers in each arm",
            deadline_s=300,
        )


def click_rate(answers: Sequence[Answer]) -> float:
    return float(np.mean([a.clicked for a in answers])) if answers else 0.0


def ask_all(
    base_url: str, queries: Sequence[Query], *, judge: bool, top_k: int = 5, threads: int = 4
) -> list[Answer]:
    """Every query once, concurrently. With `judge`, the customer's feedback: a click on
    the right article if it is in the top 3, else `not_helpful` on the top article, so
    every answered request is judged (right when its top article is the right one)."""

    local = threading.local()
    clients: list[httpx.Client] = []

    def ask(query: Query) -> Answer:
        if not hasattr(local, "http"):  # one keep-alive client per thread
            local.http = httpx.Client(base_url=base_url, timeout=60)
            clients.append(local.http)
        http = local.http
        body = {"account_id": query.account_id, "text": query.text, "top_k": top_k}
        response = http.post("/v1/recommendations", json=body)
        answer = Answer(response.status_code, "", query, response.json())
        ranked = [a["article_id"] for a in answer.body.get("articles", [])]
        if judge and ranked:
            clicked = query.article_id in ranked[:CLICK_DEPTH]
            event = {
                "request_id": answer.body["request_id"],
                "article_id": query.article_id if clicked else ranked[0],
                "event": "clicked" if clicked else "not_helpful",
            }
            assert http.post("/v1/feedback", json=event).status_code == 201
            answer.clicked = clicked
        return answer

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(ask, queries))
    finally:
        for client in clients:
            client.close()


def topic_corpus(
    out: Path, account: str, articles: int, queries_per_article: int, seed: int
) -> Path:
    """A help center whose articles and queries are made of the bag-of-words encoder's
    words: a query holds three of its article's four title words and one other word, so
    the encoder answers many right, and the right ones with higher scores."""
    rng = random.Random(seed)
    written, asked = [], []
    for i in range(articles):
        title = rng.sample(VOCAB_WORDS, 4)
        body = [*title, *(rng.choice(VOCAB_WORDS) for _ in range(4))]
        article_id = f"{account}-{i:03d}"
        written.append(Article(account, article_id, " ".join(title), " ".join(body), None))
        for j in range(queries_per_article):
            words = [*rng.sample(title, 3), rng.choice(VOCAB_WORDS)]
            rng.shuffle(words)
            split = "test" if j % 4 else "train"
            asked.append(Query(account, " ".join(words), article_id, split))
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / ARTICLES_FILE, written)
    write_jsonl(out / QUERIES_FILE, asked)
    return out
