"""The entrypoint wrapper of every Docker worker: it ends the worker once its server has been unreachable for N heartbeat intervals.

Run inside the container by the image's interpreter (`python -I -S container_watchdog.py HOST PORT
INTERVAL_S INTERVALS -- ARGV...`; stdlib only, since a worker image may hold no gpuserve), mounted
read-only by the Docker backend. It starts ARGV in its own process group and, every INTERVAL_S,
opens a TCP connection to the server's HOST:PORT. After INTERVALS failures in a row it SIGKILLs the
whole group (the runpod SDK's helper processes too) and exits 70, so the container stops: the runpod
SDK never exits when its server goes away (it spins and logs, and would hold its GPU for ever).
When ARGV exits it exits the same way; SIGTERM and SIGINT (docker stop) are passed on to ARGV.
The restarted server removes the stopped containers of its namespace at start (docker_supervise.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

SERVER_LOST_EXIT = 70  # EX_SOFTWARE: not the worker's own exit code


def _reachable(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 6 or argv[4] != "--":
        print("usage: container_watchdog.py HOST PORT INTERVAL_S INTERVALS -- ARGV...", file=sys.stderr)
        return 2
    host, port, interval_s, intervals, command = argv[0], int(argv[1]), float(argv[2]), int(argv[3]), argv[5:]
    child = subprocess.Popen(command, start_new_session=True)  # its own group: one killpg ends all it starts

    def forward(sig: int, _frame: object) -> None:
        _signal_group(child.pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    misses = 0
    while True:
        deadline = time.monotonic() + interval_s
        while time.monotonic() < deadline:
            code = child.poll()
            if code is not None:
                return code if code >= 0 else 128 - code
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        misses = 0 if _reachable(host, port, min(interval_s, 5.0)) else misses + 1
        if misses >= intervals:
            print(
                f"gpuserve watchdog: the server at {host}:{port} has been unreachable for {misses} heartbeat "
                f"intervals ({misses * interval_s:g} s); ending the worker",
                file=sys.stderr,
                flush=True,
            )
            _signal_group(child.pid, signal.SIGKILL)
            child.wait()
            return SERVER_LOST_EXIT


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
