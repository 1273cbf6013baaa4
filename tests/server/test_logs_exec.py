"""`logs` (tail, since, follow, an endpoint's workers interleaved) and `exec` on real process workers, over HTTP and the CLI."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.support.live import ADMIN_KEY, deployment, wait_until

HANDLERS = Path(__file__).parent / "handlers"


def _printer(**spec):
    return deployment("ep", "print_gpuserve.py", **{"idle_timeout_s": 60, **spec})


def _cli(command: str, *args: str, url: str) -> list[str]:
    """The options first: after `exec WORKER --` everything is the command's."""
    return [sys.executable, "-m", "gpuserve.cli", command, "--url", url, "--api-key", ADMIN_KEY, *args]


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout_s: float = 60.0) -> bytes:
    """What `proc` printed, read until `needle` shows up (a bounded wait: select, never a blocking read)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not printed within {timeout_s} s; printed {seen[-500:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the command ended before printing {needle!r}; printed {seen[-500:]!r}"
            seen += chunk
    return seen


def test_logs_follow_prints_a_line_written_after_it_started_unwrapped(make_server):
    h = make_server([_printer(max_workers=1)], backend="process")
    worker = h.wait_status(h.submit({"input": {"line": "first"}}), {"COMPLETED"})["workerId"]
    follower = subprocess.Popen(
        _cli("logs", worker, "--follow", url=h.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "80"},
    )
    try:
        tail = _read_until(follower, b"first\n")  # the tail, before anything new
        assert b"ready " + worker.encode() + b"\n" in tail
        long_line = "x" * 300  # wider than the 80-column terminal it is told of: one line all the same
        h.wait_status(h.submit({"input": {"line": long_line}}), {"COMPLETED"})
        printed = _read_until(follower, long_line.encode() + b"\n")
        assert b"\n" + long_line.encode() + b"\n" in tail + printed  # whole, on a line of its own
    finally:
        follower.kill()
        follower.wait(10)
    r = subprocess.run(_cli("logs", worker, "--since", "10m", url=h.url), capture_output=True, timeout=60)
    assert r.returncode == 0 and b"first\n" in r.stdout and long_line.encode() + b"\n" in r.stdout
    r = subprocess.run(_cli("logs", worker, "--since", "soon", url=h.url), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--since must be a positive duration" in r.stderr and "'soon'" in r.stderr


def test_endpoint_logs_interleave_every_worker_with_its_id(make_server):
    h = make_server([_printer(min_workers=2, max_workers=2)], backend="process")
    wait_until(lambda: len({w.worker_id for w in h.workers("ep") if w.state.value == "IDLE"}) == 2, 60, "two idle workers")
    ids = sorted(w.worker_id for w in h.workers("ep"))
    body = h.admin.get("/api/endpoints/ep/logs/stream").text
    for wid in ids:
        assert f"{wid} | ready {wid}\n" in body
    assert all(" | " in line for line in body.splitlines())
    with h.admin.stream("GET", "/api/endpoints/ep/logs/stream", params={"follow": True, "tail": 1}) as stream:
        job = h.submit({"input": {"line": "after the follow began"}})
        lines = stream.iter_lines()
        for line in lines:  # bounded by the client's read timeout (60 s)
            if line.endswith(" | after the follow began"):
                break
        assert line.split(" | ")[0] == h.wait_status(job, {"COMPLETED"})["workerId"]
    assert h.admin.get("/api/endpoints/nope/logs/stream").status_code == 404


def test_exec_runs_in_the_process_workers_directory_and_environment(make_server):
    h = make_server([_printer(max_workers=1)], backend="process")
    worker = h.wait_status(h.submit({"input": {}}), {"COMPLETED"})["workerId"]
    probe = "import os; print(os.getcwd()); print(os.environ['GPUSERVE_WORKER_ID'])"
    r = h.admin.post(f"/api/workers/{worker}/exec", json={"command": [sys.executable, "-c", probe]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["exitCode"] == 0 and body["output"].splitlines() == [str(HANDLERS.resolve()), worker]
    r = subprocess.run(
        _cli("exec", worker, "--", sys.executable, "-c", "import sys; print('out'); sys.exit(3)", url=h.url),
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 3 and r.stdout == "out\n", r.stderr
    r = h.admin.post(f"/api/workers/{worker}/exec", json={"command": [sys.executable, "-c", "import time; time.sleep(30)"], "timeoutS": 0.5})
    assert r.status_code == 200 and r.json()["exitCode"] is None and r.json()["timedOut"] is True
    for bad, field in [({"command": []}, "command"), ({"command": ["ls"], "timeoutS": 0}, "timeoutS")]:
        r = h.admin.post(f"/api/workers/{worker}/exec", json=bad)
        assert r.status_code == 422 and r.json()["error"].startswith(field)
    assert h.admin.post("/api/workers/nobody/exec", json={"command": ["ls"]}).status_code == 404
