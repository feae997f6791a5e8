"""The experiments' tables on both backends: one open experiment at a time, the
recommendation log and its feedback (idempotent, tied to a logged request, pruned with
it), the accounts' minimum scores, and the change rows other processes follow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from store_helpers import run

from server.storage.experiment_tables import (
    ExperimentRecord,
    ExperimentState,
    Feedback,
    FeedbackEvent,
    LoggedRecommendation,
)
from server.storage.opening import open_store
from server.storage.store import ChangeKind

T0, T1, T2 = (f"2026-11-27T12:00:0{i}.000+00:00" for i in range(3))


def experiment(experiment_id: str, at: str) -> ExperimentRecord:
    return ExperimentRecord(experiment_id, 1, 2, 0.5, "key", ExperimentState.WAITING, at)


def logged(
    request_id: str, at: str, account: str = "acme", arm: str | None = None
) -> LoggedRecommendation:
    experiment_id = "exp-1" if arm else None
    scores = (0.75, 0.5)
    return LoggedRecommendation(
        request_id, account, 1, ("a1", "a2"), scores, at, experiment_id, arm
    )


def test_one_experiment_is_open_at_a_time(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        try:
            seq = await store.last_change_seq()
            first = experiment("exp-1", T0)
            assert await store.create_experiment(first) is None
            assert await store.create_experiment(experiment("exp-2", T1)) == first
            running = dataclasses.replace(first, state=ExperimentState.RUNNING, started_at=T1)
            await store.save_experiment(running)
            assert await store.create_experiment(experiment("exp-2", T1)) == running
            stopped = dataclasses.replace(
                running, state=ExperimentState.STOPPED, stopped_at=T2, winner="treatment"
            )
            await store.save_experiment(stopped)
            second = experiment("exp-2", T2)
            assert await store.create_experiment(second) is None
            assert await store.experiment_records() == [second, stopped]  # newest first
            kinds = [c.kind for c in await store.changes_since(seq)]
            assert kinds == [ChangeKind.EXPERIMENTS] * 4  # the refused creations wrote none
        finally:
            await store.close()

    run(test)


def test_the_log_and_its_feedback(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        try:
            seq = await store.last_change_seq()
            rows = [logged("r1", T0, arm="control"), logged("r2", T1, arm="treatment")]
            other = dataclasses.replace(logged("r3", T2, account="globex"), query_text="a ticket")
            assert await store.log_recommendations([*rows, other]) == 3
            assert await store.log_recommendations([rows[0]]) == 0  # logged once
            assert await store.log_recommendations([]) == 0
            assert await store.logged_recommendation("r3") == other
            assert await store.logged_recommendation("nope") is None

            events = [
                Feedback("r1", "a1", FeedbackEvent.CLICKED, T1),
                Feedback("r1", "a1", FeedbackEvent.HELPFUL, T1),
                Feedback("r1", "", FeedbackEvent.TICKET_SOLVED, T2),
                Feedback("r1", "a1", FeedbackEvent.CLICKED, T2),  # again: not new
                Feedback("unknown", "a1", FeedbackEvent.CLICKED, T2),  # not logged
            ]
            assert await store.add_feedback(events) == [True, True, True, False, False]
            assert await store.add_feedback([]) == []

            by_experiment = await store.logged_outcomes(experiment_id="exp-1")
            assert [o.recommendation for o in by_experiment] == rows
            assert by_experiment[0].feedback == tuple(events[:3])
            assert by_experiment[1].feedback == ()
            by_account = await store.logged_outcomes(account_id="globex")
            assert [o.recommendation for o in by_account] == [other]
            assert len(await store.logged_outcomes()) == 3

            assert await store.prune_recommendation_log(T1) == 1  # r1, older than T1
            assert await store.logged_recommendation("r1") is None
            assert await store.add_feedback([events[0]]) == [False]  # its request is gone
            assert [o.recommendation.request_id for o in await store.logged_outcomes()] == [
                "r2",
                "r3",
            ]
            assert await store.changes_since(seq) == []  # the log is not followed
        finally:
            await store.close()

    run(test)


def test_account_min_scores(location: str | Path) -> None:
    async def test() -> None:
        store = await open_store(location)
        try:
            seq = await store.last_change_seq()
            assert await store.account_min_scores() == {}
            await store.set_account_min_score("acme", 0.42)
            await store.set_account_min_score("globex", -0.25)
            await store.set_account_min_score("acme", 0.5)
            assert await store.account_min_scores() == {"acme": 0.5, "globex": -0.25}
            await store.set_account_min_score("globex", None)
            assert await store.account_min_scores() == {"acme": 0.5}
            changes = await store.changes_since(seq)
            assert [(c.kind, c.account_id) for c in changes] == [
                (ChangeKind.ACCOUNT_SETTINGS, "acme"),
                (ChangeKind.ACCOUNT_SETTINGS, "globex"),
                (ChangeKind.ACCOUNT_SETTINGS, "acme"),
                (ChangeKind.ACCOUNT_SETTINGS, "globex"),
            ]
        finally:
            await store.close()

    run(test)


def test_the_records_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "kbrec.sqlite"

    async def write() -> None:
        store = await open_store(db)
        try:
            await store.create_experiment(experiment("exp-1", T0))
            await store.log_recommendations([logged("r1", T0, arm="control")])
            await store.add_feedback([Feedback("r1", "a2", FeedbackEvent.NOT_HELPFUL, T1)])
        finally:
            await store.close()

    async def read() -> None:
        store = await open_store(db)
        try:
            assert await store.experiment_records() == [experiment("exp-1", T0)]
            (outcome,) = await store.logged_outcomes(experiment_id="exp-1")
            assert outcome.recommendation == logged("r1", T0, arm="control")
            assert outcome.feedback == (Feedback("r1", "a2", FeedbackEvent.NOT_HELPFUL, T1),)
        finally:
            await store.close()

    run(write)
    run(read)
