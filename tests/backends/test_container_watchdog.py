"""The container watchdog as a real process: it ends its worker after N unreachable intervals, and only then.

The Docker half (a kill -9 of a Docker-backend server with runpod-SDK containers) is in
test_docker_watchdog.py; this checks the script itself without an engine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from gpuserve.backends import container_watchdog
from tests.support.live import wait_until

SCRIPT = str(Path(container_watchdog.__file__).resolve())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_an_unreachable_server_ends_the_worker_and_its_helpers_after_the_intervals(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The worker starts a helper process (as the runpod SDK does for its heartbeat) and ignores SIGTERM.
    worker = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{helper.pid}}')\n"
        "time.sleep(120)\n"
    )
    port = _free_port()  # nothing listens: every probe fails
    started = time.monotonic()
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-S", SCRIPT, "127.0.0.1", str(port), "0.2", "5", "--", sys.executable, "-c", worker],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="the worker and its helper")
        worker_pid, helper_pid = (int(p) for p in pids.read_text().split())
        code = watchdog.wait(30)
        waited_s = time.monotonic() - started
    finally:
        if watchdog.poll() is None:
            watchdog.kill()
    assert code == container_watchdog.SERVER_LOST_EXIT
    assert waited_s >= 5 * 0.2  # not before its five intervals
    assert "unreachable for 5 heartbeat intervals" in (watchdog.stderr.read() if watchdog.stderr else "")
    wait_until(lambda: not _alive(worker_pid) and not _alive(helper_pid), timeout_s=10, what="the worker's group to end")


def test_a_reachable_server_keeps_the_worker_and_its_exit_code_is_passed_on() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        # Ten intervals of 0.1 s with one allowed miss in a row would have ended it: the server answers each probe.
        done = subprocess.run(
            [sys.executable, "-I", "-S", SCRIPT, "127.0.0.1", str(port), "0.1", "1", "--",
             sys.executable, "-c", "import time, sys; time.sleep(1.0); sys.exit(7)"],
            timeout=30,
            check=False,
        )
    assert done.returncode == 7
