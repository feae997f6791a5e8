"""What the store keeps for A/B experiments and feedback (`server.experiments`): the
experiment records, the recommendation log with its feedback events, and the accounts'
minimum scores.

- An experiment is open (`waiting` for its treatment's vectors, then `running`) until it
  is `stopped`; at most one is open at a time, checked in the transaction that creates
  one. Saving a record appends an `experiments` change, so every process learns of a
  start or a stop through the change feed.
- The recommendation log holds one row per answered request: its ranked article ids and
  scores, the model version, experiment and arm; the ticket text only when configured.
  It is written in batches off the request path and is not in the change log (nothing
  in memory depends on it). Feedback events reference a logged request and go with it
  when the retention deletes it.
- An account's minimum score (the precision knob) appends an `account_settings` change.

Both stores implement this protocol as a mixin (`sqlite_experiments`,
`postgres_experiments`); the article ids and scores of a logged request are stored as
JSON text in either.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol


class ExperimentState(enum.StrEnum):
    WAITING = "waiting"  # the treatment's articles are being embedded
    RUNNING = "running"  # traffic is split between the arms
    STOPPED = "stopped"


OPEN_STATES: Final = (ExperimentState.WAITING, ExperimentState.RUNNING)


@dataclass(frozen=True)
class ExperimentRecord:
    experiment_id: str
    control_version: int
    treatment_version: int
    treatment_share: float  # of the units, in (0, 1)
    unit: str  # what is assigned: "account" or "key" (server.experiments.assignment.Unit)
    state: ExperimentState
    created_at: str  # ISO 8601 UTC, as every store timestamp
    started_at: str | None = None  # when it began running
    stopped_at: str | None = None
    winner: str | None = None  # "control" or "treatment", decided at the stop
    activated: bool = False  # the winner was activated at the stop

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


class FeedbackEvent(enum.StrEnum):
    CLICKED = "clicked"  # the customer opened the article
    HELPFUL = "helpful"  # ... and said it helped
    NOT_HELPFUL = "not_helpful"
    TICKET_SOLVED = "ticket_solved"  # the ticket was solved without an agent


# Events about one article of the response; `ticket_solved` is about the request.
ARTICLE_EVENTS: Final = frozenset(
    {FeedbackEvent.CLICKED, FeedbackEvent.HELPFUL, FeedbackEvent.NOT_HELPFUL}
)
NO_ARTICLE: Final = ""  # the article id of an event about the request as a whole


@dataclass(frozen=True)
class LoggedRecommendation:
    request_id: str
    account_id: str
    model_version: int
    article_ids: tuple[str, ...]  # ranked, best first
    scores: tuple[float, ...]
    at: str
    experiment_id: str | None = None
    arm: str | None = None  # "control" or "treatment" within the experiment
    query_text: str | None = None  # only with --log-query-text


@dataclass(frozen=True)
class Feedback:
    request_id: str
    article_id: str  # NO_ARTICLE for an event about the request
    event: FeedbackEvent
    at: str


@dataclass(frozen=True)
class LoggedOutcome:
    """A logged request and every feedback event about it."""

    recommendation: LoggedRecommendation
    feedback: tuple[Feedback, ...]


# The columns both stores read and write, in the order of the record functions below.
EXPERIMENT_COLUMNS: Final = (
    "experiment_id, control_version, treatment_version, treatment_share, unit, state,"
    " created_at, started_at, stopped_at, winner, activated"
)
LOG_COLUMNS: Final = (
    "request_id, account_id, model_version, article_ids, scores, at, experiment_id, arm, query_text"
)
FEEDBACK_COLUMNS: Final = "request_id, article_id, event, at"


def experiment_of(row: Sequence[Any]) -> ExperimentRecord:
    *fields, activated = row
    fields[5] = ExperimentState(fields[5])
    return ExperimentRecord(*fields, activated=bool(activated))


def experiment_values(record: ExperimentRecord) -> tuple[object, ...]:
    return (
        record.experiment_id,
        record.control_version,
        record.treatment_version,
        record.treatment_share,
        record.unit,
        record.state.value,
        record.created_at,
        record.started_at,
        record.stopped_at,
        record.winner,
        record.activated,
    )


def logged_of(row: Sequence[Any]) -> LoggedRecommendation:
    request_id, account_id, version, article_ids, scores, *rest = row
    ids, values = tuple(json.loads(article_ids)), tuple(json.loads(scores))
    return LoggedRecommendation(request_id, account_id, version, ids, values, *rest)


def logged_values(row: LoggedRecommendation) -> tuple[object, ...]:
    return (
        row.request_id,
        row.account_id,
        row.model_version,
        json.dumps(list(row.article_ids)),
        json.dumps(list(row.scores)),
        row.at,
        row.experiment_id,
        row.arm,
        row.query_text,
    )


def feedback_of(row: Sequence[Any]) -> Feedback:
    request_id, article_id, event, at = row
    return Feedback(request_id, article_id, FeedbackEvent(event), at)


def outcomes_of(
    logged: Sequence[LoggedRecommendation], feedback: Sequence[Feedback]
) -> list[LoggedOutcome]:
    """Each logged request with its events, in the order of `logged`."""
    events: dict[str, list[Feedback]] = {}
    for event in feedback:
        events.setdefault(event.request_id, []).append(event)
    return [LoggedOutcome(row, tuple(events.get(row.request_id, ()))) for row in logged]


class ExperimentTables(Protocol):
    """The experiments' part of `ArticleStore`."""

    async def create_experiment(self, record: ExperimentRecord) -> ExperimentRecord | None:
        """Insert a new open experiment, unless one is open already (checked in the same
        transaction): then nothing is written and the open one is returned."""
        ...

    async def save_experiment(self, record: ExperimentRecord) -> None:
        """Replace an experiment's record (its state, winner, ...)."""
        ...

    async def experiment_records(self) -> list[ExperimentRecord]:
        """Every experiment, the newest first."""
        ...

    async def log_recommendations(self, rows: Sequence[LoggedRecommendation]) -> int:
        """Add rows to the recommendation log in one transaction (a request id already
        logged is skipped); returns how many were added."""
        ...

    async def logged_recommendation(self, request_id: str) -> LoggedRecommendation | None: ...

    async def add_feedback(self, events: Sequence[Feedback]) -> list[bool]:
        """Record events about logged requests; True where new (an event is recorded
        once per (request, article, event); the request must be logged)."""
        ...

    async def logged_outcomes(
        self, *, experiment_id: str | None = None, account_id: str | None = None
    ) -> list[LoggedOutcome]:
        """Logged requests of an experiment, or of an account, with their feedback, oldest
        first."""
        ...

    async def prune_recommendation_log(self, before: str) -> int:
        """Delete logged requests older than `before` (ISO 8601) and their feedback;
        returns how many requests were deleted."""
        ...

    async def account_min_scores(self) -> dict[str, float]:
        """Account → its minimum score, for the accounts that set one."""
        ...

    async def set_account_min_score(self, account_id: str, min_score: float | None) -> None:
        """Set an account's minimum score (None: the service's default applies)."""
        ...
