"""`kbrec experiment list|report` and `kbrec threshold suggest` on a SQLite store written
through the store's own API: what they print, what they write, and the one-line errors
(exit status 2) for what a user can fix."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from cli.main import main as kbrec
from server.storage.experiment_tables import (
    ExperimentRecord,
    ExperimentState,
    Feedback,
    FeedbackEvent,
    LoggedRecommendation,
)
from server.storage.sqlite import SqliteArticleStore

AT = "2026-11-27T12:00:00.000+00:00"


def fill(db: Path, judged: int) -> None:
    """An experiment with 60 requests per arm (the treatment clicked more), and `judged`
    requests of account `solo` outside it, right when their top score is high."""

    async def write() -> None:
        store = await SqliteArticleStore.open(db)
        rng = random.Random(5)
        rows, events = [], []
        await store.create_experiment(
            ExperimentRecord("exp-1", 1, 2, 0.5, "key", ExperimentState.RUNNING, AT, AT)
        )
        for i in range(120):
            arm = "treatment" if i % 2 else "control"
            request_id = f"{i:032x}"
            version = 2 if i % 2 else 1
            ids, scores = ("a1", "a2"), (0.9, 0.5)
            rows.append(
                LoggedRecommendation(request_id, "acme", version, ids, scores, AT, "exp-1", arm)
            )
            if rng.random() < (0.8 if arm == "treatment" else 0.2):
                events.append(Feedback(request_id, "a1", FeedbackEvent.CLICKED, AT))
        for i in range(judged):
            score = rng.random()
            request_id = f"{1000 + i:032x}"
            rows.append(LoggedRecommendation(request_id, "solo", 1, ("s1",), (score,), AT))
            right = rng.random() < score  # the higher the score, the likelier right
            event = FeedbackEvent.CLICKED if right else FeedbackEvent.NOT_HELPFUL
            events.append(Feedback(request_id, "s1", event, AT))
        await store.log_recommendations(rows)
        await store.add_feedback(events)
        await store.close()

    asyncio.run(write())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "kbrec.sqlite"
    fill(path, judged=400)
    return path


def test_experiment_list_and_report(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kbrec(["experiment", "list", "--db", str(db)]) == 0
    assert "| exp-1 | running | 1 | 2 | 50% | key |" in capsys.readouterr().out
    out = tmp_path / "out"
    assert kbrec(["experiment", "report", "--db", str(db), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| requests (with feedback) | 60 (" in printed
    assert "The treatment (model version 2) is better" in printed
    assert (out / "report.md").read_text(encoding="utf-8") in printed
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_threshold_suggest(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["threshold", "suggest", "--account", "solo", "--db", str(db)]
    assert kbrec([*args, "--precision", "0.8"]) == 0
    printed = capsys.readouterr().out
    assert "400 judged of 400 logged requests" in printed
    assert "| min_score | precision | coverage | answered |" in printed
    suggested = float(printed.split("Suggested min_score ")[1].split(":")[0])
    assert 0.5 < suggested < 0.9  # right answers score higher: a real cut, not 0 or 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment", "report", "--id", "exp-9"], "no experiment 'exp-9' in the store"),
        (["threshold", "suggest", "--account", "nobody"], "no logged recommendation"),
        (["threshold", "suggest", "--account", "acme", "--model-version", "7"], "no feedback"),
        (["threshold", "suggest", "--account", "solo", "--precision", "1.5"], "--precision"),
    ],
)
def test_what_a_user_can_fix_is_one_line(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert kbrec([*argv, "--db", str(db)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_a_missing_store_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.sqlite"
    assert kbrec(["experiment", "report", "--db", str(missing)]) == 2
    assert "no article store at" in capsys.readouterr().err
    assert not missing.exists()
    empty = tmp_path / "empty.sqlite"
    asyncio.run(_create(empty))
    assert kbrec(["experiment", "report", "--db", str(empty)]) == 2
    assert "no experiment in the store" in capsys.readouterr().err


async def _create(path: Path) -> None:
    store = await SqliteArticleStore.open(path)
    await store.close()
