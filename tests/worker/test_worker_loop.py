"""The worker SDK as a real subprocess against a real HTTP peer speaking Runpod's worker protocol."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.support.peer import Peer
from tests.worker.conftest import TOKEN, worker_log

ECHO = """
from gpuserve import serverless

def handler(job):
    return {"echo": job["input"], "extra": job.get("extra_field")}

serverless.start({"handler": handler})
"""


def test_echo_round_trip_speaks_the_protocol(peer: Peer, spawn_worker, tmp_path: Path) -> None:
    peer.submit({"x": 1}, "job-1", extra_field="kept")
    proc = spawn_worker(ECHO)
    peer.wait_for(lambda: peer.done("job-1"))
    [done] = peer.results("job-1")
    assert done.body == {"output": {"echo": {"x": 1}, "extra": "kept"}}
    assert done.query == {"gpu": "cpu", "isStream": "false"}
    assert done.headers["authorization"] == TOKEN  # the raw token, no "Bearer"
    take = peer.of("job-take")[0]
    assert take.worker_id == "wk1" and take.query["gpu"] == "cpu" and take.query["job_in_progress"] == "0"
    peer.wait_for(lambda: len(peer.of("ping")) >= 1 and len(peer.of("job-stop")) >= 1)
    assert peer.of("ping")[0].headers["authorization"] == TOKEN
    assert proc.poll() is None  # keeps serving
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert "ready: first job-take" in worker_log(tmp_path)


CONCURRENT = """
import asyncio
from gpuserve import serverless

async def handler(job):
    await asyncio.sleep(2)
    return job["input"]

serverless.start({"handler": handler, "concurrency_modifier": lambda current: 4})
"""


def test_concurrency_uses_batch_and_single_takes_and_pings_list_jobs(peer: Peer, spawn_worker) -> None:
    proc = spawn_worker(CONCURRENT)
    peer.wait_for(lambda: len(peer.of("job-take-batch")) >= 1)  # idle with 4 free slots: a batch take
    ids = [f"c{i}" for i in range(8)]
    for i, job_id in enumerate(ids):
        peer.submit(i, job_id)
    peer.wait_for(lambda: peer.done(*ids), timeout_s=60)
    assert sorted(peer.results(j)[0].body["output"] for j in ids) == list(range(8))
    batch = peer.of("job-take-batch")
    assert all(c.query["batch_size"] in {"2", "3", "4"} for c in batch)
    assert batch[0].query["batch_size"] == "4"
    # After a batch of 4 the slots free up one job at a time: the singular take is used too.
    assert peer.of("job-take"), "expected at least one single job-take"
    listed = {j for c in peer.of("ping") for j in c.query.get("job_id", "").split(",") if j}
    assert len(listed & set(ids)) >= 4
    assert max(len(c.query.get("job_id", "").split(",")) for c in peer.of("ping")) >= 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


CPU_BOUND = """
import hashlib
from gpuserve import serverless

def handler(job):
    d = b"x"
    for _ in range(job["input"]["rounds"]):
        d = hashlib.sha256(d).digest()
    return d.hex()[:8]

serverless.start({"handler": handler})
"""


def test_cpu_bound_sync_handler_does_not_stall_heartbeats_or_stop_polls(peer: Peer, spawn_worker) -> None:
    spawn_worker(CPU_BOUND, ping_ms=100)
    peer.wait_for(lambda: len(peer.of("ping")) >= 1)
    peer.submit({"rounds": 3_000_000}, "cpu-1")  # a few seconds of pure-Python hashing
    peer.wait_for(lambda: peer.done("cpu-1"), timeout_s=120)
    during = [c for c in peer.of("ping") if "cpu-1" in c.query.get("job_id", "")]
    # Pings listing the job kept arriving while the handler held the CPU.
    assert len(during) >= 3, [c.query for c in peer.of("ping")]
    stop_polls = [c for c in peer.of("job-stop") if during[0].at_s <= c.at_s <= during[-1].at_s]
    assert len(stop_polls) >= 2


ERRORS = """
from gpuserve import serverless

def handler(job):
    kind = job["input"]
    if kind == "raise":
        raise RuntimeError("handler exploded")
    if kind == "dict":
        return {"error": {"code": 1}, "partial": True}
    if kind == "empty":
        return {}
    if kind == "none":
        return None
    return {"ok": kind}

