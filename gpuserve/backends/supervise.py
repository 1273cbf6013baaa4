"""The launcher every process worker runs under, so that no worker outlives the server that started it.

Run as a plain script by the server's interpreter (`python -I -S supervise.py SERVER_PID
--group|--solo LOG_PATH MAX_LOG_BYTES LOG_RATE_BYTES_S -- ARGV...`; stdlib only, since a worker's own interpreter may not have gpuserve installed). It is
the leader of the worker's new session and starts ARGV as its child, which gets
PR_SET_PDEATHSIG=SIGKILL (it dies with the launcher). Then it waits, without polling, on pidfds of
both the child and the server: when the server goes (kill -9 included) it SIGKILLs its whole
process group, the runpod SDK's own helper processes too; when the child exits it exits the same
way. SIGTERM and SIGINT are passed on to the child unless the server signals the group itself.

The worker's output goes through it to LOG_PATH: at most LOG_RATE_BYTES_S on average (the rest is
dropped and counted in the log), and past MAX_LOG_BYTES the file moves to LOG_PATH.1 (one rotation),
so a worker spinning on an error cannot fill the disk.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
POLL_FALLBACK_S = 0.5  # only where pidfds are missing (Linux before 5.3)


def _die_with_parent() -> None:
    """In the child, before exec: the kernel SIGKILLs it when the launcher's (only) thread ends."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the group kill below still covers a server that goes


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class _CappedLog:
    """The worker's output: a token bucket of `rate_bytes_s` (bursts up to a second of it), one rotation at `max_bytes`."""

    def __init__(self, path: str, max_bytes: int, rate_bytes_s: int, now_s: float) -> None:
        self.path, self.max_bytes, self.rate_bytes_s = path, max_bytes, rate_bytes_s
        self.burst_bytes = max(rate_bytes_s, 64 * 1024)
        self.tokens, self.last_s, self.dropped = float(self.burst_bytes), now_s, 0
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes, now_s: float) -> None:
        self.tokens = min(self.burst_bytes, self.tokens + (now_s - self.last_s) * self.rate_bytes_s)
        self.last_s = now_s
        if self.dropped and self.tokens >= 1:
            self._emit(f"[gpuserve: {self.dropped} bytes of output dropped, over {self.rate_bytes_s} bytes/s]\n".encode())
            self.dropped = 0
        kept = min(len(data), int(self.tokens))
        if kept:
            self._emit(data[:kept])
            self.tokens -= kept
        self.dropped += len(data) - kept

    def _emit(self, data: bytes) -> None:
        while data:
            if self.size >= self.max_bytes:
                os.close(self.fd)
                os.replace(self.path, self.path + ".1")
                self._open()
            piece = data[: self.max_bytes - self.size]
            self.size += os.write(self.fd, piece)
            data = data[len(piece) :]


def _kill_group() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the launcher is the group's leader: this ends it too


def main(argv: list[str]) -> int:
    server_pid = int(argv[0])
    group = argv[1] == "--group"
    log = _CappedLog(argv[2], int(argv[3]), int(argv[4]), time.monotonic())
    command = argv[argv.index("--") + 1 :]
    server_fd = _pidfd(server_pid)
    if os.getppid() != server_pid:  # the server went before we could watch it
        return 1
    env = dict(os.environ)
    if "GPUSERVE_PARENT_PID" in env:  # gpuserve's SDK exits when its parent goes: its parent is now this launcher
        env["GPUSERVE_PARENT_PID"] = str(os.getpid())
    out_r, out_w = os.pipe()
    child = subprocess.Popen(  # safe: no other thread yet
        command, env=env, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, preexec_fn=_die_with_parent
    )
    os.close(out_w)
    out: int | None = out_r

    def forward(signum: int, _frame: object) -> None:
        if not group:  # a group signal reached the child already
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    child_fd = _pidfd(child.pid)
    while True:
        watched = [fd for fd in (server_fd, child_fd, out) if fd is not None]
        fallback = server_fd is None or child_fd is None
        ready, _, _ = select.select(watched, [], [], POLL_FALLBACK_S if fallback else None)
        if out is not None and out in ready:
            data = os.read(out, 65536)
            if data:
                log.write(data, time.monotonic())
            else:  # every writer closed it
                os.close(out)
                out = None
        if (server_fd is not None and server_fd in ready) or (fallback and os.getppid() != server_pid):
            _kill_group()
        code = child.poll()
        if code is not None:
            break
    if out is not None:  # what the child wrote last; a helper it left holding the pipe is not waited for
        os.set_blocking(out, False)
        try:
            while data := os.read(out, 65536):
                log.write(data, time.monotonic())
        except BlockingIOError:
            pass
    if code < 0:  # killed by a signal: end the same way, so the server reads the same exit status
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
