"""An exclusive lock on a store's data directory: a second server on the same directory refuses to start.

Two servers on one SQLite file would each requeue the other's running jobs at start and run
them twice. The lock is an flock(2) on `<dir>/gpuserve.lock`, held for the store's life:
the kernel drops it when the process dies, even by SIGKILL, so a crash never leaves a
stale lock behind. The holder's pid is written into the file for the refusal message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gpuserve.core.errors import InUseError

__all__ = ["DataDirLock"]

LOCK_NAME = "gpuserve.lock"


class DataDirLock:
    """Held from `acquire()` until `release()` (or the process's end)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        # 0o600: the directory's other files (jobs, logs) may hold secrets; so may its lock's neighbours.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InUseError(
                f"data directory {self.folder} is in use by another gpuserve server (pid {holder}); "
                "stop it, or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
