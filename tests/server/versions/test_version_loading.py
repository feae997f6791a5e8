"""Version loading that cannot die: whatever a version directory holds, or whatever
goes wrong while checking the repository, the version concerned is failed with its
reason, start-up serves the newest version that loads, and the watch goes on.

Real SQLite files and HTTP on loopback; the backend is the fake one (what is under
test is the lifecycle around it), so a load failure can be any exception.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from serving_helpers import (
    DIM,
    MAX_LENGTH,
    VOCAB_WORDS,
    FakeBackend,
    FakeProvider,
    build_bag_of_words,
    metric_value,
    serve_in_thread,
    wait_ready,
    wait_until,
    write_metadata,
)
from upgrade_helpers import models, version_roles, wait_active, wait_state

from kbrec.repository import METADATA_FILE, MODEL_FILE, TOKENIZER_FILE, ModelVersion, model_dir
from kbrec.repository import publish_version as publish
from server.app import create_app
from server.settings import Settings
from server.versions import verification
from server.versions.lifecycle import ModelLifecycle

WATCH_ALIVE = "kbrec_repository_watch_alive"
LAST_CHECK = "kbrec_repository_last_check_timestamp_seconds"


# --- versions with something wrong -------------------------------------------------------


def publish_with(repository: Path, seed: int, spoil: Callable[[Path], None]) -> int:
    """A bag-of-words version whose files `spoil` changes before it is published."""

    def build(out: Path) -> None:
        build_bag_of_words(out, seed)
        spoil(out)

    return publish(repository, build)


def non_string_model_sha256(out: Path) -> None:
    metadata = json.loads((out / METADATA_FILE).read_text(encoding="utf-8"))
    metadata["model_sha256"] = 12345
    (out / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")


def pad_is_not_0(out: Path) -> None:
    """[PAD] takes id 5 (and the word there takes 0); metadata hashes the new file."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *dict.fromkeys(VOCAB_WORDS)]
    tokens[0], tokens[5] = tokens[5], tokens[0]
    tokenizer = Tokenizer(WordLevel({token: i for i, token in enumerate(tokens)}, "[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(out / TOKENIZER_FILE))
    write_metadata(out, DIM, MAX_LENGTH)


def symlinked_model(outside: Path) -> Callable[[Path], None]:
    """model.onnx becomes a link to the same bytes elsewhere: the checksum still matches."""

    def spoil(out: Path) -> None:
        shutil.move(out / MODEL_FILE, outside)
        (out / MODEL_FILE).symlink_to(outside)

    return spoil


class FailingLoads:
    """A FakeProvider's `make` that raises a plain exception (not a BackendError) for
    the given versions, as a library bug or an unexpected file would."""

    def __init__(self, *numbers: int) -> None:
        self.numbers = set(numbers)

    def __call__(self, version: ModelVersion) -> FakeBackend:
        if version.number in self.numbers:
            raise RuntimeError(f"cannot open version {version.number} (injected)")
        return FakeBackend(version.number, version.metadata.dim, version.metadata.max_length)


@contextmanager
def serving(repository: Path, db: Path, provider: FakeProvider | None = None) -> Iterator[str]:
    settings = Settings.of(repository=repository, db=db, port=0, repository_poll_s=0.05)
    with serve_in_thread(create_app(settings, backends=provider or FakeProvider())) as url:
        wait_ready(url)
        yield url


def states(http: httpx.Client) -> dict[int, tuple[str, str]]:
    return {v["version"]: (v["state"], v.get("error", "")) for v in models(http)["versions"]}


# --- start-up ----------------------------------------------------------------------------


def test_startup_falls_back_past_versions_that_fail_to_verify_or_to_load(tmp_path: Path) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    assert publish_with(repository, 0, lambda out: None) == 1
    assert publish_with(repository, 1, pad_is_not_0) == 2  # invalid: never loaded
    assert publish_with(repository, 2, lambda out: None) == 3  # valid, but its load raises
    with (
        serving(repository, db, FakeProvider(make=FailingLoads(3))) as url,
        httpx.Client(base_url=url) as http,
    ):
        found = states(http)
        assert models(http)["active_version"] == 1
    assert found[1] == ("active", "")
    assert found[2][0] == "failed" and "[PAD] has id 5" in found[2][1], found
    assert found[3][0] == "failed" and "RuntimeError: cannot open version 3" in found[3][1]
    assert version_roles(db) == {1: "active", 3: "failed"}


def test_a_recorded_active_version_that_no_longer_verifies_is_failed_at_start(
    tmp_path: Path,
) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish_with(repository, 0, lambda out: None)
    publish_with(repository, 1, lambda out: None)
    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        assert models(http)["active_version"] == 2
    symlinked_model(tmp_path / "elsewhere.onnx")(model_dir(repository) / "2")
    with serving(repository, db) as url, httpx.Client(base_url=url) as http:
        assert models(http)["active_version"] == 1
        found = states(http)
    assert found[2][0] == "failed" and "model.onnx is a symbolic link" in found[2][1], found
    assert version_roles(db) == {1: "active", 2: "failed"}


# --- the watch ---------------------------------------------------------------------------


class InjectedFailures:
    """Makes `ModelLifecycle.check_repository` raise while switched on, counting calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = threading.Event()
        self.raised = 0
        check = ModelLifecycle.check_repository
        errors = (RuntimeError("injected"), KeyError("injected"), ZeroDivisionError())

        async def failing_check(lifecycle: ModelLifecycle) -> None:
            if self.on.is_set():
                self.raised += 1
                raise errors[self.raised % len(errors)]
            await check(lifecycle)

        monkeypatch.setattr(ModelLifecycle, "check_repository", failing_check)


def test_the_watch_survives_bad_versions_and_failing_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish_with(repository, 0, lambda out: None)
    failures = InjectedFailures(monkeypatch)
    provider = FakeProvider(make=FailingLoads(5))

    def metric(http: httpx.Client, name: str) -> float:
        return metric_value(http.get("/metrics").text, name)

    with (
        caplog.at_level(logging.WARNING),
        serving(repository, db, provider) as url,
        httpx.Client(base_url=url) as http,
    ):
        wait_until(lambda: metric(http, LAST_CHECK) > 0, "a first repository check")
        assert metric(http, WATCH_ALIVE) == 1
        # Directories no version may be named after, each a copy of a valid version.
        for name in ("²", "0123"):
            shutil.copytree(model_dir(repository) / "1", model_dir(repository) / name)
        assert publish_with(repository, 2, non_string_model_sha256) == 2
        assert publish_with(repository, 3, pad_is_not_0) == 3
        assert publish_with(repository, 4, symlinked_model(tmp_path / "outside.onnx")) == 4
        assert publish_with(repository, 5, lambda out: None) == 5  # its load raises
        wait_state(http, 5, "failed")  # the last published: the others were seen with it
        found = states(http)
        assert "model_sha256 must be 64 lowercase hex digits, got 12345" in found[2][1]
        assert "[PAD] has id 5" in found[3][1]
        assert "model.onnx is a symbolic link" in found[4][1]
        assert "RuntimeError: cannot open version 5" in found[5][1]
        assert sorted(found) == [1, 2, 3, 4, 5]  # "²" and "0123" are not versions

        # Checks that raise (three kinds of exception) are logged; the watch goes on.
        failures.on.set()
        wait_until(lambda: failures.raised >= 1, "an injected failure")
        stalled_at = metric(http, LAST_CHECK)
        wait_until(lambda: failures.raised >= 4, "more injected failures")
        assert metric(http, WATCH_ALIVE) == 1
        assert metric(http, LAST_CHECK) == stalled_at  # a failed check is not a check
        failures.on.clear()
        wait_until(lambda: metric(http, LAST_CHECK) > stalled_at, "a check after the failures")

        # Upgrades still happen.
        assert publish_with(repository, 6, lambda out: None) == 6
        wait_active(http, 6)
        assert metric(http, WATCH_ALIVE) == 1
    assert version_roles(db) == {
        1: "previous",
        2: "failed",
        3: "failed",
        4: "failed",
        5: "failed",
        6: "active",
    }
    ignored = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("ignoring") and r.threadName != "MainThread"
    ]
    # The server warned once each, though the watch listed them at every poll (the
    # test's own publishing, in the main thread, lists them too).
    assert sorted(m.split()[1] for m in ignored) == ["'0123'", "'\\xb2'"], ignored
    assert "checking the model repository failed" in caplog.text


def test_a_follower_reports_no_watch(tmp_path: Path) -> None:
    """Only the leader watches: a second process on the same store says 0."""
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish_with(repository, 0, lambda out: None)
    with serving(repository, db) as leader, serving(repository, db) as follower:
        with httpx.Client(base_url=leader) as http:
            text = http.get("/metrics").text
            assert metric_value(text, "kbrec_leader") == 1
            wait_until(
                lambda: metric_value(http.get("/metrics").text, WATCH_ALIVE) == 1, "the watch"
            )
        with httpx.Client(base_url=follower) as http:
            text = http.get("/metrics").text
            assert metric_value(text, "kbrec_leader") == 0
            assert metric_value(text, WATCH_ALIVE) == 0
            assert f"# TYPE {WATCH_ALIVE} gauge" in text
            assert not [line for line in text.splitlines() if line.startswith(LAST_CHECK)]


# --- verification ------------------------------------------------------------------------


def test_any_exception_while_verifying_makes_that_version_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_with(tmp_path, 0, lambda out: None)
    publish_with(tmp_path, 1, lambda out: None)
    real = verification.verify_version

    def verify(path: Path):
        if path.name == "2":
            raise KeyError("surprise")
        return real(path)

    monkeypatch.setattr(verification, "verify_version", verify)
    scan = verification.scan_repository(tmp_path)
    assert [status.number for status in scan.statuses] == [1, 2]
    assert scan.newest_valid is not None and scan.newest_valid.number == 1
    assert scan.statuses[1].error == "cannot be verified: KeyError: 'surprise'"