serverless.start({"handler": handler})
"""


def test_errors_and_result_shapes_match_runpod(peer: Peer, spawn_worker) -> None:
    for kind in ("raise", "dict", "empty", "none", "fine"):
        peer.submit(kind, kind)
    spawn_worker(ERRORS)
    peer.wait_for(lambda: peer.done("raise", "dict", "empty", "none", "fine"))
    error = json.loads(peer.results("raise")[0].body["error"])
    assert error["error_type"] == "<class 'RuntimeError'>"
    assert error["error_message"] == "handler exploded"
    assert "Traceback" in error["error_traceback"] and error["worker_id"] == "wk1" and error["hostname"]
    assert peer.results("dict")[0].body == {"output": {"partial": True}, "error": {"code": 1}}
    assert peer.results("empty")[0].body == {}
    assert peer.results("none")[0].body == {"output": None}
    assert peer.results("fine")[0].body == {"output": {"ok": "fine"}}  # still serving after errors


STREAMING = """
import asyncio
from gpuserve import serverless

async def agen(job):
    for i in range(5):
        await asyncio.sleep(0.01)
        yield {"i": i}

def gen(job):
    yield "a"
    yield "b"
    raise ValueError("mid-stream")

def handler(job):
    return agen(job) if job["input"] == "async" else gen(job)

serverless.start({"handler": handler, "return_aggregate_stream": AGGREGATE})
"""


def test_streaming_posts_chunks_in_order_then_final(peer: Peer, spawn_worker) -> None:
    peer.submit("async", "s1")
    peer.submit("sync", "s2")
    spawn_worker(STREAMING.replace("AGGREGATE", "True"))
    peer.wait_for(lambda: peer.done("s1", "s2"))
    chunks = peer.of("job-stream", "s1")
    assert [c.body for c in chunks] == [{"output": {"i": i}} for i in range(5)]
    assert all(c.query["isStream"] == "false" for c in chunks)
    [final] = peer.results("s1")
    assert final.query["isStream"] == "true"
    assert final.body == {"output": [{"i": i} for i in range(5)]}
    assert final.at_s >= chunks[-1].at_s
    assert [c.body for c in peer.of("job-stream", "s2")] == [{"output": "a"}, {"output": "b"}]
    assert "mid-stream" in json.loads(peer.results("s2")[0].body["error"])["error_message"]


def test_streaming_without_aggregate_posts_empty_output(peer: Peer, spawn_worker) -> None:
    peer.submit("async", "s1")
    spawn_worker(STREAMING.replace("AGGREGATE", "False"))
    peer.wait_for(lambda: peer.done("s1"))
    assert len(peer.of("job-stream", "s1")) == 5
    assert peer.results("s1")[0].body == {"output": []}


PROGRESS = """
import asyncio
from gpuserve import serverless

def sync_handler(job):
    for pct in (25, 50, 75):
        serverless.progress_update(job, {"pct": pct})
    return "sync done"

async def async_handler(job):
    serverless.progress_update(job, {"pct": 50})
    await asyncio.sleep(0)
    return "async done"

async def dispatch(job):
    if job["input"] == "sync":
        return await asyncio.get_running_loop().run_in_executor(None, sync_handler, job)
    return await async_handler(job)

serverless.start({"handler": dispatch})
"""


def test_progress_updates_arrive_before_the_final_result(peer: Peer, spawn_worker) -> None:
    peer.submit("sync", "p1")
    peer.submit("async", "p2")
    spawn_worker(PROGRESS)
    peer.wait_for(lambda: peer.done("p1", "p2"))
    posts = peer.of("job-done", "p1")
    assert [p.body for p in posts] == [
        {"status": "IN_PROGRESS", "output": {"pct": 25}},
        {"status": "IN_PROGRESS", "output": {"pct": 50}},
        {"status": "IN_PROGRESS", "output": {"pct": 75}},
        {"output": "sync done"},
    ]
    assert [p.body for p in peer.of("job-done", "p2")] == [
        {"status": "IN_PROGRESS", "output": {"pct": 50}},
        {"output": "async done"},
    ]


CANCELLABLE = """
import asyncio, pathlib
from gpuserve import serverless

async def handler(job):
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        pathlib.Path("cancelled-" + job["id"]).write_text("seen")
        raise
    return "finished"

