"""`kbrec accounts create` and `kbrec keys create|list|revoke` on both stores: the key is
printed once and stored as its digest, listings never show it, revoked keys stay
listed; mistakes are one line and exit status 2."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cli.main import main
from server.storage.accounts import is_key_shaped, key_digest
from server.storage.opening import open_store


def new_store(location: str | Path) -> None:
    async def create() -> None:
        await (await open_store(location)).close()

    asyncio.run(create())


def valid_digests(location: str | Path) -> set[str]:
    async def read() -> set[str]:
        store = await open_store(location)
        try:
            return set(await store.valid_api_keys())
        finally:
            await store.close()

    return set(asyncio.run(read()))


def kbrec(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_accounts_and_keys_from_the_command_line(
    location: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(location)
    new_store(location)
    status, out, _ = kbrec(capsys, "accounts", "create", "acme", "--max-articles", "10", "--db", db)
    assert status == 0 and "account acme created" in out
    status, _, err = kbrec(capsys, "accounts", "create", "acme", "--db", db)
    assert status == 2 and "exists" in err

    status, out, _ = kbrec(capsys, "keys", "create", "--account", "acme", "--quiet", "--db", db)
    key = out.strip()
    assert status == 0 and is_key_shaped(key)
    assert valid_digests(location) == {key_digest(key)}
    status, out, _ = kbrec(
        capsys, "keys", "create", "--account", "beta", "--label", "sync", "--db", db
    )
    assert status == 0 and "(account created)" in out
    other = out.strip().splitlines()[-1]

    status, out, _ = kbrec(capsys, "keys", "list", "--db", db)
    assert status == 0 and key not in out and other not in out
    acme_id = key.removeprefix("kb_").split(".")[0]
    assert acme_id in out and "| sync |" in out
    status, out, _ = kbrec(capsys, "keys", "list", "--account", "beta", "--db", db)
    assert acme_id not in out

    status, out, _ = kbrec(capsys, "keys", "revoke", acme_id, "--db", db)
    assert status == 0 and "revoked" in out
    assert valid_digests(location) == {key_digest(other)}
    status, out, _ = kbrec(capsys, "keys", "list", "--account", "acme", "--db", db)
    assert acme_id in out  # still listed, with its revocation time
    status, _, err = kbrec(capsys, "keys", "revoke", "0123456789abcdef", "--db", db)
    assert status == 2 and "no key" in err


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "--account", "bad id"),
        ("keys", "create", "--account", "acme", "--label", "x" * 101),
        ("accounts", "create", ".."),
    ],
)
def test_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    db = tmp_path / "kbrec.sqlite"
    new_store(db)
    status, _, err = kbrec(capsys, *args, "--db", str(db))
    assert status == 2 and len(err.strip().splitlines()) == 1, err


def test_a_missing_sqlite_store_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "absent.sqlite"
    status, _, err = kbrec(capsys, "keys", "create", "--account", "acme", "--db", str(db))
    assert status == 2 and "no article store" in err
    assert not db.exists()
