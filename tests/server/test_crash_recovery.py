"""kill -9 of `kbrec serve` in the middle of a large import and of a backfill, on SQLite
and PostgreSQL: after a restart every acknowledged write is there, and every article has
a vector of the active version (after the backfill, of both versions, once the resumed
upgrade completes).

A 2xx is the acknowledgement: of each PUT, and of an import as a whole. An import the
kill interrupted was not acknowledged; it must have left whole chunks committed in
export order (no half chunk), and re-sending it completes it.

Each server is a real `kbrec serve` child on a free loopback port, embedding with the
bag-of-words ONNX model in ONNX Runtime; the store is read with the store's own API.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from serving_helpers import (
    DIM,
    VOCAB_WORDS,
    ServeProcess,
    publish_bag_of_words_version,
    wait_until,
)
from upgrade_helpers import models, version_entry, version_publisher, wait_active

from server.storage.opening import open_store
from server.storage.store import VersionRole

pytestmark = pytest.mark.slow

CHUNK = 64
Key = tuple[str, str]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "kbrec.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repository = tmp_path / "repository"
    publish_bag_of_words_version(repository)
    return repository


def serve(repository: Path, store: str, *extra: str) -> ServeProcess:
    return ServeProcess(
        "--repository", str(repository), "--db", store,
        "--repository-poll-s", "0.1", "--leader-check-s", "0.2",
        "--import-chunk-articles", str(CHUNK), *extra,
    )  # fmt: skip


def kill_9(server: ServeProcess) -> None:
    server.process.kill()
    server.process.wait(60)


def title(seed: int) -> str:
    return " ".join(random.Random(seed).sample(VOCAB_WORDS, 5))


def export(count: int, seed: int) -> tuple[list[str], dict]:
    """Article ids in export order, and the export."""
    ids = [f"z{seed}-{i:05d}" for i in range(count)]
    items = [
        {"id": article_id, "title": title(seed * 100_000 + i), "body": f"<p>{title(i)}</p>"}
        for i, article_id in enumerate(ids)
    ]
    return ids, {"articles": items}


def post_import(http: httpx.Client, account: str, body: dict) -> httpx.Response:
    return http.post(f"/v1/accounts/{account}/articles/import", json=body, timeout=300)


@dataclass
class Snapshot:
    """What the store holds: every article's title, which articles have a vector of each
    version, and the version roles."""

    titles: dict[Key, str]
    vectors: dict[int, set[Key]]
    roles: dict[int, VersionRole]

    def account(self, account: str) -> set[str]:
        return {article_id for a, article_id in self.titles if a == account}


def snapshot(store: str) -> Snapshot:
    async def read() -> Snapshot:
        opened = await open_store(store)
        try:
            roles = {r.version: r.role for r in await opened.version_records()}
            titles: dict[Key, str] = {}
            vectors: dict[int, set[Key]] = {}
            for version in roles:
                rows = await opened.index_rows(version, DIM)
                vectors[version] = {(r.account_id, r.article_id) for r in rows}
                titles.update(((r.account_id, r.article_id), r.title) for r in rows)
                for s in await opened.articles_without_embedding(version, DIM):
                    titles[(s.article.account_id, s.article.article_id)] = s.article.title
            return Snapshot(titles, vectors, roles)
        finally:
            await opened.close()

    return asyncio.run(read())


@dataclass
class Writer:
    """PUTs of new articles, one after another, until stopped or the server is gone;
    keeps the acknowledged ones (each id is written once: an unacknowledged write may
    or may not have committed, an acknowledged one must have)."""

    base_url: str
    account: str
    acked: dict[Key, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(120)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            i = 0
            while not self._stop.is_set():
                article_id, text = f"w{i:05d}", title(900_000 + i)
                try:
                    response = http.put(
                        f"/v1/accounts/{self.account}/articles/{article_id}",
                        json={"title": text, "body": "written while the server was busy"},
                    )
                except httpx.TransportError:
                    return  # killed
                if response.status_code in (200, 201):
                    self.acked[(self.account, article_id)] = text
                i += 1


@dataclass
class Background:
    """One request in a thread: its response, or the transport error of a killed server."""

    send: Callable[[], httpx.Response]
    response: httpx.Response | None = None
    error: Exception | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> Background:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.response = self.send()
        except httpx.TransportError as exc:
            self.error = exc

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        self._thread.join(300)


def assert_acknowledged(after: Snapshot, acked: dict[Key, str]) -> None:
    missing = {key for key in acked if key not in after.titles}
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:3]}"
    assert {key: after.titles[key] for key in acked} == acked


def assert_every_article_has_vectors(after: Snapshot, *versions: int) -> None:
    for version in versions:
        without = set(after.titles) - after.vectors[version]
        assert not without, f"{len(without)} articles lack a vector of version {version}"


def wait_for(condition: Callable[[], object], what: str) -> None:
    wait_until(condition, what, deadline_s=120)


def test_kill_9_during_a_large_import(repository: Path, store: str) -> None:
    seed_ids, seed_export = export(100, seed=1)
    big_ids, big_export = export(4000, seed=2)
    with serve(repository, store) as first, httpx.Client(base_url=first.url, timeout=60) as http:
        assert post_import(http, "seed", seed_export).status_code == 200
        with (
            Writer(first.url, "puts") as writer,
            Background(lambda: post_import(http, "big", big_export)) as running,
        ):
            # Three chunks committed: the import is well under way, far from done.
            third = f"/v1/accounts/big/articles/{big_ids[2 * CHUNK]}"
            wait_for(lambda: http.get(third).status_code == 200, "three chunks of the import")
            kill_9(first)
        assert running.response is None, "the import finished before the kill"
        acked = dict(writer.acked)
    assert len(acked) > 0

    crashed = snapshot(store)
    committed = [i for i in big_ids if ("big", i) in crashed.titles]
    # Whole chunks, in export order: no chunk is ever half committed.
    assert committed == big_ids[: len(committed)]
    assert len(committed) % CHUNK == 0 and 3 * CHUNK <= len(committed) < len(big_ids)
    print(f"killed with {len(committed)} of {len(big_ids)} committed, {len(acked)} PUTs acked")

    with serve(repository, store) as second, httpx.Client(base_url=second.url) as http:
        after = snapshot(store)
        assert after.account("seed") == set(seed_ids)
        assert_acknowledged(after, acked)
        assert after.roles == {1: VersionRole.ACTIVE}
        assert_every_article_has_vectors(after, 1)

        again = post_import(http, "big", big_export)  # re-sending finishes the import
        assert again.status_code == 200, again.text
        counts = (again.json()["created"], again.json()["updated"])
        assert counts == (len(big_ids) - len(committed), len(committed))
        served = version_entry(models(http), 1)["stored_vectors"]
    final = snapshot(store)
    assert served == len(final.titles)
    assert final.account("big") == set(big_ids)
    assert_every_article_has_vectors(final, 1)


def test_kill_9_during_a_backfill(repository: Path, store: str) -> None:
    seed_ids, seed_export = export(2000, seed=3)
    # A slow backfill (a tenth of the backend's time) leaves time to kill it midway.
    slow = ("--backfill-share", "0.1")
    with serve(repository, store, *slow) as first, httpx.Client(base_url=first.url) as http:
        assert post_import(http, "seed", seed_export).status_code == 200
        with Writer(first.url, "puts") as writer:
            assert version_publisher(repository, triton=False)(seed=1) == 2

            def midway() -> bool:
                snapshot = models(http)
                upgrade = snapshot["upgrade"]
                if upgrade is None:
                    return False
                stored = version_entry(snapshot, 2)["stored_vectors"]
                return stored >= 200 and upgrade["articles_remaining"] > 0

            wait_for(midway, "the backfill of version 2 to be under way")
            kill_9(first)
        acked = dict(writer.acked)

    crashed = snapshot(store)
    assert crashed.roles == {1: VersionRole.ACTIVE, 2: VersionRole.CANDIDATE}
    backfilled = len(crashed.vectors[2])
    assert 0 < backfilled < len(crashed.titles)
    print(f"killed with {backfilled} of {len(crashed.titles)} backfilled, {len(acked)} PUTs acked")
    assert_every_article_has_vectors(crashed, 1)

    with serve(repository, store) as second, httpx.Client(base_url=second.url) as http:
        # The role was resumed from the store, and what was backfilled before stays.
        assert version_entry(models(http), 2)["stored_vectors"] >= backfilled
        assert_acknowledged(snapshot(store), acked)
        wait_active(http, 2)
    after = snapshot(store)
    assert after.roles == {1: VersionRole.PREVIOUS, 2: VersionRole.ACTIVE}
    assert after.account("seed") == set(seed_ids)
    assert_acknowledged(after, acked)
    assert_every_article_has_vectors(after, 1, 2)
