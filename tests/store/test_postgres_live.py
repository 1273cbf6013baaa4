"""`gpuserve serve` on PostgreSQL: jobs run end to end through real worker processes, and a SIGKILL of the server
while jobs run loses none: a new server on the same database finishes every accepted job (the ones that were
running come back when their leases expire)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import psycopg

from tests.support.live import children_of, serve_process, stop_process, wait_until
from tests.support.postgres import clear

KEY = "sk-pg"
HANDLER = """import os, time
from gpuserve import serverless

def handler(job):
    inp = job["input"]
    with open(os.environ["EXEC_LOG"], "a") as f:  # one line per execution: a lost job has none
        f.write(job["id"] + "\\n")
    time.sleep(inp.get("sleep_s", 0))
    return {"i": inp["i"]}

serverless.start({"handler": handler})
"""


def _serve(tmp_path: Path) -> tuple[subprocess.Popen[str], httpx.Client]:
    proc, url = serve_process(tmp_path / "endpoints.yaml", tmp_path / "data")
    return proc, httpx.Client(base_url=f"{url}/v2/ep", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


def test_serve_on_postgres_runs_jobs_and_a_killed_server_loses_none(tmp_path, pg_database):
    clear(pg_database)
    (tmp_path / "handler.py").write_text(HANDLER)
    log = tmp_path / "executions.log"
    log.touch()
    (tmp_path / "endpoints.yaml").write_text(
        f"server: {{store: '{pg_database}', heartbeat_interval_s: 0.5, max_retries: 3, drain_timeout_s: 3}}\n"
        "endpoints:\n"
        # Workers get the endpoint's env, not the server's whole environment.
        f"  ep: {{handler: {tmp_path / 'handler.py'}, api_keys: [{KEY}], env: {{EXEC_LOG: '{log}'}},"
        " scaling: {min_workers: 2, max_workers: 2, idle_timeout_s: 60, extra_workers: 0}}\n"
    )
    first, client = _serve(tmp_path)
    try:
        # End to end: /runsync through a worker process, the result read back from the database.
        body = client.post("/runsync", json={"input": {"i": -1}}).json()
        assert body["status"] == "COMPLETED" and body["output"] == {"i": -1}, body
        ids = [client.post("/run", json={"input": {"i": i, "sleep_s": 0.2}}).json()["id"] for i in range(30)]

        def done_count() -> int:
            with psycopg.connect(pg_database) as conn:
                return conn.execute("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'").fetchone()[0]

        wait_until(lambda: done_count() >= 6, 60, "some jobs to complete before the kill")
    finally:
        first.kill()  # SIGKILL: no drain, no requeue; two jobs are mid-run
        first.wait(30)
        client.close()
    # Its workers see their parent gone and stop; any that outlive that are stopped here.
    wait_until(lambda: not children_of(first.pid), 30, "the killed server's workers to exit")
    for pid in children_of(first.pid):
        os.kill(pid, signal.SIGKILL)
    with psycopg.connect(pg_database) as conn:
        left = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    assert left.get("IN_QUEUE", 0) + left.get("IN_PROGRESS", 0) > 0, left  # the kill did cut the run short

    second, client = _serve(tmp_path)
    try:
        def all_completed() -> bool:
            return all(client.get(f"/status/{i}").json()["status"] == "COMPLETED" for i in ids)

        wait_until(all_completed, 90, "every accepted job to complete on the second server")
        outputs = sorted(client.get(f"/status/{i}").json()["output"]["i"] for i in ids)
        assert outputs == list(range(30))
    finally:
        stop_process(second, signal.SIGTERM, timeout_s=30)
        client.close()
    executions = log.read_text().split()
    assert set(ids) <= set(executions)  # each ran; a job cut by the kill ran again in its next attempt
    assert len(executions) - len(set(executions)) <= 2  # only the two that were running at the kill
