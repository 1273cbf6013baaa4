"""Write first, then tell, against a real `gpuserve serve`: a stream and a webhook retry across a kill -9 of the
server, and a data directory on a small tmpfs that fills up while jobs run. Each test counts what was lost (0)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.support.live import serving, wait_until

KEY = "sk-durable"

STREAM_HANDLER = """import os, time
from gpuserve import serverless

def handler(job):
    run = f"{os.getpid()}-{time.monotonic_ns()}"  # one value per execution: chunks of two runs differ
    with open(os.environ["EXEC_LOG"], "a") as f:
        f.write(job["id"] + "\\n")
    for i in range(10):
        time.sleep(0.2)
        yield {"i": i, "run": run}

serverless.start({"handler": handler, "return_aggregate_stream": True})
"""

PLAIN_HANDLER = """import os, time
from gpuserve import serverless

def handler(job):
    with open(os.environ["EXEC_LOG"], "a") as f:  # outside the data dir: it never fills
        f.write(job["id"] + "\\n")
    time.sleep(job["input"].get("sleep_s", 0))
    return {"i": job["input"]["i"]}

serverless.start({"handler": handler})
"""


def _config(tmp_path: Path, handler: str, server: str = "") -> Path:
    (tmp_path / "handler.py").write_text(handler)
    log = tmp_path / "executions.log"
    log.touch()
    config = tmp_path / "endpoints.yaml"
    config.write_text(
        f"server: {{heartbeat_interval_s: 1, drain_timeout_s: 3, webhook_allowed_networks: ['127.0.0.0/8'] {server}}}\n"
        "endpoints:\n"
        f"  ep: {{handler: {tmp_path / 'handler.py'}, api_keys: [{KEY}], env: {{EXEC_LOG: '{log}'}},"
        " scaling: {min_workers: 1, max_workers: 1, idle_timeout_s: 60}}\n"
    )
    return config


def _serving(config: Path, data_dir: Path) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[str], httpx.Client]]:
    return serving(config, data_dir, KEY, timeout_s=30)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL: no drain, nothing written on the way out
    proc.wait(30)


def test_a_10_chunk_stream_across_a_kill_9_reaches_its_client_as_one_attempt_none_repeated(tmp_path: Path) -> None:
    config = _config(tmp_path, STREAM_HANDLER)
    data = tmp_path / "data"
    got: list[dict[str, Any]] = []  # what the client keeps: the current attempt's chunks
    wire: list[tuple[int, dict[str, Any]]] = []  # every chunk that came over the wire, with its attempt
    attempt = 0

    def poll(client: httpx.Client, job_id: str) -> str:
        nonlocal attempt, got
        body = client.get(f"/stream/{job_id}").json()
        if body["attempt"] > attempt:  # the job re-ran: its stream starts again
            attempt, got = body["attempt"], []
        for item in body["stream"]:
            wire.append((body["attempt"], item["output"]))
            got.append(item["output"])
        return str(body["status"])

    with _serving(config, data) as (first, client):
        job_id = client.post("/run", json={"input": {}}).json()["id"]
        wait_until(lambda: poll(client, job_id) and len(got) >= 3, 60, "three chunks before the kill")
        _kill(first)
    with _serving(config, data) as (_, client):
        wait_until(lambda: poll(client, job_id) == "COMPLETED" and poll(client, job_id) == "COMPLETED", 90, "the re-run")
        final = client.get(f"/status/{job_id}").json()
    runs = Counter(c["run"] for c in got)
    lost = 10 - len({c["i"] for c in got})
    assert lost == 0 and [c["i"] for c in got] == list(range(10)), got  # all ten, in order, none repeated
    assert len(runs) == 1, runs  # one attempt's chunks, never a mix
    assert attempt >= 2 and {a for a, _ in wire} == {1, attempt}  # the kill cut attempt 1; the client saw why
    per_attempt = Counter((a, c["i"]) for a, c in wire)
    assert max(per_attempt.values()) == 1  # within an attempt, no chunk ever came twice
    assert final["status"] == "COMPLETED" and [c["i"] for c in final["output"]] == list(range(10))
    assert final["output"] == got  # the aggregate is the run the stream showed


class _Hook(BaseHTTPRequestHandler):
    codes: ClassVar[dict[str, list[int]]] = {}  # job id -> answers to give, in order (then 200)
    got: ClassVar[list[tuple[str, int]]] = []  # (job id, the answer given)
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            queue = self.codes.get(body["id"], [])
            code = queue.pop(0) if queue else 200
            self.got.append((body["id"], code))
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_webhook_retry_due_across_a_kill_9_arrives_once_and_a_delivered_one_is_not_sent_again(tmp_path: Path) -> None:
    config = _config(tmp_path, PLAIN_HANDLER, ", webhook_attempts: 3, webhook_retry_delay_s: 3")
    data = tmp_path / "data"
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    _Hook.got = []

    def answers(job_id: str) -> list[int]:
        with _Hook.lock:
            return [code for jid, code in _Hook.got if jid == job_id]

    def pending() -> int:
        with contextlib.closing(sqlite3.connect(data / "jobs.sqlite3")) as db:
            return int(db.execute("SELECT count(*) FROM webhook_outbox").fetchone()[0])

    try:
        with _serving(config, data) as (first, client):
            delivered = client.post("/run", json={"input": {"i": 0}, "webhook": hook}).json()["id"]
            wait_until(lambda: answers(delivered) == [200], 60, "the first webhook")
            retried = client.post("/run", json={"input": {"i": 1}, "webhook": hook}).json()["id"]
            _Hook.codes[retried] = [500]
            wait_until(lambda: answers(retried) == [500], 60, "the failed first try")
            _kill(first)  # its retry is due 3 s later, when this server is gone
        assert pending() == 1
        with _serving(config, data) as (_, client):
            wait_until(lambda: pending() == 0, 60, "the outbox to empty on the new server")
            assert client.get(f"/status/{retried}").json()["status"] == "COMPLETED"
    finally:
        receiver.shutdown()
    assert answers(retried) == [500, 200]  # the retry came once, after the restart
    assert answers(delivered) == [200]  # a delivered webhook is not sent again
    lost = sum(1 for job_id in (delivered, retried) if 200 not in answers(job_id))
    assert lost == 0


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs (`mount -t tmpfs`, root): a data directory that fills up. Skips where mounting is not
    allowed, unless GPUSERVE_REQUIRE_TMPFS=1 (CI), where it fails."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        problem = f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}"
        if os.environ.get("GPUSERVE_REQUIRE_TMPFS") == "1":
            pytest.fail(f"GPUSERVE_REQUIRE_TMPFS=1 but {problem}")
        pytest.skip(problem)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):  # unbuffered: ENOSPC comes from write()
        while True:
            f.write(b"\0" * 65536)


def test_a_full_disk_makes_the_server_read_only_shows_nothing_unstored_and_loses_no_accepted_job(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    config = _config(tmp_path, PLAIN_HANDLER)
    data = small_tmpfs / "data"
    store = data / "jobs.sqlite3"
    log = tmp_path / "executions.log"
    accepted: dict[str, int] = {}  # job id -> its input i
    seen_completed: dict[str, Any] = {}  # shown COMPLETED before the restart -> the output shown
    unstored: list[str] = []  # shown COMPLETED while the file said otherwise: must stay empty

    def stored_status(job_id: str) -> str | None:
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row[0] if row else None

    def look(client: httpx.Client) -> None:
        for job_id in list(accepted):
            if job_id in seen_completed:
                continue
            r = client.get(f"/status/{job_id}")
            assert r.status_code == 200, r.text  # reads are served, full disk or not
            if r.json()["status"] == "COMPLETED":
                if stored_status(job_id) != "COMPLETED":
                    unstored.append(job_id)
                seen_completed[job_id] = r.json()["output"]

    def submit(client: httpx.Client, i: int) -> httpx.Response:
        r = client.post("/run", json={"input": {"i": i, "pad": "x" * 4096}})
        if r.status_code == 200:
            accepted[r.json()["id"]] = i
        return r

    def refused_results(client: httpx.Client) -> int:
        """job-done posts answered 503, from the server's own request counts."""
        text = httpx.get(str(client.base_url).removesuffix("/v2/ep/") + "/metrics").text
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("gpuserve_http_requests_total") and "job-done" in line and 'status="503"' in line
        )

    refusals: list[httpx.Response] = []
    with _serving(config, data) as (first, client):
        for i in range(20):
            assert submit(client, i).status_code == 200
        wait_until(lambda: look(client) or len(seen_completed) >= 5, 60, "jobs completing before the disk fills")
        # One job runs while the disk fills: its result arrives when the store cannot write it.
        slow = client.post("/run", json={"input": {"i": -2, "sleep_s": 1.5}}).json()["id"]
        accepted[slow] = -2
        wait_until(lambda: client.get(f"/status/{slow}").json()["status"] == "IN_PROGRESS", 60, "the slow job to run")
        _fill(small_tmpfs / "filler")
        for i in range(20, 2020):  # until the store cannot write: a /run refused, the server read-only
            r = submit(client, i)
            if i % 10 == 0:
                look(client)
            if r.status_code != 200:
                refusals.append(r)
                break
        assert refusals, "the disk never filled"
        refused = refusals[0]
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert "could not write" in refused.json()["error"] or "read-only" in refused.json()["error"]
        again = client.post("/run", json={"input": {"i": -1}})
        assert again.status_code == 503 and "read-only" in again.json()["error"]  # no new jobs while full
        look(client)  # reads still served
        # The slow job's result was refused (503 to its worker, which posts it again): not shown as COMPLETED.
        wait_until(lambda: refused_results(client) > 0, 30, "the slow job's result to meet the full disk")
        assert client.get(f"/status/{slow}").json()["status"] == "IN_PROGRESS" and stored_status(slow) != "COMPLETED"
        (small_tmpfs / "filler").unlink()
        # It recovers by itself: a probe write succeeds and /run answers 200 again.
        wait_until(lambda: submit(client, 5000).status_code == 200, 30, "the server to accept jobs again")
        wait_until(lambda: look(client) or len(seen_completed) == len(accepted), 60, "the jobs to finish")
        before = Counter(log.read_text().split())
        _kill(first)
    with _serving(config, data) as (_, client):
        def all_completed() -> bool:
            return all(client.get(f"/status/{j}").json()["status"] == "COMPLETED" for j in accepted)

        wait_until(all_completed, 90, "every accepted job to complete after the restart")
        outputs = {j: client.get(f"/status/{j}").json()["output"] for j in accepted}
    after = Counter(log.read_text().split())
    lost = [j for j, i in accepted.items() if outputs[j] != {"i": i}]
    assert lost == [] and unstored == []
    # What was shown COMPLETED is what a restart finds, and it never ran again.
    assert all(outputs[j] == out for j, out in seen_completed.items())
    assert all(after[j] == before[j] for j in seen_completed), "a job shown COMPLETED ran again after the restart"
