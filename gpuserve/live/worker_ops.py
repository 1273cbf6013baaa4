"""What an operator does to one running worker: read (and follow) its log, run a command in it; the backends implement both."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["MAX_EXEC_OUTPUT_BYTES", "ExecResult", "FileLogReader", "LogReader", "offset_since", "tail_offset"]

READ_CHUNK_BYTES = 64 * 1024
MAX_EXEC_OUTPUT_BYTES = 1024 * 1024  # an exec answer is JSON in memory: keep the head, say it was cut


class LogReader(Protocol):
    """A worker's log from some point on, read without blocking."""

    def read(self) -> bytes | None:
        """The next bytes; b"" when none are there yet, None once the log has ended (not following, or the worker is gone)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecResult:
    """A command's exit code (None: it ran past its timeout and was killed) and its stdout and stderr, merged."""

    exit_code: int | None
    output: bytes
    truncated: bool = False


def tail_offset(path: Path, lines: int) -> int:
    """The byte offset where the last `lines` lines of `path` begin (0 for a short file)."""
    size = path.stat().st_size
    # A line of a worker's log is rarely past 4 KiB; reading that much per line wanted is enough
    # without reading a long log from its start.
    window = min(size, max(1, lines) * 4096)
    with open(path, "rb") as f:
        f.seek(size - window)
        data = f.read(window)
    cut = len(data)
    if data.endswith(b"\n"):
        cut -= 1
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return size - window
    return size - window + cut + 1


class FileLogReader:
    """A log file read from `offset`; with `ended` None it stops at the end, else it follows until `ended()` says the writer is gone."""

    def __init__(self, path: Path, offset: int, ended: Callable[[], bool] | None) -> None:
        self._file = open(path, "rb")  # closed by close(): the reader outlives this call
        self._file.seek(offset)
        self._ended = ended

    def read(self) -> bytes | None:
        data = self._file.read(READ_CHUNK_BYTES)
        if data:
            return data
        if self._ended is None or self._ended():
            # The writer may have written its last lines between the read and the check.
            return self._file.read(READ_CHUNK_BYTES) or None
        return b""

    def close(self) -> None:
        self._file.close()


def offset_since(path: Path, marks: list[tuple[float, int]], since_wall_s: float) -> int:
    """Where the lines written after `since_wall_s` begin, from (wall time, file size) marks taken as the file grew.

    The newest mark at or before the time: at most one mark interval early, never late. A file
    not written since then has nothing to show; one with no mark that old shows from its start.
    """
    if os.stat(path).st_mtime < since_wall_s:
        return path.stat().st_size
    before = [size for wall_s, size in marks if wall_s <= since_wall_s]
    return before[-1] if before else 0
