"""Pidfiles of process workers in the logs folder, so that a restarted server can reap what a lost one left running."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

__all__ = ["reap_leftovers", "remove_pidfile", "write_pidfile"]

log = logging.getLogger("gpuserve.backends")
SUFFIX = ".pid"


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22): with the pid, its identity.

    None for a zombie too: a launcher orphaned by a killed server may wait, unreaped, under an init
    that does not reap (a container's shell), and is not running anything.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # field 3, the state: zombie or dead
        return None
    return fields[19]


def write_pidfile(folder: Path, worker_id: str, pid: int) -> None:
    """Record a worker's launcher (the leader of its process group); owner-only, as the logs."""
    ticks = _start_ticks(pid) or "?"
    path = folder / f"{worker_id}{SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{pid} {ticks}\n")


def remove_pidfile(folder: Path, worker_id: str) -> None:
    (folder / f"{worker_id}{SUFFIX}").unlink(missing_ok=True)


def reap_leftovers(folder: Path) -> list[str]:
    """SIGKILL the process group of every worker a pidfile names that still runs; the worker ids reaped.

    A pid counts only with the start time it was recorded with, so a reused pid is never killed.
    """
    reaped: list[str] = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        worker_id = path.name[: -len(SUFFIX)]
        try:
            pid_text, ticks = path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if pid > 1 and ticks != "?" and _start_ticks(pid) == ticks:
            try:
                os.killpg(pid, signal.SIGKILL)
                reaped.append(worker_id)
                log.warning("killed worker %s (pid %d), left running by an earlier server", worker_id, pid)
            except OSError:
                pass  # gone meanwhile, or not ours to signal
        path.unlink(missing_ok=True)
    return reaped
