"""Model versions over the service's life: which one serves, which one is coming in,
which one stays for a rollback, and the re-embedding that has to happen in between.

Roles (`VersionRole`, persisted, changed only through `VersionRoles.change*` and its
transition table): ACTIVE serves every query. At most one more version is live next
to it, the standby (`server.versions.live_set.Standby`): a CANDIDATE, whose
articles are being re-embedded and which becomes active the moment every article
has a vector of it, or the PREVIOUS active, kept current so that activating it
again is an instant rollback. A version that fails validation or loading is FAILED
(with the reason) and never activated by itself; versions no longer kept are
RETIRED and their vectors deleted. A TRIAL is the standby of an A/B experiment
(`server.experiments`): loaded and backfilled like a candidate, but never switched in
by itself; `end_trial` decides what becomes of it when the experiment stops.

What is live, and the commit lock that keeps writes, backfill and switches in
order, belong to `LiveVersions`; this class decides what to load, retire and
switch. Its own lock makes lifecycle changes one at a time. New versions come from
a watch on the repository (a version newer than any the store has a record of
becomes the candidate) or from `activate` (operators). See docs/architecture.md,
"Model upgrades".

Nothing a version directory holds can stop the service: any exception while
verifying or loading a version marks that version failed with the reason (only the
leader records it), start-up moves on to the next choice, and the watch logs what
went wrong and polls again (`watch_alive`, `last_check_at` for the metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kbrec.repository import ModelVersion, version_entries, warn_foreign
from server.errors import (
    InvalidRequest,
    NotLeader,
    ServiceError,
    StartupError,
    TrialInProgress,
    VersionNotFound,
    VersionRejected,
)
from server.inference.backends.base import BackendError
from server.inference.serving_model import ModelLoader, ServingModel
from server.storage.store import LIVE_ROLES, ArticleStore, StoreError, VersionRole
from server.versions.backfill import BackfillPacing, backfill
from server.versions.live_set import LiveVersions, Standby
from server.versions.progress import BackfillProgress
from server.versions.roles import VersionRoles
from server.versions.verification import VersionStatus, scan_repository, verify_status

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
# A retired version's queued queries get this long to finish before its batcher closes.
RETIRE_DRAIN_S = 5.0
# The roles of a version loaded next to the active one.
STANDBY_ROLES = (VersionRole.CANDIDATE, VersionRole.PREVIOUS, VersionRole.TRIAL)


@dataclass(frozen=True)
class Activation:
    """Outcome of `activate`: switched now, or an upgrade that switches when complete."""

    active: int
    switched: bool
    pending: Standby | None = None


class ModelLifecycle:
    def __init__(
        self,
        repository: Path,
        store: ArticleStore,
        loader: ModelLoader,
        *,
        pacing: BackfillPacing,
        poll_s: float = 2.0,
    ) -> None:
        self._repository = repository
        self._store = store
        self._loader = loader
        self._pacing = pacing
        self._poll_s = poll_s
        self.live = LiveVersions(store)
        self.roles = VersionRoles(store)
        self._lock = asyncio.Lock()  # one lifecycle change at a time
        self._versions: dict[int, VersionStatus] = {}  # the repository, verified once each
        self._watcher: asyncio.Task[None] | None = None
        self._foreign: set[str] = set()  # directories not named as versions, warned once
        # Wall-clock time (s) the last repository check completed, None before the first.
        self.last_check_at: float | None = None
        self._active_backfill: asyncio.Task[None] | None = None
        # Only the leader (elected through the store) changes roles, tells Triton what
        # to hold, backfills and watches the repository; the others follow the records.
        self.leader = False
        # Told (the leader only, outside the lifecycle's lock) when a TRIAL's backfill
        # completes: its experiment can start (server.experiments).
        self.on_trial_complete: Callable[[int], Awaitable[None]] | None = None

    # --- views -------------------------------------------------------------------

    @property
    def watch_alive(self) -> bool:
        """The repository watch runs (the leader's only; it survives failed checks)."""
        return self._watcher is not None and not self._watcher.done()

    @property
    def upgrade(self) -> Standby | None:
        """The candidate on its way in, if any."""
        standby = self.live.standby
        return standby if standby is not None and standby.role is VersionRole.CANDIDATE else None

    @property
    def trial(self) -> Standby | None:
        """The standby of an A/B experiment, if any."""
        standby = self.live.standby
        return standby if standby is not None and standby.role is VersionRole.TRIAL else None

    def version_states(self) -> Iterator[tuple[int, str, VersionStatus | None, str | None]]:
        """(number, state, repository status, error) for every version known, by number."""
        standby = self.live.standby
        for number in sorted(self._versions.keys() | self.roles.numbers()):
            status = self._versions.get(number)
            record = self.roles.get(number)
            error = record.error if record is not None else None
            if number == self.live.active_number:
                state = VersionRole.ACTIVE.value
            elif standby is not None and number == standby.number:
                state = standby.role.value
            elif status is not None and status.version is None:
                state, error = VersionRole.FAILED.value, status.error
            elif status is None:
                state = "missing"  # recorded, but gone from the repository
            elif record is not None and record.role in (VersionRole.FAILED, VersionRole.RETIRED):
                state = record.role.value
            else:
                state = "available"
            yield number, state, status, error

    # --- start and stop ----------------------------------------------------------

    async def open_active(self) -> ServingModel:
        """Load the version to serve: the recorded active one, else the newest valid one."""
        await self.roles.load()
        await self._rescan()
        await self._forget_replaced_versions()
        await self._fail_invalid_recorded()
        for version in self._active_choices():
            try:
                await self._loader.backends.hold([version])  # the standby follows once serving
                model = await self._loader.open(version)
            except Exception as exc:  # whatever the files do: the next choice
                reason = failure_reason(exc)
                log.error("version %d cannot be served: %s", version.number, reason)
                await self._mark_failed(version, reason)
                continue
            await self.roles.change(version.number, VersionRole.ACTIVE, version.model_sha256)
            for number in self.roles.with_role(VersionRole.ACTIVE):  # one active record
                if number != version.number:
                    await self.roles.change(number, VersionRole.RETIRED)
            await self.live.serve(model)
            return model
        raise StartupError(
            f"no valid model version in {self._repository} "
            f"({len(self._versions)} published; see the warnings above)"
        )

    async def build_active_index(self) -> None:
        """Index the active version: stored vectors, then embed what lacks one (full speed)."""
        model = self.live.active
        stored = await self.live.load_stored(model)
        missing = await self.live.count_missing(model)
        log.info(
            "index of version %d: %d stored vectors, %d articles to embed",
            model.number,
            stored,
            missing,
        )
        progress = BackfillProgress(model.number)
        await backfill(self.live, model, BackfillPacing(), progress, background=False)

    async def start_background(self) -> None:
        """Once serving: resume a recorded standby, delete vectors no longer kept, watch."""
        async with self._lock:
            for record in self.roles.records():
                if record.role not in STANDBY_ROLES:
                    continue
                standby = self.live.standby
                if standby is not None and standby.number == record.version:
                    break  # loaded while following (`lead` resumed its backfill)
                version = self._valid(record.version)
                if version is None:
                    await self.roles.change(record.version, VersionRole.RETIRED)
                    continue
                with contextlib.suppress(VersionRejected):
                    await self._load_standby(version, record.role)
                break  # one standby at most
            await self._delete_unkept_vectors()
        self._start_watching()

    # --- following the leader ------------------------------------------------------

    async def open_followed_active(self) -> ServingModel | None:
        """A follower's start: load the version the leader recorded as active (its
        index comes from the store); None while no version is recorded active."""
        await self.roles.load()
        active = self.roles.with_role(VersionRole.ACTIVE)
        if not active:
            return None
        version = await self._followed_version(max(active))
        model = await self._loader.open(version)
        await self.live.serve(model)
        await self.live.load_stored(model)
        return model

    async def follow(self) -> None:
        """Load, switch and drop versions as the leader recorded them (the change feed
        calls this on every change of the records). The leader made them: no-op there."""
        async with self._lock:
            if self.leader:
                return
            await self.roles.load()
            await self._follow_active()
            await self._follow_standby()

    async def lead(self) -> None:
        """This process was elected: take over what a leader does, from the records
        (a backfill resumes from the store: what has a vector is not embedded again)."""
        async with self._lock:
            self.leader = True
            await self.roles.load()
            await self._loader.backends.hold([model.version for model in self.live.models()])
            active = self.live.active
            if await self.live.count_missing(active):  # the old leader was building it
                self._active_backfill = asyncio.get_running_loop().create_task(
                    self._complete_active(active), name=f"backfill-active-v{active.number}"
                )
            standby = self.live.standby
            if standby is not None and standby.task is None:
                standby.task = asyncio.get_running_loop().create_task(
                    self._complete(standby), name=f"backfill-v{standby.number}"
                )
            await self._delete_unkept_vectors()
        self._start_watching()

    async def _follow_active(self) -> None:
        recorded = self.roles.with_role(VersionRole.ACTIVE)
        if not recorded or max(recorded) == self.live.active_number:
            return
        number = max(recorded)
        standby = self.live.standby
        if standby is not None and standby.number == number:
            await self.live.switch(standby, None)
        else:  # the leader serves a version this process has not loaded
            model = await self._loader.open(await self._followed_version(number))
            old = await self.live.replace_active(model)
            if old is not None:
                await old.close(drain_s=RETIRE_DRAIN_S)
        log.info("following the leader: model version %d is active", number)

    async def _follow_standby(self) -> None:
        records = [
            record
            for record in self.roles.records()
            if record.role in STANDBY_ROLES and record.version != self.live.active_number
        ]
        wanted = records[-1] if records else None
        standby = self.live.standby
        if standby is not None and (wanted is None or standby.number != wanted.version):
            await self.live.leave(standby)
            await standby.model.close(drain_s=RETIRE_DRAIN_S)
            log.info("following the leader: version %d dropped", standby.number)
            standby = None
        if wanted is None:
            return
        if standby is None:
            model = await self._loader.open(await self._followed_version(wanted.version))
            standby = Standby(model, wanted.role, BackfillProgress(wanted.version))
            stored = await self.live.join(standby)
            log.info(
                "following the leader: version %d loaded as %s (%d stored vectors)",
                wanted.version,
                wanted.role,
                stored,
            )
        standby.role = wanted.role
        # The leader keeps only complete versions as PREVIOUS; a candidate completes by
        # switching in, which `_follow_active` follows; a trial by `trial_complete`.
        standby.complete = standby.complete or wanted.role is VersionRole.PREVIOUS

    async def _followed_version(self, number: int) -> ModelVersion:
        """The recorded version's files, verified here too (never recorded as failed by
        a follower: the leader decides)."""
        status = await asyncio.to_thread(verify_status, self._repository, number)
        if status is None or status.version is None:
            reason = "not in the repository" if status is None else status.error
            raise StartupError(f"the leader serves model version {number}, which {reason} here")
        record = self.roles.get(number)
        if record is not None and record.model_sha256 != status.version.model_sha256:
            raise StartupError(
                f"model version {number} here differs from the leader's (sha256 "
                f"{status.version.model_sha256[:12]} against {record.model_sha256[:12]})"
            )
        self._versions[number] = status
        return status.version

    def _start_watching(self) -> None:
        if self._poll_s > 0 and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="watch-repository"
            )

    async def close(self) -> None:
        tasks = [t for t in (self._watcher, self._active_backfill) if t is not None]
        standby = self.live.standby
        if standby is not None and standby.task is not None:
            tasks.append(standby.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        active, standby = self.live.take_all()
        try:
            if standby is not None:
                await standby.model.close()
        finally:
            if active is not None:
                await active.close()

    # --- operations --------------------------------------------------------------

    async def activate(self, number: int) -> Activation:
        """Make `number` the active version: at once if it is a complete standby,
        else load it now (errors: `VersionNotFound`, `VersionRejected`) and switch
        once its articles are re-embedded."""
        async with self._lock:
            if not self.leader:
                raise NotLeader("this process follows the leader, which makes model changes")
            active = self.live.active
            if number == active.number:
                return Activation(active.number, switched=False)
            if self.trial is not None:
                raise TrialInProgress(self.trial.number)
            standby = self.live.standby
            if standby is not None and standby.number == number:
                if standby.complete:
                    await self.live.switch(standby, self.roles)
                    log.info("model version %d is active (was %d)", number, active.number)
                    return Activation(number, switched=True)
                await self.roles.change(number, VersionRole.CANDIDATE)
                standby.role = VersionRole.CANDIDATE
                return Activation(active.number, switched=False, pending=standby)
            version = await self._verified(number)
            standby = await self._load_standby(version, VersionRole.CANDIDATE)
            return Activation(active.number, switched=False, pending=standby)

    async def load_trial(self, number: int) -> Standby:
        """Make `number` the standby of an A/B experiment (TRIAL) next to the active
        version: the standby already (its backfill goes on, and it will not switch in),
        else loaded, replacing the standby (errors: `VersionNotFound`, `VersionRejected`)."""
        async with self._lock:
            if not self.leader:
                raise NotLeader("this process follows the leader, which makes model changes")
            if number == self.live.active_number:
                raise InvalidRequest(
                    f"model version {number} is the active version: the experiment's control"
                )
            standby = self.live.standby
            if standby is not None and standby.number == number:
                await self.roles.change(number, VersionRole.TRIAL)
                standby.role = VersionRole.TRIAL
                log.info("version %d (%s) is now an experiment's trial", number, standby.role)
                return standby
            version = await self._verified(number)
            return await self._load_standby(version, VersionRole.TRIAL)

    async def end_trial(self, number: int, *, activate: bool, keep: bool) -> Activation:
        """The experiment of trial `number` stopped: activate it (at once if complete,
        else as a candidate that switches in once complete), or keep it as the previous
        version (when complete: one switch activates it later), or retire it."""
        async with self._lock:
            if not self.leader:
                raise NotLeader("this process follows the leader, which makes model changes")
            trial = self.trial
            active = self.live.active
            if trial is None or trial.number != number:
                return Activation(active.number, switched=False)  # ended already
            if activate and trial.complete:
                await self.live.switch(trial, self.roles)
                log.info("model version %d is active (was %d)", number, active.number)
                return Activation(number, switched=True)
            if activate or (keep and trial.complete):
                role = VersionRole.CANDIDATE if activate else VersionRole.PREVIOUS
                await self.roles.change(number, role)
                trial.role = role
                log.info("version %d, trial of an experiment, is now %s", number, role)
                pending = trial if activate else None
                return Activation(active.number, switched=False, pending=pending)
            await self._retire(trial)
            return Activation(active.number, switched=False)

    async def trial_complete(self, number: int) -> bool:
        """Whether trial `number` is loaded here and every article has a vector of it.
        The leader's backfill says so; a follower counts in the store what the leader
        wrote (its index follows through the feed, as every other process's writes)."""
        trial = self.trial
        if trial is None or trial.number != number:
            return False
        if not trial.complete and not self.leader:
            # Final once zero: every write carries a vector of each live version.
            trial.complete = await self.live.count_missing(trial.model) == 0
        return trial.complete

    async def check_repository(self) -> None:
        """Verify version directories not seen before (each once), and take the newest
        version the store has no record of as the next candidate."""
        entries = await asyncio.to_thread(version_entries, self._repository)
        warn_foreign(self._repository, [n for n in entries.foreign if n not in self._foreign])
        self._foreign = set(entries.foreign)
        numbers = entries.numbers
        for gone in self._versions.keys() - set(numbers):
            del self._versions[gone]
        for number in numbers:
            if number not in self._versions:
                status = await asyncio.to_thread(verify_status, self._repository, number)
                if status is not None:
                    self._versions[number] = status
        newest_known = max(self.roles.numbers(), default=0)
        for number in sorted((n for n in self._versions if n > newest_known), reverse=True):
            async with self._lock:
                if self.roles.get(number) is not None:  # an operator got there first
                    return
                status = self._versions[number]
                if status.version is None:
                    await self.roles.change(
                        number, VersionRole.FAILED, error=status.error or "invalid"
                    )
                    continue  # an older new version may do
                if self.trial is not None:  # it would retire the trial: after the experiment
                    return
                try:
                    await self._load_standby(status.version, VersionRole.CANDIDATE)
                except VersionRejected:
                    continue  # marked failed
                log.info("new model version %d: re-embedding articles before switching", number)
                return

    # --- internals ---------------------------------------------------------------

    async def _watch(self) -> None:
        """Poll the repository until cancelled; a failed check is logged and the next
        one comes as usual (what a version holds must never stop upgrades)."""
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.check_repository()
            except (StoreError, BackendError, OSError) as exc:
                log.warning("checking the model repository failed: %s", exc)
                continue
            except Exception:
                log.exception("checking the model repository failed")
                continue
            self.last_check_at = time.time()

    async def _load_standby(self, version: ModelVersion, role: VersionRole) -> Standby:
        """Load, smoke-test and index `version` next to the active one, retire the old
        standby, and start its backfill; on failure mark it failed (`VersionRejected`)."""
        keep = [model.version for model in self.live.models()]
        model: ServingModel | None = None
        try:
            await self._loader.backends.hold([*keep, version])
            model = await self._loader.open(version)
            await model.smoke_check()
        except Exception as exc:  # whatever the files do: this version fails, not the caller
            reason = failure_reason(exc)
            if model is not None:
                with contextlib.suppress(Exception):
                    await model.close()
            with contextlib.suppress(Exception):
                await self._loader.backends.hold(keep)
            log.error("model version %d rejected: %s", version.number, reason)
            await self._mark_failed(version, reason)
            raise VersionRejected(version.number, reason) from exc
        if self.live.standby is not None:
            await self._retire(self.live.standby)
        # Live here before it is recorded: a write that commits after the record (which
        # other processes' writes are checked against) has a vector of it.
        standby = Standby(model, role, BackfillProgress(version.number))
        stored = await self.live.join(standby)
        try:
            await self.roles.change(version.number, role, version.model_sha256)
        except BaseException:
            await self.live.leave(standby)
            await model.close()
            raise
        log.info("version %d loaded as %s (%d stored vectors)", version.number, role, stored)
        standby.task = asyncio.get_running_loop().create_task(
            self._complete(standby), name=f"backfill-v{version.number}"
        )
        return standby

    async def _complete(self, standby: Standby) -> None:
        """Backfill the standby (retrying what fails); a candidate then switches in, a
        trial's experiment is told (`on_trial_complete`)."""
        delay = RETRY_FIRST_S
        while True:
            try:
                await backfill(self.live, standby.model, self._pacing, standby.progress)
                async with self._lock:
                    if standby is not self.live.standby:
                        return
                    active = self.live.active_number
                    if not await self.live.complete(standby, self.roles):
                        continue  # written meanwhile without it; go again
                    if self.live.active_number != active:
                        log.info("model version %d is active (was %s)", standby.number, active)
                    await standby.model.backend.end_background()
                if standby.role is VersionRole.TRIAL and self.on_trial_complete is not None:
                    await self.on_trial_complete(standby.number)
                return
            except (BackendError, StoreError, ServiceError) as exc:
                standby.progress.last_error = str(exc)
                log.warning("backfill of version %d: %s; retrying", standby.number, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _complete_active(self, model: ServingModel) -> None:
        """Embed what lacks a vector of the active version, at full speed, retrying."""
        delay = RETRY_FIRST_S
        while True:
            try:
                progress = BackfillProgress(model.number)
                await backfill(self.live, model, BackfillPacing(), progress, background=False)
                return
            except (BackendError, StoreError, ServiceError) as exc:
                log.warning("embedding for version %d: %s; retrying", model.number, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _retire(self, standby: Standby) -> None:
        if standby.task is not None:
            standby.task.cancel()
            await asyncio.gather(standby.task, return_exceptions=True)
        # Recorded first: until it leaves, writes here still carry its vectors (harmless).
        await self.roles.change(standby.number, VersionRole.RETIRED)
        await self.live.leave(standby)
        await standby.model.close(drain_s=RETIRE_DRAIN_S)
        deleted = await self._store.delete_embeddings(standby.number)
        log.info("version %d retired (%d vectors deleted)", standby.number, deleted)

    async def _delete_unkept_vectors(self) -> None:
        kept = {model.number for model in self.live.models()}
        for number, count in (await self._store.embedding_versions()).items():
            if number not in kept:
                await self._store.delete_embeddings(number)
                log.info("deleted %d vectors of version %d (not kept)", count, number)

    async def _forget_replaced_versions(self) -> None:
        """A version directory whose files differ from what the record saw is another
        model under a reused number: its stored vectors must not be used."""
        for record in self.roles.records():
            version = self._valid(record.version)
            if version is not None and version.model_sha256 != record.model_sha256:
                log.warning(
                    "version %d was replaced in the repository; its vectors go", version.number
                )
                await self._store.delete_embeddings(record.version)
                self.roles.forget(record.version)

    async def _fail_invalid_recorded(self) -> None:
        """A recorded live version whose files no longer verify is failed with the reason
        (one whose directory is gone is retired as before: nothing is wrong with it)."""
        for record in self.roles.records():
            status = self._versions.get(record.version)
            if record.role in LIVE_ROLES and status is not None and status.version is None:
                reason = status.error or "invalid"
                log.error(
                    "recorded %s version %d is invalid: %s", record.role, record.version, reason
                )
                await self.roles.change(record.version, VersionRole.FAILED, error=reason)

    def _active_choices(self) -> list[ModelVersion]:
        """Recorded active, then recorded previous, then newest valid never-failed first."""
        newest_recorded = [
            number
            for role in (VersionRole.ACTIVE, VersionRole.PREVIOUS)
            for number in sorted(self.roles.with_role(role), reverse=True)
        ]
        failed = set(self.roles.with_role(VersionRole.FAILED))
        newest_first = sorted((n for n in self._versions if n not in failed), reverse=True)
        choices: list[ModelVersion] = []
        for number in dict.fromkeys(newest_recorded + newest_first):
            version = self._valid(number)
            if version is not None:
                choices.append(version)
        return choices

    def _valid(self, number: int) -> ModelVersion | None:
        status = self._versions.get(number)
        return None if status is None else status.version

    async def _rescan(self) -> None:
        scan = await asyncio.to_thread(scan_repository, self._repository)
        self._versions = {status.number: status for status in scan.statuses}
        self._foreign = set(scan.foreign)  # warned by the scan

    async def _verified(self, number: int) -> ModelVersion:
        """Verify (again) a version directory; a failure is recorded."""
        status = await asyncio.to_thread(verify_status, self._repository, number)
        if status is None:
            raise VersionNotFound(number)
        self._versions[number] = status
        if status.version is None:
            reason = status.error or "invalid"
            await self.roles.change(number, VersionRole.FAILED, error=reason)
            raise VersionRejected(number, reason)
        return status.version

    async def _mark_failed(self, version: ModelVersion, reason: str) -> None:
        if not self.leader:  # a follower's failure is its own; the leader decides roles
            return
        await self.roles.change(version.number, VersionRole.FAILED, version.model_sha256, reason)


def failure_reason(exc: BaseException) -> str:
    """A load failure's reason as recorded: our errors say it all; anything else also
    needs its type (a bare KeyError message is just the key)."""
    if isinstance(exc, BackendError | ServiceError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