serverless.start({"handler": handler, "concurrency_modifier": lambda c: 2})
"""


def test_stop_signal_cancels_the_handler_and_posts_nothing(peer: Peer, spawn_worker, tmp_path: Path) -> None:
    peer.submit(None, "long-1")
    peer.submit(None, "long-2")
    proc = spawn_worker(CANCELLABLE)
    peer.wait_for(lambda: any("long-1" in c.query.get("job_id", "") for c in peer.of("ping")))
    peer.stop_job("long-1")
    peer.wait_for(lambda: (tmp_path / "cancelled-long-1").exists() or proc.poll() is not None)
    assert (tmp_path / "cancelled-long-1").read_text() == "seen"
    # The other job still runs and the worker keeps polling with a free slot.
    peer.wait_for(lambda: any(c.query.get("job_id") == "long-2" for c in peer.of("ping")))
    assert peer.of("job-done", "long-1") == []
    assert not (tmp_path / "cancelled-long-2").exists()


REFRESH_CONFIG = """
from gpuserve import serverless

def handler(job):
    return job["input"]

serverless.start({"handler": handler, "refresh_worker": True})
"""

REFRESH_RETURNED = """
from gpuserve import serverless

def handler(job):
    return {"value": job["input"], "refresh_worker": True}

serverless.start({"handler": handler})
"""


def test_refresh_worker_in_config_posts_stop_pod_and_exits_zero(peer: Peer, spawn_worker) -> None:
    peer.submit(7, "r1")
    proc = spawn_worker(REFRESH_CONFIG)
    assert proc.wait(30) == 0
    assert peer.results("r1")[0].body == {"output": 7, "stopPod": True}
    assert len(peer.queue) == 0 and len(peer.results("r1")) == 1


def test_refresh_worker_returned_posts_stop_pod_and_exits_zero(peer: Peer, spawn_worker) -> None:
    peer.submit(8, "r2")
    proc = spawn_worker(REFRESH_RETURNED)
    assert proc.wait(30) == 0
    assert peer.results("r2")[0].body == {"output": {"value": 8}, "stopPod": True}


def test_job_done_is_retried_on_5xx(peer: Peer, spawn_worker) -> None:
    peer.done_failures = 2
    peer.submit("x", "retry-1")
    spawn_worker(ECHO)
    peer.wait_for(lambda: peer.done("retry-1"))
    assert len(peer.of("job-done-refused", "retry-1")) == 2
    assert peer.results("retry-1")[0].body["output"]["echo"] == "x"


def test_take_errors_back_off_instead_of_spinning(peer: Peer, spawn_worker) -> None:
    peer.take_status = 500
    spawn_worker(ECHO)
    peer.wait_for(lambda: len(peer.of("job-take")) >= 3)
    # Back-off is 0.5, 1, 2 s...: by the time 3 takes failed, far fewer than a spinning loop's.
    first, third = peer.of("job-take")[0], peer.of("job-take")[2]
    assert third.at_s - first.at_s >= 1.0
    peer.take_status = None
    peer.submit("after", "recovered")
    peer.wait_for(lambda: peer.done("recovered"))


SLOW = """
import time
from gpuserve import serverless

def handler(job):
    time.sleep(1.0)
    return "drained"

serverless.start({"handler": handler})
"""


def test_sigterm_finishes_the_in_flight_job_then_exits(peer: Peer, spawn_worker) -> None:
    peer.submit(None, "drain-1")
    proc = spawn_worker(SLOW)
    peer.wait_for(lambda: any(c.query.get("job_id") == "drain-1" for c in peer.of("ping")))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert peer.results("drain-1")[0].body == {"output": "drained"}


def test_cold_start_phases_are_written(peer: Peer, spawn_worker, tmp_path: Path) -> None:
    import time

    record_path = tmp_path / "cold.json"
    spawn_worker(ECHO, extra_env={"GPUSERVE_COLD_START_FILE": str(record_path), "GPUSERVE_SPAWN_WALL_S": repr(time.time())})
    peer.wait_for(lambda: record_path.exists())
    record = json.loads(record_path.read_text())
    assert record["worker_id"] == "wk1"
    for key in ("spawn_to_process_s", "process_to_sdk_import_s", "sdk_import_to_start_s", "start_to_first_take_s", "spawn_to_first_take_s"):
        assert record[key] is not None and record[key] >= 0, key
    assert record["spawn_to_first_take_s"] >= record["start_to_first_take_s"]
