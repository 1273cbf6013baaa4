"""Workers never outlive their server: kill -9 of `gpuserve serve` ends every runpod-SDK worker it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from gpuserve.backends.pidfiles import reap_leftovers
from gpuserve.backends.process import ProcessBackend
from gpuserve.core.types import EndpointSpec, ScaleAction
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
from tests.support.live import serve_process, wait_until

HANDLER = Path(__file__).resolve().parents[1] / "server" / "handlers" / "echo_runpod.py"
HEARTBEAT_S = 1.0
GONE_WITHIN_INTERVALS = 10  # generous on a loaded 2-core host; the launcher acts at once (pidfd)


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process on the host, from /proc."""
    found: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
            if fields[0] != "Z":
                found[int(entry)] = (int(fields[1]), int(fields[3]))
    return found


def _sessions_of_children(server_pid: int) -> set[int]:
    """Worker sessions: each worker runs in its own session, led by the launcher the server started."""
    return {pid for pid, (ppid, sid) in _processes().items() if ppid == server_pid and sid == pid}


def _in_sessions(sessions: set[int]) -> set[int]:
    return {pid for pid, (_, sid) in _processes().items() if sid in sessions}


def test_kill_9_of_the_server_ends_its_runpod_workers_and_their_helpers(tmp_path: Path) -> None:
    (tmp_path / "endpoints.yaml").write_text(
        f"server: {{heartbeat_interval_s: {HEARTBEAT_S}}}\n"
        "endpoints:\n"
        f"  echo: {{handler: {HANDLER}, sdk: runpod, scaling: {{min_workers: 2, max_workers: 2, idle_timeout_s: 60}}}}\n"
    )
    proc, _url = serve_process(tmp_path / "endpoints.yaml", tmp_path / "data")
    try:
        # Both workers up, with the SDK's own processes (its heartbeat runs in a child process).
        sessions = wait_until(lambda: len(s := _sessions_of_children(proc.pid)) == 2 and s, what="two worker launchers")
        wait_until(lambda: len(_in_sessions(sessions)) >= 4, what="the workers under their launchers")
        before = _in_sessions(sessions)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    wait_until(
        lambda: not _in_sessions(sessions),
        timeout_s=GONE_WITHIN_INTERVALS * HEARTBEAT_S,
        what=f"every process of the server's workers to end (were {sorted(before)})",
    )


def test_a_restarted_server_reaps_the_workers_a_lost_one_left_running(tmp_path: Path) -> None:
    """A backend that is gone without stopping its workers (as a server that lost its launchers would
    be): the next one on the same data dir kills them from their pidfiles, and nothing else."""
    handler = tmp_path / "stubborn.py"
    handler.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "time.sleep(120)\n"
    )
    dep = Deployment(spec=EndpointSpec("stubborn"), handler_path=str(handler))
    first = ProcessBackend("http://127.0.0.1:9/", WorkerRegistry(), logs_dir=tmp_path / "logs")
    first.configure(dep)
    first.apply(dep.spec, ScaleAction(start=1), now_s=0.0)
    [view] = first.workers("stubborn")
    leader = first.process_id(view.worker_id)
    assert leader is not None
    wait_until(lambda: len(_in_sessions({leader})) == 3, what="launcher, worker and its helper")
    # A process whose pid a pidfile names with another start time (a reused pid) is left alone.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        (tmp_path / "logs" / "reused.pid").write_text(f"{bystander.pid} 1\n")
        second = ProcessBackend("http://127.0.0.1:9/", WorkerRegistry(), logs_dir=tmp_path / "logs")
        assert second.reaped == [view.worker_id]
        wait_until(lambda: not _in_sessions({leader}), what="the left-over worker's processes to end")
        assert bystander.poll() is None and reap_leftovers(tmp_path / "logs") == []
        assert list((tmp_path / "logs").glob("*.pid")) == []
    finally:
        bystander.kill()
        bystander.wait(10)
        first.shutdown()


def test_a_zombie_launcher_is_not_reaped_or_reported(tmp_path: Path) -> None:
    """A launcher that exited but was never waited for (its server killed, an init that does not reap)
    keeps its pid and start time in /proc as a zombie; it runs nothing, so the reaper leaves it alone."""
    from gpuserve.backends.pidfiles import write_pidfile

    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    try:
        write_pidfile(tmp_path, "ep-zombie", child.pid)
        stat = Path(f"/proc/{child.pid}/stat")
        # Not waited for: once it exits it stays a zombie ("Z") until child.wait() below.
        wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", what="the child to become a zombie")
        assert reap_leftovers(tmp_path) == []
        assert list(tmp_path.glob("*.pid")) == []
    finally:
        child.wait(10)
