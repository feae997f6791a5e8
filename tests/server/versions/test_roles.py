"""Version roles: the transition table is enforced, changes are durable, restarts see them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from server.storage.sqlite import SqliteArticleStore
from server.storage.store import VersionRole
from server.versions.roles import TRANSITIONS, InvalidTransition, VersionRoles

ACTIVE, CANDIDATE, PREVIOUS = VersionRole.ACTIVE, VersionRole.CANDIDATE, VersionRole.PREVIOUS
FAILED, RETIRED = VersionRole.FAILED, VersionRole.RETIRED


def with_roles(db: Path, test: Callable[[VersionRoles], Awaitable[None]]) -> None:
    async def run() -> None:
        store = await SqliteArticleStore.open(db)
        try:
            roles = VersionRoles(store)
            await roles.load()
            await test(roles)
        finally:
            await store.close()

    asyncio.run(run())


def test_an_upgrade_then_a_rollback_is_recorded_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "kbrec.sqlite"

    async def upgrade(roles: VersionRoles) -> None:
        await roles.change(1, ACTIVE, "sha-1")
        await roles.change(2, CANDIDATE, "sha-2")
        await roles.change_many([(2, ACTIVE, "", None), (1, PREVIOUS, "", None)])
        await roles.change_many([(1, ACTIVE, "", None), (2, PREVIOUS, "", None)])

    async def after_restart(roles: VersionRoles) -> None:
        assert roles.with_role(ACTIVE) == [1]
        assert roles.with_role(PREVIOUS) == [2]
        record = roles.get(2)
        assert record is not None and record.model_sha256 == "sha-2"  # kept when not given

    with_roles(db, upgrade)
    with_roles(db, after_restart)


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        ([], PREVIOUS),  # nothing becomes "previous" without having been active
        ([(FAILED, "bad")], ACTIVE),  # a failed version is never activated by itself
        ([(FAILED, "bad")], PREVIOUS),
        ([(ACTIVE, None)], VersionRole.TRIAL),  # the active version is an experiment's control
    ],
)
def test_transitions_outside_the_table_are_refused_and_not_written(
    tmp_path: Path, steps: list[tuple[VersionRole, str | None]], refused: VersionRole
) -> None:
    db = tmp_path / "kbrec.sqlite"

    async def attempt(roles: VersionRoles) -> None:
        for role, error in steps:
            await roles.change(7, role, "sha", error)
        before = roles.role(7)
        with pytest.raises(InvalidTransition, match="model version 7"):
            await roles.change(7, refused, "sha")
        assert roles.role(7) is before

    async def after_restart(roles: VersionRoles) -> None:
        assert roles.role(7) is (steps[-1][0] if steps else None)

    with_roles(db, attempt)
    with_roles(db, after_restart)


def test_a_refused_change_in_a_batch_writes_none_of_it(tmp_path: Path) -> None:
    async def attempt(roles: VersionRoles) -> None:
        await roles.change(1, ACTIVE, "sha-1")
        with pytest.raises(InvalidTransition):
            await roles.change_many([(1, PREVIOUS, "", None), (2, PREVIOUS, "sha-2", None)])
        assert roles.role(1) is ACTIVE and roles.role(2) is None

    with_roles(tmp_path / "kbrec.sqlite", attempt)


def test_every_role_can_be_reached_and_left() -> None:
    reachable = set().union(*TRANSITIONS.values())
    assert reachable == set(VersionRole)
    assert all(TRANSITIONS[role] for role in VersionRole)
