"""Zendesk imports over HTTP: how many run at once, and parsing them off the event loop.

Parsing an export is CPU-bound Python: JSON, then HTML → text with BeautifulSoup at
about 1 MB/s, so a 64 MiB export takes about a minute. On the event loop that froze
every request, `/healthz` included; in a thread it would still take the GIL from the
loop in 5 ms slices. It runs in a process of its own instead, spawned (forking a
process that runs ONNX Runtime and SQLite threads is unsafe), kept for the next
import, and stopped with the app.

At most `max_concurrent_imports` imports run at once in a process (parsing, then
embedding and committing): one more is refused at once, before its body is read
(503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kbrec.locales import with_normalized_locale
from kbrec.records import Article
from kbrec.zendesk import ExportTooLarge, ZendeskExportError, parse_zendesk_export
from server.errors import InvalidRequest, Overloaded
from server.http.payloads import decode_json

if TYPE_CHECKING:
    from server.settings import ImportSettings

PARENT_CHECK_S = 0.5  # how soon the parsing process notices that the server is gone


@dataclass(frozen=True)
class ExportRefused:
    """Why an export cannot be imported: the HTTP status, code and message to answer."""

    status: int
    code: str
    message: str


def parse_export(body: bytes, account_id: str, max_articles: int) -> list[Article] | ExportRefused:
    """The export's published articles, locales normalized, or why it is refused.

    Runs in the parsing process; a refusal comes back as a value, since an exception's
    own fields (the status and code of `InvalidRequest`) would not survive pickling.
    """
    try:
        articles = parse_zendesk_export(decode_json(body), account_id, max_articles)
        return [normalized_locale(article) for article in articles]
    except InvalidRequest as exc:
        return ExportRefused(exc.status, exc.code, str(exc))
    except ExportTooLarge as exc:
        return ExportRefused(413, "too_many_articles", str(exc))
    except ZendeskExportError as exc:
        return ExportRefused(422, "invalid_export", str(exc))


def exit_with_parent(parent_pid: int) -> None:
    """Start-up of the parsing process: exit once the server process is gone. A server
    killed with SIGKILL cannot stop it, and its queues never report the end (the
    process holds both ends of them): it would live on, also in the middle of a parse."""

    def watch() -> None:
        while os.getppid() == parent_pid:  # reparented once the parent dies
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def normalized_locale(article: Article) -> Article:
    try:
        return with_normalized_locale(article)
    except ValueError as exc:
        raise ZendeskExportError(f"article {article.article_id}: {exc}") from exc


class ImportGate:
    """The process's import slots and the process that parses exports."""

    def __init__(self, settings: ImportSettings) -> None:
        self._settings = settings
        self._running = 0
        self._pool: ProcessPoolExecutor | None = None

    @property
    def running(self) -> int:
        return self._running

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold an import slot for the block; `Overloaded` at once when none is free."""
        if self._running >= self._settings.max_concurrent_imports:
            raise Overloaded(
                f"{self._running} import(s) already running in this process; retry later"
            )
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1

    async def parse(self, body: bytes, account_id: str) -> list[Article]:
        """The export's articles, parsed in the parsing process; `InvalidRequest` (400,
        413 or 422) when it is refused."""
        loop = asyncio.get_running_loop()
        limit = self._settings.max_import_articles
        try:
            result = await loop.run_in_executor(
                self._executor(), parse_export, body, account_id, limit
            )
        except BrokenProcessPool as exc:  # the process died (killed, out of memory)
            self.close()  # the next import starts a new one
            raise Overloaded(f"the export parser stopped ({exc}); retry later") from exc
        if isinstance(result, ExportRefused):
            raise InvalidRequest(result.message, result.code, result.status)
        return result

    def close(self) -> None:
        """Stop the parsing process, also in the middle of a parse (which would otherwise
        hold up the exit of this one)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Python 3.14 has pool.terminate_workers(); before, its processes are private.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._settings.max_concurrent_imports,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool
