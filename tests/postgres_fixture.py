"""A real PostgreSQL for the tests: one server per session, a fresh database per test.

`postgres_url` (a test's own empty database, dropped after it) starts the session's
server on first use: initdb into a temporary directory, pg_ctl start with the unix
socket in that directory (no TCP: its port only names the socket file there, so it
cannot collide), torn down at the end of the session. initdb refuses to run as
root, so as root the server runs as the `postgres` OS user (runuser).

Without the PostgreSQL binaries the tests that need them are skipped, except in CI
(CI=true), which has them: there a missing server fails.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_OWNER = "postgres"  # the OS user the server runs as when the tests run as root
PORT = 5432  # names the socket file in the private socket directory
READY_DEADLINE_S = 60.0
# For speed: a test server need not survive a power loss (no fsync); durability of the
# store's commits is its sessions' synchronous_commit, checked by the tests.
SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=200"
)


def postgres_bin() -> Path | None:
    """pg_ctl's folder: from PATH (pg_ctl is usually not there on Debian) or the newest
    /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    candidates = [p for p in versions if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    return candidates[-1] if candidates else None


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI has PostgreSQL installed)")
    pytest.skip(reason)


@dataclass(frozen=True)
class PostgresServer:
    bin: Path
    root: Path  # data/, the socket and the log
    as_owner: tuple[str, ...]  # prefix that runs a command as the server's owner

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.root}&port={PORT}"

    def pg_ctl(self, *args: str, timeout: float = READY_DEADLINE_S) -> None:
        command = [*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed: {done.stdout}{done.stderr}{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return "\n" + self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def wait_until_ready(server: PostgresServer) -> None:
    """Connect in a loop until the server answers, within a deadline."""
    import psycopg

    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        try:
            with psycopg.connect(server.url("postgres"), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL not ready: {server.log_tail()}") from None
            time.sleep(0.05)


def start_server(bin: Path) -> PostgresServer:
    as_owner: tuple[str, ...] = ()
    root = Path(tempfile.mkdtemp(prefix="kbrec-pg-"))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_OWNER)
        except KeyError:
            shutil.rmtree(root)
            unavailable(f"running as root and no {SERVER_OWNER!r} user to run PostgreSQL as")
        shutil.chown(root, SERVER_OWNER, SERVER_OWNER)
        as_owner = ("runuser", "-u", SERVER_OWNER, "--")
    server = PostgresServer(bin, root, as_owner)
    initdb = [str(bin / "initdb"), "-D", str(server.data), "-U", "postgres", "--auth=trust"]
    initdb += ["--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
    done = subprocess.run([*as_owner, *initdb], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
    options = f"-k {root} -p {PORT} {SERVER_OPTIONS}"
    try:
        server.pg_ctl(
            "start", "-w", "-t", str(int(READY_DEADLINE_S)), "-l", str(server.log), "-o", options
        )
        wait_until_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: PostgresServer) -> None:
    try:
        if (server.data / "postmaster.pid").exists():
            server.pg_ctl("stop", "-m", "immediate", "-w")
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (started on first use)."""
    bin = postgres_bin()
    if bin is None:
        unavailable("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    assert bin is not None
    server = start_server(bin)
    try:
        yield server
    finally:
        stop_server(server)


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A URL of an empty database of the test's own (dropped after the test), e.g.
    `postgresql://postgres@/test_3?host=/tmp/kbrec-pg-…&port=5432`."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_databases)}"
    admin_url = postgres_server.url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            # FORCE: sessions a failed test left open must not keep the database.
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
