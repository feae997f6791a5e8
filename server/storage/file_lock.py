"""Leadership over a SQLite store: an exclusive, non-blocking `flock` on `<db>.leader`.

The kernel releases a flock when the last descriptor of its open file goes, so a
leader killed in any way (kill -9 included) frees it at once. A flock belongs to
an open file, not a process, so two store objects in one process exclude each
other too. The file is never deleted: a holder checks that the path still names
the file it locked, else a new file there could be locked by a second leader.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class FileLeaderLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if not self._still_ours():
            self.release()
            return False
        return True

    @property
    def held(self) -> bool:
        return self._fd is not None

    def still_held(self) -> bool:
        if self._fd is not None and not self._still_ours():
            self.release()
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file drops the flock

    def _still_ours(self) -> bool:
        assert self._fd is not None
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except FileNotFoundError:
            return False
