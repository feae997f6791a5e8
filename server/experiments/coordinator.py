"""The service's A/B experiment: which arm (and so which model version) answers a
request, the recommendation log and the feedback on it, and the experiment's start and
stop.

Control is the active version, treatment the standby loaded as a TRIAL
(`ModelLifecycle.load_trial`): both stay loaded and current, since every article write
embeds with every live version. One experiment is open at a time. Starting one
records it `waiting` (unless its treatment is complete already), and the leader marks
it `running` once the treatment's backfill completes (`trial_completed`, or at the
latest its next `tick`). Stopping it records the winner, then ends the trial through
the lifecycle: activated with the normal switch, kept as the previous version, or
retired.

Every process follows the records through the change feed (`refresh`) and routes a
request to an arm only while the experiment runs and both of its versions answer
here (the active one is the control, the trial is complete); otherwise the request
is answered by the active version outside the experiment, and logged as such. The
arm is a sticky hash of the unit (`assignment.arm_for`): the account, or the
caller's user/ticket key within the account.

Leader-only operations (`start`, `stop`, the repairs of `tick`) raise `NotLeader`
elsewhere, like model activations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from server.errors import ExperimentNotFound, InvalidRequest, NotLeader, RequestNotLogged
from server.experiments.assignment import Arm, Unit, arm_for
from server.experiments.min_scores import MinScores
from server.experiments.recommendation_log import RecommendationLog
from server.experiments.report import ExperimentReport, build_report
from server.inference.ranking import ScoredArticle
from server.inference.serving_model import ServingModel
from server.storage.experiment_tables import (
    ARTICLE_EVENTS,
    NO_ARTICLE,
    ExperimentRecord,
    ExperimentState,
    Feedback,
    FeedbackEvent,
    LoggedRecommendation,
)
from server.storage.store import ArticleStore, utc_now
from server.versions.lifecycle import ModelLifecycle

log = logging.getLogger(__name__)

PRUNE_LOG_EVERY_S: Final = 3600.0  # the leader deletes logged requests past retention


class ExperimentObserver(Protocol):
    """Per-arm counters (`Metrics`)."""

    def observe_arm_request(self, experiment_id: str, arm: str) -> None: ...

    def observe_feedback(self, experiment_id: str, arm: str, event: str) -> None: ...


@dataclass(frozen=True)
class LogPolicy:
    """What the recommendation log keeps (`--recommendation-log` and friends; their
    defaults are `FeedbackSettings`')."""

    enabled: bool
    query_text: bool  # the ticket text too
    retention_days: float  # 0: kept for ever
    flush_s: float
    max_queue: int


@dataclass(frozen=True)
class Route:
    """A request's place in the running experiment."""

    experiment_id: str
    arm: Arm
    model: ServingModel


def new_experiment_id() -> str:
    return f"exp-{secrets.token_hex(6)}"


class Experiments:
    def __init__(
        self,
        store: ArticleStore,
        lifecycle: ModelLifecycle,
        policy: LogPolicy,
        min_scores: MinScores,
        observer: ExperimentObserver | None = None,
    ) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._policy = policy
        self.min_scores = min_scores
        self._observer = observer
        self.log = (
            RecommendationLog(store, flush_s=policy.flush_s, max_queue=policy.max_queue)
            if policy.enabled
            else None
        )
        self._open: ExperimentRecord | None = None  # as the store last said
        self._routing: ExperimentRecord | None = None  # running, and both arms answer here
        self._lock = asyncio.Lock()  # the leader's starts, stops and repairs, one at a time
        self._pruned_at = time.monotonic()

    # --- following the records (every process) ----------------------------------------

    def start_logging(self) -> None:
        if self.log is not None:
            self.log.start()

    async def close(self) -> None:
        if self.log is not None:
            await self.log.close()

    async def refresh(self) -> None:
        """Re-read the experiments and the accounts' minimum scores (at start, and when
        the change feed brings a change of either)."""
        records = await self._store.experiment_records()
        self._open = next((record for record in records if record.open), None)
        await self.min_scores.refresh(self._store)
        await self._update_routing()

    async def _update_routing(self) -> None:
        record = self._open
        running = record is not None and record.state is ExperimentState.RUNNING
        if running and await self._lifecycle.trial_complete(record.treatment_version):
            self._routing = record
        else:
            self._routing = None

    # --- the request path ----------------------------------------------------------------

    def route(self, account_id: str, assignment_key: str | None) -> Route | None:
        """The arm and model of a request, None outside a running experiment."""
        record = self._routing
        if record is None:
            return None
        unit = account_id
        if record.unit == Unit.KEY and assignment_key is not None:
            unit = f"{account_id}/{assignment_key}"  # ticket and user ids are per account
        arm = arm_for(record.experiment_id, unit, record.treatment_share)
        live = self._lifecycle.live
        if arm is Arm.CONTROL:
            model = live.active
            if model.number != record.control_version:
                return None  # switched meanwhile: the experiment is over
        else:
            trial = live.standby
            if trial is None or trial.number != record.treatment_version or not trial.complete:
                return None
            model = trial.model
        if self._observer is not None:
            self._observer.observe_arm_request(record.experiment_id, arm.value)
        return Route(record.experiment_id, arm, model)

    def record(
        self,
        request_id: str,
        account_id: str,
        model_version: int,
        articles: Sequence[ScoredArticle],
        route: Route | None,
        text: str,
    ) -> None:
        """Log an answered request (queued; written off the request path)."""
        if self.log is None:
            return
        self.log.record(
            LoggedRecommendation(
                request_id,
                account_id,
                model_version,
                tuple(article.article_id for article in articles),
                tuple(round(article.score, 6) for article in articles),
                utc_now(),
                None if route is None else route.experiment_id,
                None if route is None else route.arm.value,
                text if self._policy.query_text else None,
            )
        )

    # --- feedback --------------------------------------------------------------------------

    async def logged(self, request_id: str) -> LoggedRecommendation:
        """The logged request, waiting up to one flush interval for it: it may still be
        queued here, or in another process (`RequestNotLogged` after that)."""
        found = await self._store.logged_recommendation(request_id)
        if found is None and self.log is not None:
            await self.log.flush()
            found = await self._store.logged_recommendation(request_id)
        if found is None:
            await asyncio.sleep(self._policy.flush_s)
            found = await self._store.logged_recommendation(request_id)
        if found is None:
            raise RequestNotLogged(request_id)
        return found

    async def add_feedback(
        self, logged: LoggedRecommendation, article_id: str | None, event: FeedbackEvent
    ) -> bool:
        """Record an event about a logged request; False if it was recorded before."""
        if article_id is None and event in ARTICLE_EVENTS:
            raise InvalidRequest(f"'article_id' is required for the event {event.value!r}")
        if article_id is not None and article_id not in logged.article_ids:
            raise InvalidRequest(
                f"article {article_id!r} was not recommended in request {logged.request_id!r}",
                "article_not_in_response",
            )
        feedback = Feedback(logged.request_id, article_id or NO_ARTICLE, event, utc_now())
        (new,) = await self._store.add_feedback([feedback])
        if new and self._observer is not None and logged.experiment_id and logged.arm:
            self._observer.observe_feedback(logged.experiment_id, logged.arm, event.value)
        return new

    # --- reports ---------------------------------------------------------------------------

    async def records(self) -> list[ExperimentRecord]:
        return await self._store.experiment_records()

    async def report(self, experiment_id: str) -> ExperimentReport:
        record = await self._record(experiment_id)
        if self.log is not None:
            await self.log.flush()  # what this process answered so far counts
        outcomes = await self._store.logged_outcomes(experiment_id=experiment_id)
        return build_report(record, outcomes)

    async def set_min_score(self, account_id: str, min_score: float | None) -> None:
        await self._store.set_account_min_score(account_id, min_score)
        await self.min_scores.refresh(self._store)  # here at once; elsewhere by the feed

    # --- the leader's operations -----------------------------------------------------------

    async def start(
        self, treatment: int, share: float, unit: Unit, control: int | None = None
    ) -> ExperimentRecord:
        """Load `treatment` as the trial next to the active version (the control) and
        record the experiment: running if the trial is complete, else waiting."""
        async with self._lock:
            self._require_leader()
            active = self._lifecycle.live.active.number
            if control is not None and control != active:
                raise InvalidRequest(
                    f"the control must be the active model version ({active}), got {control}"
                )
            if treatment == active:
                raise InvalidRequest(
                    f"the treatment must differ from the control (model version {active})"
                )
            open_now = next((r for r in await self._store.experiment_records() if r.open), None)
            if open_now is not None:
                raise experiment_open(open_now)
            await self._lifecycle.load_trial(treatment)
            record = ExperimentRecord(
                new_experiment_id(),
                active,
                treatment,
                share,
                unit.value,
                ExperimentState.WAITING,
                utc_now(),
            )
            found = await self._store.create_experiment(record)
            if found is not None:  # another leader's, in a moment of two leaders
                raise experiment_open(found)
            log.info(
                "experiment %s: version %d (control) against %d (treatment), %.0f%% by %s",
                record.experiment_id,
                active,
                treatment,
                share * 100,
                unit.value,
            )
            record = await self._run_if_complete(record)
            await self.refresh()
            return record

    async def stop(
        self, experiment_id: str, *, activate_winner: bool, winner: Arm | None
    ) -> tuple[ExperimentRecord, ExperimentReport]:
        """Stop the experiment and keep its winner (`winner`, else the report's, else the
        control): activated through the normal switch if asked, else a winning treatment
        stays as the previous version, a losing one is retired."""
        async with self._lock:
            self._require_leader()
            record = await self._record(experiment_id)
            if not record.open:
                raise InvalidRequest(
                    f"experiment {experiment_id!r} is stopped already", "experiment_stopped", 409
                )
            if self.log is not None:
                await self.log.flush()  # this process's requests count too
            outcomes = await self._store.logged_outcomes(experiment_id=experiment_id)
            chosen = winner or build_report(record, outcomes).winner or Arm.CONTROL
            activate = activate_winner and chosen is Arm.TREATMENT
            stopped = dataclasses.replace(
                record,
                state=ExperimentState.STOPPED,
                stopped_at=utc_now(),
                winner=chosen.value,
                activated=activate,
            )
            await self._store.save_experiment(stopped)  # first: no more splitting anywhere
            await self.refresh()
            await self._lifecycle.end_trial(
                record.treatment_version, activate=activate, keep=chosen is Arm.TREATMENT
            )
            log.info("experiment %s stopped: the %s wins", experiment_id, chosen.value)
            return stopped, build_report(stopped, outcomes)

    async def trial_completed(self, number: int) -> None:
        """The lifecycle's word that trial `number` is complete: start its experiment."""
        async with self._lock:
            records = await self._store.experiment_records()
            record = next((r for r in records if r.open), None)
            if record is not None and record.treatment_version == number:
                await self._run_if_complete(record)
                await self.refresh()

    async def tick(self) -> None:
        """Every few seconds in every process: route as the records and the loaded
        versions say now; the leader also repairs what a failure left half done and
        prunes the log."""
        if self._lifecycle.leader:
            async with self._lock:
                await self._repair()
            if time.monotonic() - self._pruned_at > PRUNE_LOG_EVERY_S:
                self._pruned_at = time.monotonic()
                await self.prune_log()
        await self._update_routing()

    async def prune_log(self) -> int:
        days = self._policy.retention_days
        if days <= 0:
            return 0
        before = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
        deleted = await self._store.prune_recommendation_log(before)
        if deleted:
            log.info("recommendation log: %d requests older than %s deleted", deleted, before)
        return deleted

    async def _repair(self) -> None:
        if self._open is None and self._lifecycle.trial is None:
            return  # nothing half done (`_open` follows the store through the feed)
        records = await self._store.experiment_records()
        record = next((r for r in records if r.open), None)
        trial = self._lifecycle.trial
        if record is None:
            if trial is not None:  # a start that failed after loading it: keep, not trial
                await self._lifecycle.end_trial(trial.number, activate=False, keep=True)
            return
        if trial is None or trial.number != record.treatment_version:
            log.error(
                "experiment %s: its treatment, version %d, is not loaded (failed?); stopping it",
                record.experiment_id,
                record.treatment_version,
            )
            stopped = dataclasses.replace(
                record, state=ExperimentState.STOPPED, stopped_at=utc_now(), winner="control"
            )
            await self._store.save_experiment(stopped)
        elif record.state is ExperimentState.WAITING:
            await self._run_if_complete(record)
        else:
            return
        await self.refresh()

    async def _run_if_complete(self, record: ExperimentRecord) -> ExperimentRecord:
        if record.state is not ExperimentState.WAITING:
            return record
        if not await self._lifecycle.trial_complete(record.treatment_version):
            return record
        running = dataclasses.replace(record, state=ExperimentState.RUNNING, started_at=utc_now())
        await self._store.save_experiment(running)
        log.info("experiment %s is running", record.experiment_id)
        return running

    async def _record(self, experiment_id: str) -> ExperimentRecord:
        for record in await self._store.experiment_records():
            if record.experiment_id == experiment_id:
                return record
        raise ExperimentNotFound(experiment_id)

    def _require_leader(self) -> None:
        if not self._lifecycle.leader:
            raise NotLeader("this process follows the leader, which starts and stops experiments")


def experiment_open(record: ExperimentRecord) -> InvalidRequest:
    return InvalidRequest(
        f"experiment {record.experiment_id} is {record.state.value}: stop it first "
        "(one experiment at a time)",
        "experiment_open",
        409,
    )
