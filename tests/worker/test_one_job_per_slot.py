"""One job per slot: a stopped sync handler keeps its slot until its thread returns, and past the grace its worker is replaced.

A real server, a real worker process (gpuserve's SDK, one slot). The handler appends a start and
an end record (job, pid, wall time) to a file, and at each start lists the jobs that started and
have not ended whose process is still alive: any such job ran on the slot at the same time.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.live import Live, code_deployment

GRACE_S = 4.0

HANDLER = """
import json, os, time
from gpuserve import serverless

LOG = os.environ["SLOT_LOG"]

def _alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

def _write(record):
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\\n")

def handler(job):
    records = [json.loads(line) for line in open(LOG)] if os.path.exists(LOG) else []
    ended = {r["job"] for r in records if r["event"] == "end"}
    beside = [r["job"] for r in records if r["event"] == "start" and r["job"] not in ended and _alive(r["pid"])]
    _write({"event": "start", "job": job["id"], "pid": os.getpid(), "t": time.time(), "beside": beside})
    time.sleep(job["input"]["sleep_s"])
    _write({"event": "end", "job": job["id"], "pid": os.getpid(), "t": time.time()})
    return {"pid": os.getpid()}

serverless.start({"handler": handler})
"""


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _started(path: Path, job_id: str) -> dict[str, object] | None:
    return next((r for r in _records(path) if r["event"] == "start" and r["job"] == job_id), None)


def test_a_stopped_sync_handler_keeps_its_slot_and_its_worker_is_replaced_after_the_grace(tmp_path: Path) -> None:
    log = tmp_path / "slot.jsonl"
    dep = code_deployment(
        tmp_path, "slot", HANDLER, max_workers=1, execution_timeout_s=1.0,
        env={"SLOT_LOG": str(log), "GPUSERVE_STUCK_GRACE_S": str(GRACE_S)},
    )
    with Live(tmp_path, [dep]) as live:
        # 1. Timed out after 1 s, its thread returns 2.5 s in, inside the grace: the slot is reused only then.
        slow = live.run("slot", {"sleep_s": 2.5})
        timed_out = live.wait("slot", slow, {"TIMED_OUT", "COMPLETED", "FAILED"})
        assert timed_out["status"] == "TIMED_OUT", timed_out
        quick = live.run("slot", {"sleep_s": 0})
        assert live.wait("slot", quick)["status"] == "COMPLETED"
        # 2. Cancelled while its thread sleeps a minute: past the grace the worker goes and a new one runs the next job.
        stuck = live.run("slot", {"sleep_s": 60}, policy={"executionTimeout": 120_000})
        live.until(lambda: _started(log, stuck) is not None, "the minute-long job started")
        first_worker = {w.worker_id for w in live.workers("slot")}
        assert live.http.post(f"/slot/cancel/{stuck}").status_code == 200
        after = live.run("slot", {"sleep_s": 0})
        done = live.wait("slot", after)
        assert done["status"] == "COMPLETED", done
        assert done["workerId"] not in first_worker  # the job ran on the replacement
        live.until(lambda: "replaced" in (live.status("slot", stuck).get("error") or ""), "the cancelled job's status to say so")
        cancelled = live.status("slot", stuck)
        timed_out = live.status("slot", slow)
    assert cancelled["status"] == "CANCELLED"
    assert "still running" in cancelled["error"] and first_worker.pop() in cancelled["error"], cancelled
    # The timed-out job whose thread returned inside the grace kept its worker: its error is only the timeout's.
    assert "replaced" not in (timed_out.get("error") or ""), timed_out
    records = _records(log)
    starts = [r for r in records if r["event"] == "start"]
    assert [r["job"] for r in starts] == [slow, quick, stuck, after]
    assert all(r["beside"] == [] for r in starts), starts  # never two jobs on the slot at once
    ends = {r["job"]: r for r in records if r["event"] == "end"}
    by_job = {r["job"]: r for r in starts}
    assert by_job[quick]["t"] >= ends[slow]["t"]  # type: ignore[operator]  # started after the stopped one returned
    assert by_job[quick]["pid"] == by_job[slow]["pid"]  # on the same worker, not a replacement
    assert stuck not in ends  # its thread ended with its process
    assert by_job[after]["pid"] != by_job[stuck]["pid"]
