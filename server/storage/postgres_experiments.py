"""The experiments' tables on PostgreSQL (`ExperimentTables`), mixed into
`PostgresArticleStore`: writes that append a change take the store's changes lock
(`_writing`), the others a plain transaction."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from server.storage.experiment_tables import (
    EXPERIMENT_COLUMNS,
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
from server.storage.store import ChangeKind

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from server.storage.postgres import WriteTransaction

OPEN = [state.value for state in OPEN_STATES]
APPEND_CHANGE = "INSERT INTO changes (kind, account_id, at) VALUES (%s, %s, %s)"
SAVE_EXPERIMENT = (
    f"INSERT INTO experiments ({EXPERIMENT_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})"
    " ON CONFLICT (experiment_id) DO UPDATE SET control_version = excluded.control_version,"
    " treatment_version = excluded.treatment_version,"
    " treatment_share = excluded.treatment_share, unit = excluded.unit,"
    " state = excluded.state, created_at = excluded.created_at,"
    " started_at = excluded.started_at, stopped_at = excluded.stopped_at,"
    " winner = excluded.winner, activated = excluded.activated"
)
# One statement for a batch: a column array each.
LOG_ROWS = (
    f"INSERT INTO recommendation_log ({LOG_COLUMNS})"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::integer[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::text[])"
    " ON CONFLICT (request_id) DO NOTHING"
)
ADD_FEEDBACK = (
    "INSERT INTO feedback (request_id, article_id, event, at)"
    " SELECT %(request)s, %(article)s, %(event)s, %(at)s WHERE EXISTS"
    " (SELECT 1 FROM recommendation_log WHERE request_id = %(request)s)"
    " ON CONFLICT (request_id, article_id, event) DO NOTHING RETURNING 1"
)


class PostgresExperimentTables:
    if TYPE_CHECKING:  # the store's, which this class is mixed into

        def _writing(self) -> AbstractAsyncContextManager[WriteTransaction]: ...

        def _transaction(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

        async def _fetch_all(
            self, sql: str, parameters: Any = None, *, binary: bool = False
        ) -> list[tuple[Any, ...]]: ...

    async def create_experiment(self, record: ExperimentRecord) -> ExperimentRecord | None:
        # Under the changes lock: no other write transaction runs meanwhile.
        async with self._writing() as tx:
            cursor = await tx.connection.execute(
                f"SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE state = ANY(%s)", (OPEN,)
            )
            row = await cursor.fetchone()
            if row is not None:
                return experiment_of(row)
            await tx.connection.execute(SAVE_EXPERIMENT, experiment_values(record))
            await tx.connection.execute(
                APPEND_CHANGE, (ChangeKind.EXPERIMENTS.value, None, record.created_at)
            )
            tx.changed = True
        return None

    async def save_experiment(self, record: ExperimentRecord) -> None:
        async with self._writing() as tx:
            await tx.connection.execute(SAVE_EXPERIMENT, experiment_values(record))
            await tx.connection.execute(APPEND_CHANGE, (ChangeKind.EXPERIMENTS.value, None, tx.at))
            tx.changed = True

    async def experiment_records(self) -> list[ExperimentRecord]:
        rows = await self._fetch_all(
            f"SELECT {EXPERIMENT_COLUMNS} FROM experiments"
            " ORDER BY created_at DESC, experiment_id DESC"
        )
        return [experiment_of(row) for row in rows]

    async def log_recommendations(self, rows: Sequence[LoggedRecommendation]) -> int:
        if not rows:
            return 0
        columns = [list(column) for column in zip(*map(logged_values, rows), strict=True)]
        async with self._transaction() as db:
            cursor = await db.execute(LOG_ROWS, columns)
            return cursor.rowcount

    async def logged_recommendation(self, request_id: str) -> LoggedRecommendation | None:
        rows = await self._fetch_all(
            f"SELECT {LOG_COLUMNS} FROM recommendation_log WHERE request_id = %s", (request_id,)
        )
        return logged_of(rows[0]) if rows else None

    async def add_feedback(self, events: Sequence[Feedback]) -> list[bool]:
        if not events:
            return []
        async with self._transaction() as db, db.pipeline():
            cursors = []
            for event in events:
                cursor = db.cursor()
                await cursor.execute(
                    ADD_FEEDBACK,
                    {
                        "request": event.request_id,
                        "article": event.article_id,
                        "event": event.event.value,
                        "at": event.at,
                    },
                )
                cursors.append(cursor)
            return [await cursor.fetchone() is not None for cursor in cursors]

    async def logged_outcomes(
        self, *, experiment_id: str | None = None, account_id: str | None = None
    ) -> list[LoggedOutcome]:
        conditions = [
            f"l.{column} = %({column})s"
            for column, value in (("experiment_id", experiment_id), ("account_id", account_id))
            if value is not None
        ]
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        parameters = {"experiment_id": experiment_id, "account_id": account_id} if where else None
        logged = await self._fetch_all(
            f"SELECT {LOG_COLUMNS} FROM recommendation_log l {where} ORDER BY l.at, l.request_id",
            parameters,
        )
        feedback = await self._fetch_all(
            "SELECT f.request_id, f.article_id, f.event, f.at"
            f" FROM feedback f JOIN recommendation_log l USING (request_id) {where}"
            " ORDER BY f.at",
            parameters,
        )
        return outcomes_of([logged_of(r) for r in logged], [feedback_of(r) for r in feedback])

    async def prune_recommendation_log(self, before: str) -> int:
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM recommendation_log WHERE at < %s", (before,))
            return cursor.rowcount

    async def account_min_scores(self) -> dict[str, float]:
        rows = await self._fetch_all(
            "SELECT account_id, min_score FROM account_settings WHERE min_score IS NOT NULL"
        )
        return {account_id: min_score for account_id, min_score in rows}

    async def set_account_min_score(self, account_id: str, min_score: float | None) -> None:
        async with self._writing() as tx:
            await tx.connection.execute(
                "INSERT INTO account_settings (account_id, min_score) VALUES (%s, %s)"
                " ON CONFLICT (account_id) DO UPDATE SET min_score = excluded.min_score",
                (account_id, min_score),
            )
            kind = ChangeKind.ACCOUNT_SETTINGS.value
            await tx.connection.execute(APPEND_CHANGE, (kind, account_id, tx.at))
            tx.changed = True
