"""Model versions over the service's life: which one serves, which one is coming in,
which one stays for a rollback, and the re-embedding that has to happen in between.

Roles (`VersionRole`, persisted in the store so that a restart resumes them):
ACTIVE serves every query. At most one more version is loaded next to it, the
standby: a CANDIDATE, whose articles are being re-embedded and which becomes
active the moment every article has a vector of it, or the PREVIOUS active,
kept current so that activating it again is an instant rollback. A version that
fails validation or loading is FAILED (with the reason) and never activated by
itself; versions no longer kept are RETIRED and their vectors deleted.

The invariants that make a switch safe:
- a standby joins the live set (article writes embed with every live version)
  under the commit lock, together with loading its stored vectors, so no write
  is missed between the two;
- the switch happens under the commit lock after a fresh count of articles
  without a vector of the candidate found none, and it is one assignment of
  `_active`: a query uses the `ServingModel` it picked up, whose backend and
  index belong to one version, and the response names that version.

New versions come from a watch on the repository (a version newer than any the
store has a record of becomes the candidate) or from `activate` (operators).
The two versions (three, for a moment, while a new candidate loads before the
old standby is retired) share one `ComputeGate`, so the re-embedding only
uses the backend when no query or write waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kbrec.repository import list_versions
from server.backends.base import BackendError
from server.backfill import (
    BackfillPacing,
    BackfillProgress,
    backfill,
    load_stored_vectors,
)
from server.errors import InvalidRequest, NotReady, ServiceError
from server.model_versions import ModelVersion, VersionStatus, scan_repository, verify_status
from server.serving_model import ServingModel
from server.store import ArticleStore, StoreError, VersionRecord, VersionRole

log = logging.getLogger(__name__)

ModelOpener = Callable[[ModelVersion], Awaitable[ServingModel]]
# Told which versions must stay loaded (Triton: load exactly these); None when in-process.
VersionsKeeper = Callable[[Collection[ModelVersion]], Awaitable[None]]

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
# A retired version's queued queries get this long to finish before its batcher closes.
RETIRE_DRAIN_S = 5.0


class StartupError(Exception):
    """The service cannot start (no servable model version, store unusable)."""


class VersionNotFound(ServiceError):
    def __init__(self, number: int) -> None:
        super().__init__(f"model version {number} is not in the repository")


class VersionRejected(ServiceError):
    """The version failed validation or loading; it is marked failed with the reason."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"model version {number} was rejected: {reason}")
        self.reason = reason


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(eq=False)
class Standby:
    """The version loaded next to the active one."""

    model: ServingModel
    role: VersionRole  # CANDIDATE or PREVIOUS
    progress: BackfillProgress
    complete: bool = False  # every article has a vector of it (checked under the lock)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def number(self) -> int:
        return self.model.number


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
        open_model: ModelOpener,
        *,
        pacing: BackfillPacing,
        keep_loaded: VersionsKeeper | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self._repository = repository
        self._store = store
        self._open_model = open_model
        self._pacing = pacing
        self._keep_loaded = keep_loaded
        self._poll_s = poll_s
        # Orders "commit, then apply to the indexes" across writers, and changes of the
        # live set of versions against both.
        self.commit_lock = asyncio.Lock()
        self._lock = asyncio.Lock()  # one lifecycle change at a time
        self._active: ServingModel | None = None
        self._standby: Standby | None = None
        self._records: dict[int, VersionRecord] = {}
        self._versions: dict[int, VersionStatus] = {}  # the repository, verified once each
        self._watcher: asyncio.Task[None] | None = None
        self.switches = 0

    # --- views -------------------------------------------------------------------

    @property
    def active(self) -> ServingModel:
        if self._active is None:
            raise NotReady("no model version is loaded")
        return self._active

    @property
    def active_number(self) -> int | None:
        return None if self._active is None else self._active.number

    @property
    def standby(self) -> Standby | None:
        return self._standby

    @property
    def upgrade(self) -> Standby | None:
        """The candidate on its way in, if any."""
        standby = self._standby
        return standby if standby is not None and standby.role is VersionRole.CANDIDATE else None

    def serving(self, number: int) -> ServingModel:
        """The version if it can answer queries: active, or a complete standby."""
        active, standby = self.active, self._standby
        if number == active.number:
            return active
        if standby is not None and standby.number == number and standby.complete:
            return standby.model
        kept = f", complete standby {standby.number}" if standby and standby.complete else ""
        raise InvalidRequest(
            f"model version {number} is not serving (active {active.number}{kept})",
            "version_not_serving",
            409,
        )

    def live_models(self) -> list[ServingModel]:
        """Every version an article write must embed with, the active one first."""
        models = [] if self._active is None else [self._active]
        if self._standby is not None:
            models.append(self._standby.model)
        return models

    def version_states(self) -> Iterator[tuple[int, str, VersionStatus | None, str | None]]:
        """(number, state, repository status, error) for every version known, by number."""
        for number in sorted(self._versions.keys() | self._records.keys()):
            status = self._versions.get(number)
            record = self._records.get(number)
            error = record.error if record is not None else None
            if number == self.active_number:
                state = VersionRole.ACTIVE.value
            elif self._standby is not None and number == self._standby.number:
                state = self._standby.role.value
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
        self._records = {r.version: r for r in await self._store.version_records()}
        await self._rescan()
        await self._forget_replaced_versions()
        for version in self._active_choices():
            try:
                if self._keep_loaded is not None:
                    await self._keep_loaded([version])  # the standby follows once serving
                model = await self._open_model(version)
            except BackendError as exc:
                log.error("version %d cannot be served: %s", version.number, exc)
                await self._save(version, VersionRole.FAILED, str(exc))
                continue
            self._active = model
            await self._save(version, VersionRole.ACTIVE)
            for record in list(self._records.values()):  # one active record, always
                if record.role is VersionRole.ACTIVE and record.version != version.number:
                    await self._save_record(record.version, VersionRole.RETIRED, record.error)
            return model
        raise StartupError(
            f"no valid model version in {self._repository} "
            f"({len(self._versions)} published; see the warnings above)"
        )

    async def build_active_index(self) -> None:
        """Index the active version: stored vectors, then embed what lacks one (full speed)."""
        model = self.active
        async with self.commit_lock:
            stored = await load_stored_vectors(self._store, model)
        missing = await self._store.count_without_embedding(model.number, model.index.dim)
        log.info(
            "index of version %d: %d stored vectors, %d articles to embed",
            model.number,
            stored,
            missing,
        )
        progress = BackfillProgress(model.number)
        await backfill(
            self._store, model, self.commit_lock, BackfillPacing(), progress, background=False
        )

    async def start_background(self) -> None:
        """Once serving: resume a recorded standby, delete vectors no longer kept, watch."""
        async with self._lock:
            for record in list(self._records.values()):
                if record.role not in (VersionRole.CANDIDATE, VersionRole.PREVIOUS):
                    continue
                version = self._valid(record.version)
                if version is None:
                    await self._save_record(record.version, VersionRole.RETIRED, record.error)
                    continue
                with contextlib.suppress(VersionRejected):
                    await self._load_standby(version, record.role)
                break  # one standby at most
            await self._delete_unkept_vectors()
        if self._poll_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="watch-repository"
            )

    async def close(self) -> None:
        tasks = [self._watcher] if self._watcher is not None else []
        if self._standby is not None and self._standby.task is not None:
            tasks.append(self._standby.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        standby, self._standby = self._standby, None
        active, self._active = self._active, None
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
            active = self.active
            if number == active.number:
                return Activation(active.number, switched=False)
            standby = self._standby
            if standby is not None and standby.number == number:
                if standby.complete:
                    await self._switch(standby)
                    return Activation(number, switched=True)
                standby.role = VersionRole.CANDIDATE
                await self._save(standby.model.version, VersionRole.CANDIDATE)
                return Activation(active.number, switched=False, pending=standby)
            version = await self._verified(number)
            standby = await self._load_standby(version, VersionRole.CANDIDATE)
            return Activation(active.number, switched=False, pending=standby)

    async def check_repository(self) -> None:
        """Verify version directories not seen before (each once), and take the newest
        version the store has no record of as the next candidate."""
        numbers = await asyncio.to_thread(list_versions, self._repository)
        for gone in self._versions.keys() - set(numbers):
            del self._versions[gone]
        for number in numbers:
            if number not in self._versions:
                status = await asyncio.to_thread(verify_status, self._repository, number)
                if status is not None:
                    self._versions[number] = status
        newest_known = max(self._records, default=0)
        for number in sorted((n for n in self._versions if n > newest_known), reverse=True):
            async with self._lock:
                if number in self._records:  # an operator got there first
                    return
                status = self._versions[number]
                if status.version is None:
                    await self._save_record(number, VersionRole.FAILED, status.error or "invalid")
                    continue  # an older new version may do
                try:
                    await self._load_standby(status.version, VersionRole.CANDIDATE)
                except VersionRejected:
                    continue  # marked failed
                log.info("new model version %d: re-embedding articles before switching", number)
                return

    # --- internals ---------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.check_repository()
            except (StoreError, BackendError, OSError) as exc:
                log.warning("checking the model repository failed: %s", exc)

    async def _load_standby(self, version: ModelVersion, role: VersionRole) -> Standby:
        """Load, smoke-test and index `version` next to the active one, retire the old
        standby, and start its backfill; on failure mark it failed (`VersionRejected`)."""
        keep = [m.version for m in self.live_models()]
        model: ServingModel | None = None
        try:
            if self._keep_loaded is not None:
                await self._keep_loaded([*keep, version])
            model = await self._open_model(version)
            await model.smoke_check()
        except BackendError as exc:
            if model is not None:
                await model.close()
            if self._keep_loaded is not None:
                with contextlib.suppress(BackendError):
                    await self._keep_loaded(keep)
            log.error("model version %d rejected: %s", version.number, exc)
            await self._save(version, VersionRole.FAILED, str(exc))
            raise VersionRejected(version.number, str(exc)) from exc
        if self._standby is not None:
            await self._retire(self._standby)
        standby = Standby(model, role, BackfillProgress(version.number))
        async with self.commit_lock:
            stored = await load_stored_vectors(self._store, model)
            self._standby = standby
        await self._save(version, role)
        log.info("version %d loaded as %s (%d stored vectors)", version.number, role, stored)
        standby.task = asyncio.get_running_loop().create_task(
            self._complete(standby), name=f"backfill-v{version.number}"
        )
        return standby

    async def _complete(self, standby: Standby) -> None:
        """Backfill the standby (retrying what fails); a candidate then switches in."""
        delay = RETRY_FIRST_S
        while True:
            try:
                await backfill(
                    self._store, standby.model, self.commit_lock, self._pacing, standby.progress
                )
                async with self._lock:
                    if standby is not self._standby:
                        return
                    async with self.commit_lock:
                        missing = await self._store.count_without_embedding(
                            standby.number, standby.model.index.dim
                        )
                        if missing:
                            continue  # written meanwhile without it; go again
                        standby.complete = True
                        if standby.role is VersionRole.CANDIDATE:
                            await self._switch_locked(standby)
                    await standby.model.backend.end_background()
                    return
            except (BackendError, StoreError, ServiceError) as exc:
                standby.progress.last_error = str(exc)
                log.warning("backfill of version %d: %s; retrying", standby.number, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _switch(self, standby: Standby) -> None:
        async with self.commit_lock:
            await self._switch_locked(standby)

    async def _switch_locked(self, standby: Standby) -> None:
        """Make the standby active and the active one the (complete) previous version."""
        old = self.active
        now = utc_now()
        new_records = [
            VersionRecord(standby.number, VersionRole.ACTIVE, sha(standby.model), None, now),
            VersionRecord(old.number, VersionRole.PREVIOUS, sha(old), None, now),
        ]
        await self._store.save_version_records(new_records)  # durable before it takes effect
        self._records.update((r.version, r) for r in new_records)
        self._active = standby.model
        self._standby = Standby(old, VersionRole.PREVIOUS, BackfillProgress(old.number), True)
        self.switches += 1
        log.info("model version %d is active (was %d)", standby.number, old.number)

    async def _retire(self, standby: Standby) -> None:
        if standby.task is not None:
            standby.task.cancel()
            await asyncio.gather(standby.task, return_exceptions=True)
        async with self.commit_lock:
            if self._standby is standby:
                self._standby = None
        await standby.model.close(drain_s=RETIRE_DRAIN_S)
        deleted = await self._store.delete_embeddings(standby.number)
        await self._save(standby.model.version, VersionRole.RETIRED)
        log.info("version %d retired (%d vectors deleted)", standby.number, deleted)

    async def _delete_unkept_vectors(self) -> None:
        kept = {model.number for model in self.live_models()}
        for number, count in (await self._store.embedding_versions()).items():
            if number not in kept:
                await self._store.delete_embeddings(number)
                log.info("deleted %d vectors of version %d (not kept)", count, number)

    async def _forget_replaced_versions(self) -> None:
        """A version directory whose files differ from what the record saw is another
        model under a reused number: its stored vectors must not be used."""
        for number, record in list(self._records.items()):
            status = self._versions.get(number)
            if status is None or status.version is None:
                continue
            if status.version.metadata.model_sha256 != record.model_sha256:
                log.warning("version %d was replaced in the repository; its vectors go", number)
                await self._store.delete_embeddings(number)
                del self._records[number]

    def _active_choices(self) -> list[ModelVersion]:
        """Recorded active, then recorded previous, then newest valid never-failed first."""
        by_role = {r.role: r.version for r in self._records.values()}
        preferred = [by_role.get(VersionRole.ACTIVE), by_role.get(VersionRole.PREVIOUS)]
        failed = {n for n, r in self._records.items() if r.role is VersionRole.FAILED}
        newest_first = sorted((n for n in self._versions if n not in failed), reverse=True)
        choices: list[ModelVersion] = []
        for number in dict.fromkeys([n for n in preferred if n is not None] + newest_first):
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

    async def _verified(self, number: int) -> ModelVersion:
        """Verify (again) a version directory; a failure is recorded."""
        status = await asyncio.to_thread(verify_status, self._repository, number)
        if status is None:
            raise VersionNotFound(number)
        self._versions[number] = status
        if status.version is None:
            reason = status.error or "invalid"
            await self._save_record(number, VersionRole.FAILED, reason)
            raise VersionRejected(number, reason)
        return status.version

    async def _save(self, version: ModelVersion, role: VersionRole, error: str | None = None):
        await self._save_record(version.number, role, error, version.metadata.model_sha256)

    async def _save_record(
        self, number: int, role: VersionRole, error: str | None, model_sha256: str | None = None
    ) -> None:
        known = self._records.get(number)
        digest = model_sha256 or (known.model_sha256 if known is not None else "")
        record = VersionRecord(number, role, digest, error, utc_now())
        await self._store.save_version_records([record])
        self._records[number] = record


def sha(model: ServingModel) -> str:
    return model.version.metadata.model_sha256
