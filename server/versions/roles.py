"""Version roles: the lifecycle's states, the transitions between them, and the one
place that changes them.

A role is persisted before it takes effect (`VersionRecord` in the store), so a
restart resumes what the service was doing. The table below is the whole state
machine; `VersionRoles.change` refuses anything else (a bug, not a caller error).
docs/architecture.md ("Model upgrades") draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from server.storage.store import ArticleStore, VersionRecord, VersionRole, utc_now

ACTIVE, CANDIDATE, PREVIOUS = VersionRole.ACTIVE, VersionRole.CANDIDATE, VersionRole.PREVIOUS
FAILED, RETIRED, TRIAL = VersionRole.FAILED, VersionRole.RETIRED, VersionRole.TRIAL

# role now (None: no record yet) → roles it may take next. Re-saving the same role is
# allowed where a restart or an operator repeats a step. Any version but the active one
# may become an experiment's TRIAL (an operator starts the experiment).
TRANSITIONS: Final[Mapping[VersionRole | None, frozenset[VersionRole]]] = {
    # first start serves the newest valid version; a new one is loaded as candidate
    None: frozenset({ACTIVE, CANDIDATE, FAILED, TRIAL}),
    # switched out (kept for rollback), replaced at start, or failing to load at start
    ACTIVE: frozenset({ACTIVE, PREVIOUS, RETIRED, FAILED}),
    # switched in once complete (or chosen at start), dropped, or failing its checks
    CANDIDATE: frozenset({CANDIDATE, ACTIVE, RETIRED, FAILED, TRIAL}),
    # rollback, operator re-activation while incomplete, dropped, or failing to load
    PREVIOUS: frozenset({PREVIOUS, ACTIVE, CANDIDATE, RETIRED, FAILED, TRIAL}),
    # never active on its own; an operator may try it again as a candidate
    FAILED: frozenset({FAILED, CANDIDATE, TRIAL}),
    # an operator (or a start with nothing newer left) may bring it back
    RETIRED: frozenset({RETIRED, ACTIVE, CANDIDATE, FAILED, TRIAL}),
    # the experiment stops: its winner switched in (at once if complete, else as a
    # candidate), kept for an instant switch later, or dropped; or failing to load
    TRIAL: frozenset({TRIAL, ACTIVE, CANDIDATE, PREVIOUS, RETIRED, FAILED}),
}


class InvalidTransition(RuntimeError):
    """A role change the state machine does not allow: a bug in the lifecycle."""


class VersionRoles:
    """The persisted role of every model version the service has seen."""

    def __init__(self, store: ArticleStore) -> None:
        self._store = store
        self._records: dict[int, VersionRecord] = {}

    async def load(self) -> None:
        self._records = {r.version: r for r in await self._store.version_records()}

    def get(self, number: int) -> VersionRecord | None:
        return self._records.get(number)

    def role(self, number: int) -> VersionRole | None:
        record = self._records.get(number)
        return None if record is None else record.role

    def numbers(self) -> set[int]:
        return set(self._records)

    def records(self) -> list[VersionRecord]:
        return sorted(self._records.values(), key=lambda record: record.version)

    def with_role(self, role: VersionRole) -> list[int]:
        return [r.version for r in self.records() if r.role is role]

    def forget(self, number: int) -> None:
        """The number now names other files (a replaced directory): start afresh."""
        self._records.pop(number, None)

    async def change(
        self, number: int, role: VersionRole, model_sha256: str = "", error: str | None = None
    ) -> None:
        await self.change_many([(number, role, model_sha256, error)])

    async def change_many(
        self, changes: Sequence[tuple[int, VersionRole, str, str | None]]
    ) -> None:
        """Check every change against `TRANSITIONS`, write them in one durable
        transaction, then take them in memory. An empty sha keeps the recorded one."""
        now = utc_now()
        records = []
        for number, role, model_sha256, error in changes:
            known = self._records.get(number)
            current = None if known is None else known.role
            if role not in TRANSITIONS[current]:
                raise InvalidTransition(f"model version {number}: {current} → {role}")
            digest = model_sha256 or (known.model_sha256 if known is not None else "")
            records.append(VersionRecord(number, role, digest, error, now))
        await self._store.save_version_records(records)
        self._records.update((record.version, record) for record in records)
