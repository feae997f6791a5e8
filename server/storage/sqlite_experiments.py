"""The experiments' tables on SQLite (`ExperimentTables`), mixed into
`SqliteArticleStore`: every call runs on the store's one SQLite thread (`_call`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from server.storage.experiment_tables import (
    EXPERIMENT_COLUMNS,
    FEEDBACK_COLUMNS,
    LOG_COLUMNS,
    OPEN_STATES,
    ExperimentRecord,
    Feedback,
    LoggedOutcome,
    LoggedRecommendation,
    experiment_of,
    experiment_values,
    feedback_of,
    logged_of,
    logged_values,
    outcomes_of,
)
from server.storage.sqlite_transactions import append_change, transaction
from server.storage.store import ChangeKind, utc_now

T = TypeVar("T")
OPEN = ", ".join(f"'{state.value}'" for state in OPEN_STATES)
PLACEHOLDERS_11 = ", ".join("?" * 11)
PLACEHOLDERS_9 = ", ".join("?" * 9)


class SqliteExperimentTables:
    if TYPE_CHECKING:  # the store's, which this class is mixed into
        _connection: sqlite3.Connection

        async def _call(self, function: Callable[..., T], *args: object) -> T: ...

    async def create_experiment(self, record: ExperimentRecord) -> ExperimentRecord | None:
        return await self._call(self._create_experiment, record)

    async def save_experiment(self, record: ExperimentRecord) -> None:
        await self._call(self._save_experiment, record)

    async def experiment_records(self) -> list[ExperimentRecord]:
        rows = await self._call(
            self._rows,
            f"SELECT {EXPERIMENT_COLUMNS} FROM experiments ORDER BY created_at DESC,"
            " experiment_id DESC",
        )
        return [experiment_of(row) for row in rows]

    async def log_recommendations(self, rows: Sequence[LoggedRecommendation]) -> int:
        return await self._call(self._log_recommendations, rows)

    async def logged_recommendation(self, request_id: str) -> LoggedRecommendation | None:
        rows = await self._call(
            self._rows,
            f"SELECT {LOG_COLUMNS} FROM recommendation_log WHERE request_id = ?",
            request_id,
        )
        return logged_of(rows[0]) if rows else None

    async def add_feedback(self, events: Sequence[Feedback]) -> list[bool]:
        return await self._call(self._add_feedback, events)

    async def logged_outcomes(
        self, *, experiment_id: str | None = None, account_id: str | None = None
    ) -> list[LoggedOutcome]:
        return await self._call(self._outcomes, experiment_id, account_id)

    async def prune_recommendation_log(self, before: str) -> int:
        return await self._call(self._prune_log, before)

    async def account_min_scores(self) -> dict[str, float]:
        rows = await self._call(
            self._rows,
            "SELECT account_id, min_score FROM account_settings WHERE min_score IS NOT NULL",
        )
        return dict(rows)

    async def set_account_min_score(self, account_id: str, min_score: float | None) -> None:
        await self._call(self._set_min_score, account_id, min_score)

    # --- on the store's thread ------------------------------------------------------

    def _rows(self, sql: str, *parameters: object) -> list[Any]:
        return self._connection.execute(sql, parameters).fetchall()

    def _create_experiment(self, record: ExperimentRecord) -> ExperimentRecord | None:
        with transaction(self._connection) as db:  # BEGIN IMMEDIATE: one writer at a time
            row = db.execute(
                f"SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE state IN ({OPEN})"
            ).fetchone()
            if row is not None:
                return experiment_of(row)
            db.execute(
                f"INSERT INTO experiments ({EXPERIMENT_COLUMNS}) VALUES ({PLACEHOLDERS_11})",
                experiment_values(record),
            )
            append_change(db, ChangeKind.EXPERIMENTS, record.created_at)
        return None

    def _save_experiment(self, record: ExperimentRecord) -> None:
        with transaction(self._connection) as db:
            db.execute(
                f"INSERT OR REPLACE INTO experiments ({EXPERIMENT_COLUMNS})"
                f" VALUES ({PLACEHOLDERS_11})",
                experiment_values(record),
            )
            append_change(db, ChangeKind.EXPERIMENTS, utc_now())

    def _log_recommendations(self, rows: Sequence[LoggedRecommendation]) -> int:
        with transaction(self._connection) as db:
            before = db.total_changes
            db.executemany(
                f"INSERT OR IGNORE INTO recommendation_log ({LOG_COLUMNS})"
                f" VALUES ({PLACEHOLDERS_9})",
                [logged_values(row) for row in rows],
            )
            return db.total_changes - before

    def _add_feedback(self, events: Sequence[Feedback]) -> list[bool]:
        with transaction(self._connection) as db:
            return [
                db.execute(
                    f"INSERT INTO feedback ({FEEDBACK_COLUMNS})"
                    " SELECT ?, ?, ?, ? WHERE EXISTS"
                    " (SELECT 1 FROM recommendation_log WHERE request_id = ?)"
                    " ON CONFLICT (request_id, article_id, event) DO NOTHING",
                    (e.request_id, e.article_id, e.event.value, e.at, e.request_id),
                ).rowcount
                > 0
                for e in events
            ]

    def _outcomes(self, experiment_id: str | None, account_id: str | None) -> list[LoggedOutcome]:
        where, parameters = outcome_filter(experiment_id, account_id)
        logged = self._rows(
            f"SELECT {LOG_COLUMNS} FROM recommendation_log l {where} ORDER BY l.at, l.request_id",
            *parameters,
        )
        feedback = self._rows(
            "SELECT f.request_id, f.article_id, f.event, f.at"
            f" FROM feedback f JOIN recommendation_log l USING (request_id) {where}"
            " ORDER BY f.at",
            *parameters,
        )
        return outcomes_of([logged_of(r) for r in logged], [feedback_of(r) for r in feedback])

    def _prune_log(self, before: str) -> int:
        with transaction(self._connection) as db:
            return db.execute("DELETE FROM recommendation_log WHERE at < ?", (before,)).rowcount

    def _set_min_score(self, account_id: str, min_score: float | None) -> None:
        with transaction(self._connection) as db:
            db.execute(
                "INSERT INTO account_settings (account_id, min_score) VALUES (?, ?)"
                " ON CONFLICT (account_id) DO UPDATE SET min_score = excluded.min_score",
                (account_id, min_score),
            )
            append_change(db, ChangeKind.ACCOUNT_SETTINGS, utc_now(), account_id)


def outcome_filter(experiment_id: str | None, account_id: str | None) -> tuple[str, list[str]]:
    """The WHERE clause (over `recommendation_log l`) of `logged_outcomes`."""
    conditions = []
    parameters = []
    for column, value in (("experiment_id", experiment_id), ("account_id", account_id)):
        if value is not None:
            conditions.append(f"l.{column} = ?")
            parameters.append(value)
    return ("WHERE " + " AND ".join(conditions)) if conditions else "", parameters
